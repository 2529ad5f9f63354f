"""kick-hf's own model_args besides the compression settings (cache, fidelity, bookkeeping, generation), declared as
:class:`Param` like a method's: one reader, one refusal shape, and the generated model-args page reads them here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kick_common.args import ArgsError, as_bool, as_number
from kick_models.compression.method import Param
from kick_models.config import ConfigError

# ``floor``: marks a run that re-does another under other numerics to measure the noise floor (kick-sweep's
# noise_floor option sets it); the results record it and kick-report keeps such runs apart
FLOOR_ROLES = ("dense", "recompressed")
FLOOR_ACCEPTED = "dense (with method=none) | recompressed (with a compression method)"


def _as_given(value: Any) -> Any:
    """A folder is checked where it is used (the cache says why it cannot be written), and kept as written."""
    return value


def _stripped(value: Any) -> str:
    return str(value).strip()


def _lock_seconds(value: Any) -> float:
    seconds = as_number(value)
    if seconds is None or not (seconds >= 0 or seconds == -1):
        raise ValueError(value)
    return seconds


def _label(value: Any) -> str:
    """A row name; lm-eval may hand ``8`` over as a number, and an empty name names nothing."""
    if value is None or isinstance(value, bool) or not str(value).strip():
        raise ValueError(value)
    return str(value).strip()


def _batching_mode(value: Any) -> str:
    """``auto`` (on for CUDA, off on CPU), ``true`` or ``false``; lm-eval hands ``true`` over as a bool."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return "true" if as_bool(value) else "false"
    except ArgsError:
        raise ValueError(value) from None


KICK_OPTIONS = (
    Param("cache_dir", str, None, "compressed-model cache folder", accepts="path", read=_as_given),
    Param("no_cache", bool, False, "compress afresh and store nothing"),
    Param("keep_grids", bool, False, "keep GPTQ scales/zeros on the model for a packed export (no cache)"),
    Param("fidelity", bool, True, "measure KL(dense ‖ compressed) and top-1 agreement on held-out text"),
    Param("cache_lock_timeout", float, None, "how long to wait for another process compressing the same model and "
          "settings", accepts="seconds >= 0, or -1 to wait forever", read=_lock_seconds),
    Param("floor", str, None, "marks a noise-floor re-run (kick-sweep's `noise_floor` sets it); the report keeps such "
          "runs apart", choices=FLOOR_ROLES, accepts=FLOOR_ACCEPTED),
    Param("parent", str, None, "judge `pretrained` (a pre-compressed checkpoint, evaluated as it is) against this dense "
          "parent: KL, and results recorded under the parent's name (docs/external-models.md)",
          accepts="a dense model's folder or Hub id, or embedded", read=_stripped),
    Param("continuous_batching", str, "auto", "answer generation requests by continuous batching instead of lm-eval's "
          "padded batches (greedy, same answers; see gpu.md)", accepts="auto | true | false", read=_batching_mode),
    Param("label", str, None, "the report's row name for a model kick did not compress (with `parent=`, a load-time "
          "method or a compressed checkpoint; default: what its format declares); kick-sweep passes each `external` "
          "entry's label", accepts="a short non-empty name, e.g. label=gguf-q4_0", read=_label),
)
KICK_KEYS = tuple(p.name for p in KICK_OPTIONS)
_OPTIONS = {p.name: p for p in KICK_OPTIONS}


def read_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """kick-hf's own options among ``given``, each as its type, or the refusal naming key, value and what is accepted.
    Rules between an option and the compression (floor vs method, keep_grids vs quantizing) are the caller's."""
    out = {}
    for key, value in given.items():
        if key not in _OPTIONS:
            continue
        try:
            out[key] = _OPTIONS[key].convert(value)
        except ValueError:
            raise ConfigError(f"kick-hf: invalid model_arg {key}={value!r}; accepted: {_OPTIONS[key].accepted()}") from None
    return out
