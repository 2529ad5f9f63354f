"""Continuous batching for kick-hf's ``generate_until``: transformers' paged-attention scheduler in place of
lm-eval's padded batches, with lm-eval's prompt encoding, stop sequences and ``max_gen_toks``, greedy only.

lm-eval pads a batch to its longest prompt and decodes until every row has stopped; a continuous batch admits a
new request as soon as one finishes and never pads. The answers are meant to be lm-eval's own: each prompt is
encoded and left-truncated by lm-eval's ``tok_batch_encode``, the model's generation config (EOS) is kept, at most
``max_gen_toks`` tokens are generated, and the text is cut at the first stop sequence by lm-eval's own
``postprocess_generated_text``. A request whose text already holds a stop sequence is cancelled, as lm-eval stops
a row once its stop criterion fires; kick's ``FIRST_LINE`` marker ends a request where its first line closes,
as kick-hf's own stop does in lm-eval's path. Anything this path cannot reproduce (sampling, extra generation kwargs,
offloaded or multi-device models, mixed-precision autocast, seq2seq, thinking tokens, an attention
implementation the scheduler cannot page) falls back to lm-eval's path with one info line.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kick_common.stops import FIRST_LINE, first_line_done

log = logging.getLogger(__name__)

MODES = ("auto", "true", "false")
# Generation kwargs (after lm-eval's normalisation) this path reproduces; any other key falls back.
HANDLED_GEN_KWARGS = frozenset({"until", "max_gen_toks", "do_sample", "temperature"})
# The scheduler pages these attention implementations ("eager" runs as "paged|eager").
PAGED_ATTENTION = ("sdpa", "eager", "paged|eager")
# On a CPU the cache is sized for the workload, never from free RAM (transformers' default would take 90%
# of it, and every step's attention mask grows with the cache): room for this many requests at once.
CPU_CONCURRENT_REQUESTS = 16
CPU_MAX_BATCH_TOKENS = 2048
PAGE_SIZE = 256
# Tokens decoded from the end of a running request to look for a stop sequence (lm-eval's criterion also
# decodes only a tail); the final text is always decoded in full and cut by lm-eval's own function.
STOP_TAIL_EXTRA_TOKENS = 4


def wanted(mode: str, device: Any) -> bool:
    """Whether to try continuous batching. ``auto``: on CUDA devices only; on a CPU it was not reliably faster
    than lm-eval's batches, one at a time or padded (docs/benchmarks/generation.md)."""
    if mode == "auto":
        return str(device).startswith("cuda")
    return mode == "true"


@dataclass(frozen=True)
class Group:
    """Requests that share one set of generation kwargs, as lm-eval groups them."""

    indices: list[int]
    until: list[str]
    max_gen_toks: int


def model_reason(lm: Any) -> str | None:
    """Why this loaded model cannot run under the scheduler, or None."""
    model = lm.model
    if getattr(lm, "backend", "causal") != "causal":
        return "the model is seq2seq"
    if not callable(getattr(model, "init_continuous_batching", None)):
        return f"{type(model).__name__} has no continuous batching"
    if any(p.device.type == "meta" for p in model.parameters()):
        return "some weights are offloaded (device_map with cpu/disk entries)"
    if len({str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()}) > 1:
        return "the model is spread over several devices"
    if getattr(lm, "mixed_precision_dtype", None) is not None:
        return "mixed-precision autocast is on"
    if getattr(lm, "think_end_token", None) is not None:
        return "think_end_token is set"
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    if attn not in PAGED_ATTENTION and "flash" not in attn:
        return f"attention implementation {attn!r} cannot be paged"
    return None


def plan_groups(lm: Any, requests: Sequence[Any]) -> list[Group] | str:
    """Group the requests by generation kwargs, lm-eval's normalisation applied; a reason string if one
    group asks for something this path does not reproduce (sampling, extra kwargs)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    eos = lm.tok_decode(lm.eot_token_id, skip_special_tokens=False)
    groups: dict[str, tuple[list[int], dict]] = {}
    for i, request in enumerate(requests):
        _, gen_kwargs = request.args
        groups.setdefault(repr(sorted(gen_kwargs.items())), ([], gen_kwargs))[0].append(i)
    out = []
    for indices, gen_kwargs in groups.values():
        kwargs = normalize_gen_kwargs(gen_kwargs, lm.max_gen_toks)
        extra = sorted(set(kwargs) - HANDLED_GEN_KWARGS)
        if extra:
            return f"generation kwargs {extra} are not reproduced"
        if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) > 0:
            return "sampling is requested (only greedy decoding is reproduced)"
        out.append(Group(indices, handle_stop_sequences(kwargs.get("until"), eos=eos), int(kwargs["max_gen_toks"])))
    return out


def encode(lm: Any, context: str, max_gen_toks: int) -> list[int]:
    """lm-eval's encoding of one prompt (special tokens, left truncation to leave room for the answer)."""
    ids, _ = lm.tok_batch_encode([context], left_truncate_len=lm.max_length - max_gen_toks, truncation=lm.truncation)
    return ids[0].tolist()


