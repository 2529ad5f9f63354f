"""Token budgets for prompts: lm-eval builds prompts before the tasks see the model, so tasks that
must fit the model's context (MMLU shot dropping, TriviaQA evidence, summarization articles) find
the tokenizer and context length here: the running model's own (the LM of the ``evaluate`` call
on the stack), else the ``tokenizer`` / ``pretrained`` / ``max_length`` task metadata (lm-eval
merges ``--model_args`` into it). With neither, prompts are not fitted and a warning says so (not for
lm-eval's format check while a task is built, before any model runs); no other model's tokenizer is
ever guessed. `chat_overhead` counts what a chat template adds."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from kick_tasks.construction import is_constructing

log = logging.getLogger(__name__)

# Config attributes HFLM consults, in its order, for the model's context length.
_CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
LM_EVAL_MAX_GEN_TOKS = 256  # what lm-eval's HF model generates when a task's generation_kwargs do not say


def _model_name(metadata: Mapping[str, Any]) -> str | None:
    """``tokenizer`` or ``pretrained`` from the metadata, or None."""
    for key in ("tokenizer", "pretrained"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def follow_running_model() -> None:
    """Called when a fitting task is built: lets `_running_lm_attr` see the model lm-eval evaluates
    (installs kick's ``evaluate`` wrapper, :func:`kick_tasks.judge.lmeval.install_evaluate_hook`)."""
    from kick_tasks.judge.lmeval import install_evaluate_hook

    install_evaluate_hook()


def _running_lm_attr(name: str):
    """``tokenizer`` / ``max_length`` of the model being evaluated, or None outside ``evaluate``."""
    from kick_tasks.judge.lmeval import current_lm

    lm = current_lm()
    if lm is None:
        return None
    try:
        return getattr(lm, name, None)
    except Exception:  # noqa: BLE001 - a lazy property that cannot load means "not provided"
        return None


def _is_hf_tokenizer(tokenizer) -> bool:
    from transformers import PreTrainedTokenizerBase

    return isinstance(tokenizer, PreTrainedTokenizerBase)


@functools.lru_cache(maxsize=1)
def _warn_unfitted() -> None:
    log.warning("kick: neither the evaluated model nor the task metadata (tokenizer=/pretrained=) "
                "gives a Hugging Face tokenizer; prompts are not fitted to the context and the "
                "model's own truncation applies")


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
    """The evaluated model's tokenizer, else the one named by ``tokenizer`` / ``pretrained`` in the
    task metadata, else None (warned once: prompts are then not fitted)."""
    running = _running_lm_attr("tokenizer")
    if running is not None and _is_hf_tokenizer(running):
        return running
    name = _model_name(metadata or {})
    if name:
        return _load_tokenizer(name)
    if not is_constructing():
        _warn_unfitted()
    return None


def metadata_max_length(metadata: Mapping[str, Any] | None) -> int | None:
    """Model context length: ``max_length`` from the metadata, else the evaluated model's, else
    the named model config's, else None."""
    metadata = metadata or {}
    value = metadata.get("max_length")
    if value is not None:
        return _positive_int("max_length", value)
    running = _running_lm_attr("max_length")
    if isinstance(running, int) and running > 0:
        return running
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


def chat_overhead(tokenizer, chat: Mapping[str, Any] | None, prompt: str) -> int:
    """Tokens the chat template adds around ``prompt`` (0 without one): lm-eval's rendering of a
    one-user-turn conversation (system instruction included), less the prompt's own tokens."""
    chat = chat or {}
    render = chat.get("chat_template") if chat.get("apply_chat_template") else None
    if not callable(render):
        return 0
    history = []
    if chat.get("system_instruction"):
        history.append({"role": "system", "content": chat["system_instruction"]})
    history.append({"role": "user", "content": prompt})
    rendered = render(history)
    return max(0, count_tokens(tokenizer, rendered) - count_tokens(tokenizer, prompt))


def count_tokens(tokenizer, text: str) -> int:
    """Tokens the model sees for ``text``, special tokens (BOS) included, so budgets err on the safe side."""
    return len(tokenizer(text)["input_ids"])
