"""How far a compressed model's next-token distribution moved from its dense parent's, on fixed held-out text.

Before compressing, kick-hf runs the dense model over ``FIDELITY_TOKENS`` tokens of the bundled
held-out Wikipedia articles (never used for calibration) and keeps, per position, the top
``TOP_K`` next-token log-probabilities and their token ids. After compressing it runs the same
windows again and reports the mean KL(dense ‖ compressed), the share of positions whose most
likely next token is unchanged (top-1 agreement), and the perplexity of both models.

Only the top-k is kept (``TOP_K`` × 8 bytes per position instead of the whole vocabulary) plus
the log of the probability mass outside it; that mass becomes one "rest" bucket in both
distributions. KL over that coarser partition is a lower bound of the full-vocabulary KL (log-sum
inequality). Both rest buckets are log-sum-exps over the same complement of dense's top-k, never
``1 − Σ top-k``: at a confident position that difference is float32 rounding noise, and the bound
would stop being one (docs/fidelity.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FIDELITY_TOKENS = 2048  # total tokens, cut into windows of FIDELITY_SEQLEN
FIDELITY_SEQLEN = 256
TOP_K = 256
BATCH_SIZE = 2
# what a stored reference and a measured KL are made of; a change here rebuilds cached references
# and makes kick-hf re-measure the fidelity stored with older compressed-model cache entries.
# 2: rest buckets as log-sum-exps (1: ``1 − Σ top-k`` in float32, which could overshoot the full KL)
KL_FORMAT = 2


@dataclass
class Reference:
    """The dense model's top-k next-token log-probabilities on the fidelity windows."""

    top_ids: torch.Tensor  # [P, k] int64, P = windows × (seqlen − 1) predicted positions
    top_logp: torch.Tensor  # [P, k] float32, descending
    tail_logp: torch.Tensor  # [P] float32: log of dense's probability mass outside its top-k (−inf when none)
    nll: float  # summed NLL of the actual next tokens (for perplexity)
    seconds: float


def fidelity_windows(tokenizer, tokens: int = FIDELITY_TOKENS, seqlen: int = FIDELITY_SEQLEN,
                     max_length: int | None = None) -> torch.Tensor:
    """[tokens // seqlen, seqlen] ids: the first ``tokens`` tokens of the bundled held-out articles, in order."""
    from kick_common.bundled import bundled_documents

    seqlen = min(seqlen, max_length) if max_length else seqlen
    ids: list[int] = []
    for doc in bundled_documents("heldout"):
        ids += tokenizer(doc + "\n\n", add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) >= tokens:
            break
    n = min(tokens, len(ids)) // seqlen
    if n == 0:
        raise ValueError(f"the held-out text has only {len(ids)} tokens; fewer than one window of {seqlen}")
    return torch.tensor(ids[: n * seqlen], dtype=torch.long).reshape(n, seqlen)


def _log_probs(model, windows: torch.Tensor, batch_size: int):
    """Yield (log-probs [b·(seq−1), V] float32, next-token ids [b·(seq−1)]) batch by batch."""
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        for chunk in windows.split(batch_size):
            chunk = chunk.to(device)
            logits = model(chunk, use_cache=False).logits[:, :-1].float()  # [b, seq−1, V]
            logp = torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
            yield logp, chunk[:, 1:].reshape(-1)