def batching_config(model: Any, prompts: list[list[int]], max_new: int):
    """The scheduler's settings: the model's own attention kept (no switch to flash, so greedy answers stay
    lm-eval's); on a CPU a cache sized for the workload."""
    from transformers.generation import ContinuousBatchingConfig

    if model.device.type != "cpu":
        return ContinuousBatchingConfig(auto_switch_to_flash=False)
    pages = sorted((math.ceil((len(p) + max_new) / PAGE_SIZE) + 1 for p in prompts), reverse=True)
    return ContinuousBatchingConfig(auto_switch_to_flash=False, page_size=PAGE_SIZE,
                                    num_blocks=sum(pages[:CPU_CONCURRENT_REQUESTS]),
                                    max_batch_tokens=CPU_MAX_BATCH_TOKENS,
                                    max_requests_per_batch=CPU_CONCURRENT_REQUESTS)


def has_stop(tokenizer: Any, tokens: list[int], until: list[str], tail: int) -> bool:
    text = tokenizer.decode(tokens[-tail:], skip_special_tokens=False)
    return any(stop and stop in text for stop in until)


def first_line_length(tokenizer: Any, tokens: list[int], start: int) -> int | None:
    """The fewest tokens (at least ``start``) whose text holds a complete first line, as kick-hf's
    ``FIRST_LINE`` stop ends a sequence in lm-eval's path; None while the line is still open."""
    for k in range(max(start, 1), len(tokens) + 1):
        if first_line_done(tokenizer.decode(tokens[:k], skip_special_tokens=True)):
            return k
    return None


def run_group(lm: Any, prompts: list[list[int]], group: Group) -> list[list[int]]:
    """Generate every prompt of one group; each request is cancelled once a stop sequence shows."""
    model, tokenizer = lm.model, lm.tokenizer
    config = copy.deepcopy(model.generation_config)  # its EOS and penalties, as lm-eval's model.generate uses them
    config.do_sample, config.max_new_tokens = False, group.max_gen_toks
    config.temperature = config.top_p = config.top_k = None
    first_line = FIRST_LINE in group.until
    stops = [s for s in group.until if s and s != FIRST_LINE]
    tail = max((len(tokenizer.encode(s, add_special_tokens=False)) for s in stops), default=0) + STOP_TAIL_EXTRA_TOKENS
    tokens: list[list[int] | None] = [None] * len(prompts)
    checked = [0] * len(prompts)  # tokens already known not to close the first line
    with model.continuous_batching_context_manager(
        generation_config=config, continuous_batching_config=batching_config(model, prompts, group.max_gen_toks),
        block=True, warmup=model.device.type == "cuda",
    ) as manager:
        ids = {manager.add_request(input_ids=p, request_id=f"kick-{i}", max_new_tokens=group.max_gen_toks,
                                   streaming=bool(stops) or first_line): i for i, p in enumerate(prompts)}
        pending = set(ids)
        while pending:
            out = manager.get_result(timeout=1)
            if out is None:
                if not manager.is_running():
                    raise RuntimeError("the continuous batching loop stopped before every request finished")
                continue
            if out.request_id not in pending:
                continue  # a streamed step of a request already cancelled
            if out.error is not None:
                raise RuntimeError(f"continuous batching request failed: {out.error}")
            i, generated = ids[out.request_id], list(out.generated_tokens)
            line = first_line_length(tokenizer, generated, checked[i] + 1) if first_line else None
            checked[i] = len(generated)
            stopped = line is not None or (not out.is_finished() and has_stop(tokenizer, generated, stops, tail))
            if out.is_finished() or stopped:
                tokens[i] = generated[:line] if line is not None else generated
                pending.discard(out.request_id)
                if not out.is_finished():
                    manager.cancel_request(out.request_id)
    return tokens  # type: ignore[return-value]


def generate_until(lm: Any, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str] | None:
    """Answers to lm-eval ``generate_until`` requests, in their order; None (after one info line) where
    this path cannot reproduce lm-eval's, so the caller runs lm-eval's own."""
    from lm_eval.models.utils import postprocess_generated_text
    from tqdm import tqdm

    reason = model_reason(lm)
    groups = plan_groups(lm, requests) if reason is None else reason
    if isinstance(groups, str):
        log.info("kick-hf: continuous batching off for these requests (%s); generating with lm-eval's batches", groups)
        return None
    start, answers, new_tokens = time.perf_counter(), [""] * len(requests), 0
    with tqdm(total=len(requests), disable=disable_tqdm or lm.rank != 0, desc="Generating (continuous batching)") as bar:
        for group in groups:
            contexts = [requests[i].args[0] for i in group.indices]
            tokens = run_group(lm, [encode(lm, c, group.max_gen_toks) for c in contexts], group)
            for i, toks in zip(group.indices, tokens, strict=True):
                answers[i] = postprocess_generated_text(lm.tok_decode(toks), stop=group.until, think_end_token=None)
                lm.cache_hook.add_partial("generate_until", requests[i].args, answers[i])
                new_tokens += len(toks)
            bar.update(len(group.indices))
    seconds = time.perf_counter() - start
    log.info("kick-hf: %d answers by continuous batching, %d new tokens in %.1fs (%.1f tokens/s)",
             len(requests), new_tokens, seconds, new_tokens / max(seconds, 1e-9))
    return answers
