"""Checks of ``kick-hf`` arguments against the model's folder, config and tokenizer — everything that
can be refused without reading a single weight, so a bad run stops in seconds, not after loading."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kick_models.config import CALIB_NAMES, CompressionConfig, ConfigError

log = logging.getLogger(__name__)

_HUB_ID_ACCEPTED = "an existing local model folder or a Hugging Face Hub id (name or org/name)"
CALIB_ACCEPTED = f"{' | '.join(CALIB_NAMES)} or a path to a UTF-8 .txt file or a .jsonl file with a 'text' field per line"


def looks_like_path(value: str) -> bool:
    """A ``pretrained`` value that can only mean a local folder: absolute, ``./``/``../``/``~``, more
    than one ``/`` (a Hub id has at most one), a backslash, or a first component that is a local folder."""
    text = value.strip()
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or "\\" in text or text.count("/") > 1:
        return True
    head = text.split("/", 1)[0]
    return "/" in text and Path(head).is_dir()


def check_pretrained(pretrained: Any) -> None:
    """A path-like ``pretrained`` must be an existing folder (else the Hub's "Repo id must be…" says nothing useful)."""
    if not isinstance(pretrained, str) or not looks_like_path(pretrained):
        return
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return
    what = "is a file, not a model folder" if path.exists() else "no such folder"
    raise ConfigError(f"kick-hf: invalid model_arg pretrained={pretrained!r}: {what} ({path.resolve()}); "
                      f"accepted: {_HUB_ID_ACCEPTED}")


def check_calib_file_text(config: CompressionConfig) -> tuple[str, Any] | None:
    """Read a ``calib=<file>`` (UTF-8, "text" fields) when this config calibrates; None otherwise."""
    if config.calib is None or config.calib in CALIB_NAMES or not config.needs_calibration:
        return None
    from kick_models.compression.calibration import CalibrationError, read_calib_file

    path = Path(config.calib).expanduser()
    if not path.is_file() or path.stat().st_size == 0:
        raise ConfigError(f"kick-hf: invalid model_arg calib={config.calib!r}: no such non-empty file; "
                          f"accepted: {CALIB_ACCEPTED}")
    try:
        return read_calib_file(config.calib)
    except CalibrationError as err:
        raise ConfigError(f"kick-hf: invalid model_arg calib={config.calib!r}: {err}") from None


# --------------------------------------------------------------------------- config and tokenizer
def _from_pretrained_kwargs(hflm_args: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {"revision": hflm_args.get("revision") or "main",
              "trust_remote_code": bool(hflm_args.get("trust_remote_code") or False)}
    if hflm_args.get("subfolder"):
        kwargs["subfolder"] = hflm_args["subfolder"]
    return kwargs


def _model_config(pretrained: str, hflm_args: Mapping[str, Any]):
    """The model's ``AutoConfig`` (a small JSON file), or None when it cannot be read here — then the
    checks that need it are left to the load, which reports its own error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(pretrained, **_from_pretrained_kwargs(hflm_args))
    except Exception as err:  # noqa: BLE001 — offline, gated, custom code: the load says it better
        log.debug("kick-hf: no config for %s before loading (%s); checks that need it wait for the load", pretrained, err)
        return None


def linear_in_features(model_config, hflm_args: Mapping[str, Any]) -> dict[str, int]:
    """``in_features`` of every Linear but the output head, from a weightless (meta-device) copy of the model."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            model_config, trust_remote_code=bool(hflm_args.get("trust_remote_code") or False))
    head = model.get_output_embeddings()
    return {name: m.in_features for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}


def check_group_size(config: CompressionConfig, in_features: Mapping[str, int]) -> None:
    """GPTQ groups split each layer's input columns: a group larger than a layer's in_features cannot."""
    if not config.quantizes or config.group_size == -1 or not in_features:
        return
    name, smallest = min(in_features.items(), key=lambda kv: kv[1])
    if config.group_size > smallest:
        raise ConfigError(
            f"kick-hf: invalid model_arg group_size={config.group_size}: larger than the {smallest} input features "
            f"of {name} (this model's narrowest Linear); accepted: -1 (per channel) or 1..{smallest} for this model")


def check_calib_size(config: CompressionConfig, source: tuple[str, Any], tokenizer, max_length: int | None) -> None:
    """A calibration file must hold at least one ``seqlen``-token window (``seqlen`` capped at the
    model's context, as calibration does); fewer than nsamples windows is only a warning."""
    from kick_models.compression.calibration import calib_file_shortfall

    seqlen = min(config.seqlen, max_length) if max_length else config.seqlen
    problem, note = calib_file_shortfall(tokenizer, source[0], source[1], config.nsamples, seqlen)
    if problem:
        raise ConfigError(f"kick-hf: invalid model_arg calib={config.calib!r}: {problem}; accepted: a file with at "
                          f"least {seqlen} tokens of text (ideally nsamples x seqlen = {config.nsamples * seqlen}), "
                          "or a smaller seqlen")
    if note:
        log.warning("kick-hf: calib=%s: %s", config.calib, note)


def check_against_model(config: CompressionConfig, pretrained: str, hflm_args: Mapping[str, Any],
                        calib_source: tuple[str, Any] | None) -> None:
    """Checks that need the model's config (group_size) or tokenizer (calibration file size), before its weights load."""
    wants_groups = config.quantizes and config.group_size != -1
    if not wants_groups and calib_source is None:
        return
    model_config = _model_config(pretrained, hflm_args)
    if model_config is None:
        return
    if wants_groups:
        try:
            in_features = linear_in_features(model_config, hflm_args)
        except Exception as err:  # noqa: BLE001 — cannot be built weightless: the load checks later
            log.debug("kick-hf: could not list %s's layers before loading (%s)", pretrained, err)
            in_features = {}
        check_group_size(config, in_features)
    if calib_source is not None:
        from lm_eval.models.utils import resolve_max_length
        from transformers import AutoTokenizer

        tokenizer_name = hflm_args.get("tokenizer") if isinstance(hflm_args.get("tokenizer"), str) else pretrained
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, **_from_pretrained_kwargs(hflm_args))
        except Exception as err:  # noqa: BLE001 — the load reports tokenizer problems itself
            log.debug("kick-hf: no tokenizer for %s before loading (%s)", tokenizer_name, err)
            return
        max_length = hflm_args.get("max_length") or resolve_max_length(model_config, tokenizer)
        check_calib_size(config, calib_source, tokenizer, int(max_length))