def tail_logp(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log Σ exp(logp) over every token NOT in ``ids``: [N, V], [N, k] → [N] (−inf when ``ids`` cover all)."""
    return logp.scatter(-1, ids, float("-inf")).logsumexp(-1)


def dense_reference(model, windows: torch.Tensor, k: int = TOP_K, batch_size: int = BATCH_SIZE) -> Reference:
    """Run the (dense) model once over ``windows`` and keep its top-k next-token log-probabilities."""
    start = time.perf_counter()
    ids, logps, tails, nll = [], [], [], 0.0
    for logp, target in _log_probs(model, windows, batch_size):
        top = torch.topk(logp, k=min(k, logp.shape[-1]), dim=-1)
        ids.append(top.indices.cpu())
        logps.append(top.values.cpu())
        tails.append(tail_logp(logp, top.indices).cpu())
        nll -= logp.gather(-1, target[:, None]).sum().item()
    return Reference(torch.cat(ids), torch.cat(logps), torch.cat(tails), nll, time.perf_counter() - start)


def _reference_sha256(reference: Reference) -> str:
    digest = hashlib.sha256(repr(reference.nll).encode())
    for tensor in (reference.top_ids, reference.top_logp, reference.tail_logp):
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def save_reference(reference: Reference, path: Path, key: str) -> None:
    """Write ``reference`` as safetensors under its ``key`` (atomically: a temp file renamed into
    place). Any write failure, a full disk included, is an OSError and leaves nothing behind."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tensors = {"top_ids": reference.top_ids.contiguous(), "top_logp": reference.top_logp.contiguous(),
               "tail_logp": reference.tail_logp.contiguous()}
    meta = {"nll": repr(reference.nll), "seconds": repr(reference.seconds), "format": str(KL_FORMAT), "key": key,
            "sha256": _reference_sha256(reference)}
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError:
        raise
    except Exception as err:  # SafetensorError: the write itself failed (full disk, file-size limit)
        raise OSError(f"the fidelity reference could not be written ({err})") from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_reference(path: Path, key: str | None = None, windows: torch.Tensor | None = None,
                   vocab_size: int | None = None) -> tuple[Reference | None, str | None]:
    """``(reference, None)`` for a reference written by :func:`save_reference` under ``key`` that fits
    ``windows``; ``(None, None)`` when there is none or it has an older format (measured again
    quietly); ``(None, why)`` when the file cannot be trusted (unreadable, another key's, altered,
    non-finite or out-of-range values)."""
    from safetensors import safe_open

    if not path.exists():
        return None, None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != str(KL_FORMAT):
                return None, None
            reference = Reference(handle.get_tensor("top_ids"), handle.get_tensor("top_logp"),
                                  handle.get_tensor("tail_logp"), float(meta["nll"]), 0.0)
    except Exception as err:  # SafetensorError derives from Exception only
        return None, f"unreadable ({type(err).__name__}: {err})"
    if key is not None and meta.get("key") != key:
        return None, "it was written for another model or text"
    if meta.get("sha256") != _reference_sha256(reference):
        return None, "its values do not match the checksum written with them"
    ids, logp, tail = reference.top_ids, reference.top_logp, reference.tail_logp
    rows = None if windows is None else windows.shape[0] * (windows.shape[1] - 1)
    if ids.dim() != 2 or ids.shape != logp.shape or tail.shape != ids.shape[:1] or (rows is not None and ids.shape[0] != rows):
        return None, f"its shape {tuple(ids.shape)} does not fit {rows} positions"
    if not (math.isfinite(reference.nll) and bool(torch.isfinite(logp).all()) and bool((logp <= 0).all())
            and not bool(tail.isnan().any()) and bool((tail <= 0).all())):
        return None, "it holds NaN, infinite or positive log-probabilities"
    if bool((ids < 0).any()) or (vocab_size is not None and bool((ids >= vocab_size).any())):
        return None, "it holds token ids outside the vocabulary"
    return reference, None


def reference_key(identity: dict, windows: torch.Tensor, k: int = TOP_K) -> str:
    """What a dense reference depends on: the base model's identity, the exact token ids, k and the format."""
    from kick_models.cache import cache_key, package_versions
    from kick_models.compression.calibration import token_sha256

    return cache_key({"model": identity, "tokens": token_sha256(windows), "shape": list(windows.shape), "k": k,
                      "format": KL_FORMAT, "versions": package_versions()})


