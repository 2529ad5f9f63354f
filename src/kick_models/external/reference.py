"""The dense reference of a model that is not the one being evaluated (a checkpoint's parent, or the
unquantized model under a quantize-while-loading method): loaded once, measured, freed before the
evaluated model loads, and cached under the same key a dense ``kick-hf`` run of that model uses."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from kick_models.fidelity import Reference

log = logging.getLogger(__name__)


@dataclass
class DenseReference:
    """A dense model's top-k on the fidelity windows, with how it was obtained."""

    reference: Reference
    windows: torch.Tensor
    info: dict[str, Any]  # {"model", "cached", "seconds", "peak_rss_mib"}


def resolve_dtype(dtype: Any, model_config) -> torch.dtype:
    """The dtype HFLM would load the model in: the ``dtype`` arg, or for "auto" the checkpoint's own."""
    if dtype not in (None, "auto"):
        return dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype))
    declared = getattr(model_config, "dtype", None) or getattr(model_config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if isinstance(declared, torch.dtype) else torch.float32


def _rss_mib() -> float | None:
    """This process's peak resident memory (MiB), to state what holding two models would cost."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def dense_reference_of(path: str, name: str, *, model_config, dtype: Any, device: str, revision: str | None,
                       cache_root, max_length: int | None, trust_remote_code: bool = False) -> DenseReference:
    """Load ``path`` dense (unless its reference is cached), measure its top-k on the fidelity windows, free it."""
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_models.fidelity import dense_reference, fidelity_windows, load_reference, reference_key, save_reference

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision or "main", trust_remote_code=trust_remote_code)
    windows = fidelity_windows(tokenizer, max_length=max_length or resolve_max_length(model_config, tokenizer))
    torch_dtype = resolve_dtype(dtype, model_config)
    file = key = None
    if cache_root is not None:
        from kick_models.cache import model_identity

        commit = getattr(model_config, "_commit_hash", None) or revision
        identity = model_identity(path, commit, None, cache_root)
        identity["dtype"] = str(torch_dtype)  # as model_identity records it from a loaded model
        key = reference_key(identity, windows)
        file = cache_root / "fidelity" / f"{key}.safetensors"
        reference, problem = load_reference(file, key, windows, getattr(model_config, "vocab_size", None))
        if problem is not None:
            log.warning("kick-hf: fidelity reference %s is unusable (%s); measuring the dense model again", file, problem)
        if reference is not None:
            log.info("kick-hf: dense reference of %s loaded from the cache", name)
            return DenseReference(reference, windows, {"model": name, "cached": True,
                                                       "seconds": round(time.perf_counter() - start, 3)})
    log.info("kick-hf: loading %s dense for its reference (freed before the evaluated model loads)", name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, revision=revision or "main",
                                                 trust_remote_code=trust_remote_code).to(device).eval()
    reference = dense_reference(model, windows)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if file is not None:
        try:
            save_reference(reference, file, key)
        except OSError as err:
            log.warning("kick-hf: could not keep the fidelity reference in %s (%s); measured without caching it",
                        file, err.strerror or err)
    return DenseReference(reference, windows, {"model": name, "cached": False,
                                               "seconds": round(time.perf_counter() - start, 3),
                                               "peak_rss_mib": _rss_mib()})
