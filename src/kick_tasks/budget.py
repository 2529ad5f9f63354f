"""Token budgets for prompts: lm-eval builds prompts before it knows the model, so tasks that must
fit the model's context (MMLU shot dropping, TriviaQA evidence truncation) find the tokenizer and
context length here, from the task metadata (lm-eval merges ``--model_args`` into it)."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any

from kick_common.paths import embedded_model_dir

log = logging.getLogger(__name__)

# Config attributes HFLM consults, in its order, for the model's context length.
_CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
LM_EVAL_MAX_GEN_TOKS = 256  # what lm-eval's HF model generates when a task's generation_kwargs do not say


def _model_name(metadata: Mapping[str, Any]) -> str | None:
    """``tokenizer`` or ``pretrained`` from the metadata; with neither, kick-hf's embedded default
    model (``--model kick-hf`` without ``pretrained``) once it has been converted.

    The conversion belongs to ``kick_models`` and happens when kick-hf loads the model, which lm-eval
    does before it builds any prompt; the tasks only look for the converted folder.
    """
    for key in ("tokenizer", "pretrained"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    try:
        folder = embedded_model_dir()
    except importlib.metadata.PackageNotFoundError:
        return None
    if (folder / "config.json").is_file():
        return str(folder)
    log.info("kick: no tokenizer in the task metadata and the embedded model is not converted yet; prompts are not fitted")
    return None


@functools.lru_cache(maxsize=4)
def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - any load failure means "no budget", reported once
        log.warning("kick: cannot load tokenizer %r to fit prompts to the context (%s); prompts are not fitted", name, err)
        return None


@functools.lru_cache(maxsize=4)
def _config_context_length(name: str) -> int | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except Exception:  # noqa: BLE001 - a missing config only means "unknown length"
        return None
    config = getattr(config, "text_config", None) or config
    for attr in _CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def metadata_tokenizer(metadata: Mapping[str, Any] | None):
    """The tokenizer named by ``tokenizer`` or ``pretrained`` in the task metadata, or None."""
    name = _model_name(metadata or {})
    return _load_tokenizer(name) if name else None


def metadata_max_length(metadata: Mapping[str, Any] | None) -> int | None:
    """Model context length: ``max_length`` from the metadata, else the model config's, else None."""
    metadata = metadata or {}
    value = metadata.get("max_length")
    if value is not None:
        return _positive_int("max_length", value)
    name = _model_name(metadata)
    return _config_context_length(name) if name else None


def max_gen_toks(task_config: Any, default: int = LM_EVAL_MAX_GEN_TOKS) -> int:
    """New tokens a generate_until task must leave room for: ``max_gen_toks`` of its
    ``generation_kwargs`` as lm-eval resolved them (the YAML's, updated by ``--gen_kwargs``, which
    ``simple_evaluate`` merges into the task config before any prompt is built); lm-eval's model
    default when the task does not say."""
    value = (getattr(task_config, "generation_kwargs", None) or {}).get("max_gen_toks", default)
    return _positive_int("max_gen_toks", value)


def _positive_int(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return number


def count_tokens(tokenizer, text: str) -> int:
    """Tokens the model sees for ``text``, special tokens (BOS) included, so budgets err on the safe side."""
    return len(tokenizer(text)["input_ids"])