def kl_terms(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Σ p·(log p − log q) over the last axis, in float64, with 0·log 0 = 0 and p > 0 = q giving +inf (never NaN)."""
    p_log, q_log = p_log.double(), q_log.double()
    term = p_log.exp() * (p_log - q_log)
    term = torch.where(q_log == float("-inf"), torch.full_like(term, float("inf")), term)
    return torch.where(p_log == float("-inf"), torch.zeros_like(term), term).sum(-1)


def topk_kl(ref_logp: torch.Tensor, ref_tail: torch.Tensor, cand_logp_at_ref: torch.Tensor,
            cand_tail: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) per position over the dense top-k tokens plus one bucket for the rest of the vocabulary.

    ``ref_logp`` [P, k] is dense's top-k log-probabilities and ``ref_tail`` [P] the log of its mass
    outside them; ``cand_logp_at_ref`` [P, k] and ``cand_tail`` [P] the compressed model's over the
    same k + 1 buckets (see :func:`tail_logp`). Returns [P] in nats, float64; +inf where the
    compressed model gives zero probability to a bucket dense does not. The k + 1 buckets are
    renormalised in float64 (float32 log-softmax sums to 1 only within rounding), so no position is < 0.
    """
    p_log = torch.cat([ref_logp, ref_tail[:, None]], -1).double()
    q_log = torch.cat([cand_logp_at_ref, cand_tail[:, None]], -1).double()
    return kl_terms(p_log.log_softmax(-1), q_log.log_softmax(-1))


def compare(model, reference: Reference, windows: torch.Tensor, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Mean KL(dense ‖ model), top-1 agreement and both perplexities on the reference's windows."""
    start = time.perf_counter()
    per_window = windows.shape[1] - 1
    kl_windows: list[float] = []
    top1_windows: list[float] = []
    nll, count = 0.0, 0
    for logp, target in _log_probs(model, windows, batch_size):
        rows = slice(count, count + logp.shape[0])
        ref_ids = reference.top_ids[rows].to(logp.device)
        kl = topk_kl(reference.top_logp[rows].to(logp.device), reference.tail_logp[rows].to(logp.device),
                     logp.gather(-1, ref_ids), tail_logp(logp, ref_ids))  # [b·(seq−1)]
        same = (torch.topk(logp, 1, dim=-1).indices[:, 0] == ref_ids[:, 0]).double()
        kl_windows += kl.reshape(-1, per_window).mean(-1).tolist()
        top1_windows += same.reshape(-1, per_window).mean(-1).tolist()
        nll -= logp.gather(-1, target[:, None]).sum().item()
        count += logp.shape[0]
    if count != reference.top_ids.shape[0]:
        raise ValueError(f"reference has {reference.top_ids.shape[0]} positions, these windows {count}")
    return {
        "kl_mean": sum(kl_windows) / len(kl_windows),  # equal-length windows: the mean over all positions
        "top1_agreement": sum(top1_windows) / len(top1_windows),
        "kl_windows": kl_windows,  # per window, so a report can put an interval on the means
        "top1_windows": top1_windows,
        "ppl_dense": math.exp(reference.nll / count),
        "ppl_compressed": math.exp(nll / count),
        "positions": count,
        "tokens": int(windows.numel()),
        "seqlen": int(windows.shape[1]),
        "top_k": int(reference.top_ids.shape[1]),
        "text": "bundled held-out Wikipedia articles",
        "kl_format": KL_FORMAT,
        "seconds": round(reference.seconds + time.perf_counter() - start, 3),
    }


# A cache hit re-measures one window; it must give the stored value up to these tolerances (a run with
# another thread count or batch composition moves fp32 logits in their last bits, a wrong model by far more).
RECHECK_KL_RTOL = 1e-2
RECHECK_KL_ATOL = 1e-6
RECHECK_TOP1_POSITIONS = 2


def recheck(model, reference: Reference, windows: torch.Tensor, stored: dict[str, Any]) -> dict[str, Any]:
    """Re-measure the first window's KL and top-1 agreement and compare them with ``stored`` (a
    :func:`compare` result for the same windows). Returns the measurement with ``problem``: None
    when it matches, else what differs."""
    start = time.perf_counter()
    rows = windows.shape[1] - 1
    first = Reference(reference.top_ids[:rows], reference.top_logp[:rows], reference.tail_logp[:rows],
                      reference.nll, 0.0)
    measured = compare(model, first, windows[:1], batch_size=1)
    kl, top1 = measured["kl_windows"][0], measured["top1_windows"][0]
    kl_then, top1_then = stored["kl_windows"][0], stored["top1_windows"][0]
    problem = None
    if not (math.isfinite(kl) and abs(kl - kl_then) <= RECHECK_KL_ATOL + RECHECK_KL_RTOL * abs(kl_then)):
        problem = f"first held-out window: KL {kl:.6g} now, {kl_then:.6g} when stored"
    elif abs(top1 - top1_then) * rows > RECHECK_TOP1_POSITIONS:
        problem = f"first held-out window: top-1 agreement {top1:.4f} now, {top1_then:.4f} when stored"
    return {"window": 0, "kl": kl, "top1_agreement": top1, "problem": problem,
            "seconds": round(time.perf_counter() - start, 3)}


def fits(stored: Any, windows: torch.Tensor, reference: Reference) -> bool:
    """True when ``stored`` is a :func:`compare` result over these very windows (so :func:`recheck` applies)."""
    return (isinstance(stored, dict) and stored.get("kl_format") == KL_FORMAT and stored.get("seqlen") == int(windows.shape[1])
            and stored.get("tokens") == int(windows.numel()) and stored.get("top_k") == int(reference.top_ids.shape[1])
            and isinstance(stored.get("kl_windows"), list) and len(stored["kl_windows"]) == windows.shape[0]
            and isinstance(stored.get("top1_windows"), list) and len(stored["top1_windows"]) == windows.shape[0]
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*stored["kl_windows"], *stored["top1_windows"])))
