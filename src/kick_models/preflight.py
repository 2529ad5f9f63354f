"""Checks of ``kick-hf`` arguments against the model's folder, config and tokenizer — everything that
can be refused without reading a single weight, so a bad run stops in seconds, not after loading."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kick_models.config import CALIB_NAMES, CompressionConfig, ConfigError

log = logging.getLogger(__name__)

_HUB_ID_ACCEPTED = "an existing local model folder or a Hugging Face Hub id (name or org/name)"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
CALIB_ACCEPTED = f"{' | '.join(CALIB_NAMES)} or a path to a UTF-8 .txt file or a .jsonl file with a 'text' field per line"


def looks_like_path(value: str) -> bool:
    """A ``pretrained`` value that can only mean a local folder: absolute, ``./``/``../``/``~``, more
    than one ``/`` (a Hub id has at most one), a backslash, or a first component that is a local folder."""
    text = value.strip()
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or "\\" in text or text.count("/") > 1:
        return True
    head = text.split("/", 1)[0]
    return "/" in text and Path(head).is_dir()


def _refuse_pretrained(pretrained: Any, problem: str) -> ConfigError:
    return ConfigError(f"kick-hf: invalid model_arg pretrained={pretrained!r}: {problem}; accepted: {_HUB_ID_ACCEPTED}")


def check_pretrained(pretrained: Any, gguf_file: str | None = None) -> None:
    """``pretrained`` names a usable model before anything loads: not empty; a path-like value an existing
    folder (no symlink loop) with a readable config and complete weight files — or, with ``gguf_file``, that
    GGUF file (it carries its own config); any other value a well-formed Hub id (``name`` or ``org/name``)."""
    if not isinstance(pretrained, str):
        return
    if not pretrained.strip():
        raise _refuse_pretrained(pretrained, "empty (leave pretrained out for the embedded model)")
    path = Path(pretrained).expanduser()
    if path.is_symlink() or looks_like_path(pretrained) or path.exists():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            raise _refuse_pretrained(pretrained, "a symlink loop") from None
        except OSError:
            pass
    if path.is_dir() and gguf_file:
        if not (path / gguf_file).is_file():
            raise ConfigError(f"kick-hf: invalid model_arg gguf_file={gguf_file!r}: no such file in {path.resolve()}; "
                              f"accepted: one of {sorted(p.name for p in path.glob('*.gguf')) or 'its .gguf files (none)'}")
        return
    if path.is_dir():
        problem = folder_problem(path)
        if problem:
            raise _refuse_pretrained(pretrained, f"{problem} ({path.resolve()})")
        return
    if looks_like_path(pretrained) or path.exists():
        what = "is a file, not a model folder" if path.exists() else "no such folder"
        raise _refuse_pretrained(pretrained, f"{what} ({path.absolute()})")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(pretrained.strip())
    except HFValidationError as err:
        raise _refuse_pretrained(pretrained, f"not a local folder, nor a Hub id ({err})") from None


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read whole (its header says how long its data is), or None."""
    import json
    import struct

    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                return f"{path.name} is truncated ({size} bytes, its header alone claims {length})"
            header = json.loads(f.read(length))
    except (struct.error, ValueError, UnicodeDecodeError):
        return f"{path.name} is not a safetensors file (unreadable header)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"{path.name} is truncated ({size} bytes of {expected})"
    return None


def folder_problem(folder: Path) -> str | None:
    """Why a local model folder cannot be loaded, read from its files alone (no weight is loaded), or None:
    empty, no or a corrupt ``config.json``, no weight files, a missing shard, a truncated safetensors file."""
    import json

    if not any(folder.iterdir()):
        return "an empty folder"
    config = folder / "config.json"
    if not config.is_file():
        return "no config.json in the folder"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return f"config.json is not valid JSON ({err})"
    if not isinstance(data, dict):
        return f"config.json holds a {type(data).__name__}, not a JSON object"
    weights = [p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES]
    if not weights:
        return f"no weight files ({' | '.join('*' + s for s in _WEIGHT_SUFFIXES)}) in the folder"
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (ValueError, UnicodeDecodeError, AttributeError):
            return f"{index.name} is not a valid shard index"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"{index.name} lists {len(missing)} missing shard(s), e.g. {missing[0]}"
    for path in weights:
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
            if problem:
                return problem
    return None


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
    if hflm_args.get("gguf_file"):  # HFLM reads the config (and tokenizer) from the GGUF file too
        kwargs["gguf_file"] = hflm_args["gguf_file"]
    return kwargs


def _model_config(pretrained: str, hflm_args: Mapping[str, Any]):
    """The model's ``AutoConfig`` (a small JSON file, read as HFLM will read it): a model whose config cannot be
    read cannot load, so that is refused here with transformers' or the Hub's reason in one line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(pretrained, **_from_pretrained_kwargs(hflm_args))
    except Exception as err:  # noqa: BLE001 — offline, gated, custom code, corrupt: all stop the load the same way
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        where = ("its config.json cannot be read" if Path(pretrained).expanduser().is_dir()
                 else "not a local folder, and no config for it can be had from the Hugging Face Hub or its cache")
        raise ConfigError(f"kick-hf: invalid model_arg pretrained={pretrained!r}: {where} ({type(err).__name__}: "
                          f"{reason}); accepted: {_HUB_ID_ACCEPTED}") from None


def matrix_widths(model_config, hflm_args: Mapping[str, Any], skip_experts: bool = False) -> dict[str, int]:
    """``in_features`` of every block matrix compression would touch (Linear, Conv1D, each expert's projections),
    by name, from a weightless (meta-device) copy of the model."""
    import torch
    from transformers import AutoModelForCausalLM

    from kick_models.compression.blocks import block_layout, find_decoder_blocks
    from kick_models.compression.engine import is_routed_expert

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            model_config, trust_remote_code=bool(hflm_args.get("trust_remote_code") or False))
    names = {id(m): n for n, m in model.named_modules()}
    return {f"{names[id(block)]}.{name}": m.in_features for block in find_decoder_blocks(model)
            for name, m in block_layout(block).matrices.items() if not (skip_experts and is_routed_expert(m))}


def _power_of_two_dividing(widths: Mapping[str, int]) -> int:
    """The largest power of two that divides every width (and is no wider than the narrowest)."""
    common = math.gcd(*widths.values())
    return common & -common


def check_group_size(config: CompressionConfig, in_features: Mapping[str, int]) -> None:
    """Quantization groups split each matrix's input columns: a group wider than a matrix's in_features cannot."""
    if not config.quantizes or config.group_size == -1 or not in_features:
        return
    name, smallest = min(in_features.items(), key=lambda kv: kv[1])
    if config.group_size > smallest:
        suggest = min(_power_of_two_dividing(in_features), smallest, 128)
        raise ConfigError(
            f"kick-hf: invalid model_arg group_size={config.group_size}: larger than the {smallest} input features "
            f"of {name} (this model's narrowest block matrix); accepted: -1 (per channel) or 1..{smallest} for this "
            f"model. The default 128 suits models at least 128 wide; choose a power of two that divides every "
            f"layer width, here group_size={suggest}, or -1")


def check_pattern(config: CompressionConfig, in_features: Mapping[str, int]) -> None:
    """N:M groups M consecutive input columns: M must divide every pruned matrix's in_features."""
    if config.pattern is None or not config.prunes or not in_features:
        return
    n, m = config.pattern
    bad = {name: width for name, width in in_features.items() if width % m}
    if bad:
        name, width = next(iter(bad.items()))
        common = math.gcd(*in_features.values())
        raise ConfigError(
            f"kick-hf: invalid model_arg pattern={n}:{m}: M={m} does not divide the {width} input features of {name} "
            f"({len(bad)} matrices); accepted: N:M with 0 < N < M and M dividing {common} (every layer width of "
            "this model), e.g. 2:4 or 4:8")


def check_calibration_memory(config: CompressionConfig, model_config, max_length: int | None,
                             total_bytes: int | None = None) -> None:
    """The calibration loop keeps every window's block input and output: nsamples x seqlen x hidden values
    twice, at least 2 bytes each. Refuse an ``nsamples`` whose activations alone exceed this machine's memory."""
    if not config.needs_calibration:
        return
    hidden = getattr(model_config.get_text_config(), "hidden_size", None)
    if not isinstance(hidden, int) or hidden <= 0:
        return
    seqlen = min(config.seqlen, max_length) if max_length else config.seqlen
    total = total_bytes if total_bytes is not None else _physical_memory()
    if not total:
        return
    need = 2 * 2 * config.nsamples * seqlen * hidden
    if need > total:
        most = max(1, total // (2 * 2 * seqlen * hidden))
        raise ConfigError(
            f"kick-hf: invalid model_arg nsamples={config.nsamples}: the calibration activations alone need about "
            f"{need / 2**30:.1f} GiB (nsamples x seqlen {seqlen} x hidden {hidden} x 2 copies x 2 bytes), more than "
            f"this machine's {total / 2**30:.1f} GiB; accepted: nsamples in 1..{most} at seqlen={seqlen} (the "
            "papers use 128)")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


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
    """Checks that need the model's config (readable at all; N:M and group_size against its matrix widths;
    calibration memory) or tokenizer (calibration file size), before its weights load."""
    model_config = _model_config(pretrained, hflm_args)
    context = hflm_args.get("max_length") or getattr(model_config.get_text_config(), "max_position_embeddings", None)
    check_calibration_memory(config, model_config, context if isinstance(context, int) else None)
    if (config.quantizes and config.group_size != -1) or (config.prunes and config.pattern is not None):
        try:
            widths = matrix_widths(model_config, hflm_args, skip_experts=config.skip_experts)
        except Exception as err:  # noqa: BLE001 — cannot be built weightless (custom code): the engine checks later
            log.debug("kick-hf: could not list %s's matrices before loading (%s)", pretrained, err)
            widths = {}
        check_pattern(config, widths)
        check_group_size(config, widths)
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


# --------------------------------------------------------------------------- HFLM's own arguments
_DTYPES_ACCEPTED = "auto | float16 | bfloat16 | float32 | float64 (or half, float, double)"


def check_hflm_args(hflm_args: Mapping[str, Any]) -> None:
    """The HFLM arguments that otherwise fail deep inside the load: dtype, device, max_length, batch_size."""
    _check_dtype(hflm_args.get("dtype"))
    check_device(hflm_args.get("device"))
    for key in ("max_length", "max_batch_size"):
        value = hflm_args.get(key)
        if value is not None and (isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1):
            raise ConfigError(f"kick-hf: invalid model_arg {key}={value!r}; accepted: a positive integer")
    batch = hflm_args.get("batch_size")
    if batch is not None and not batch_size_ok(batch):
        raise ConfigError(f"kick-hf: invalid model_arg batch_size={batch!r}; accepted: a positive integer, auto or auto:N")


def batch_size_ok(value: Any) -> bool:
    text = str(value).strip().lower()
    if isinstance(value, bool):
        return False
    if text.startswith("auto"):
        rest = text[4:]
        return rest == "" or (rest.startswith(":") and rest[1:].isdigit() and int(rest[1:]) >= 1)
    return text.isdigit() and int(text) >= 1


def _check_dtype(value: Any) -> None:
    import torch

    if value is None or isinstance(value, torch.dtype) and value.is_floating_point:
        return
    text = str(value).strip()
    found = getattr(torch, text, None) if text and text != "auto" else None
    if text == "auto" or (isinstance(found, torch.dtype) and found.is_floating_point):
        return
    raise ConfigError(f"kick-hf: invalid model_arg dtype={value!r}; accepted: {_DTYPES_ACCEPTED} "
                      "(integer dtypes hold no trained weights; to quantize use method=gptq|rtn|awq with wbits=N)")


def check_device(value: Any) -> None:
    """A device string torch knows and this machine has (cuda:N needs N < the GPUs visible)."""
    if value is None:
        return
    import torch

    text = str(value).strip().lower()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    if device is not None and device.type == "mps" and torch.backends.mps.is_available():
        return
    if device is not None and device.type == "cpu":
        return
    if device is not None and device.type == "cuda" and count and (device.index is None or device.index < count):
        return
    missing = ("this machine has no CUDA GPU" if device is not None and device.type == "cuda" and not count
               else f"this machine has {count} CUDA GPU(s)" if device is not None and device.type == "cuda"
               else "not a torch device this machine has")
    raise ConfigError(f"kick-hf: invalid model_arg device={value!r}: {missing}; accepted: {' | '.join(have)}")


# --------------------------------------------------------------------------- calibration from the Hub
# (dataset repo, the file calibration reads) for the Hub calibration sources
_HUB_CALIB = {
    "c4": ("allenai/c4", "en/c4-train.00000-of-01024.json.gz"),
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1/train-00000-of-00001.parquet"),
}


def hub_calib_problem(name: str, reachable: Callable[[], bool] | None = None) -> str | None:
    """Why Hub calibration text ``name`` cannot be had here (the Hub unreachable and the data not cached), or None."""
    from kick_common.env import hub_reachable

    if (reachable or hub_reachable)():
        return None
    repo, filename = _HUB_CALIB[name]
    try:
        import datasets
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(repo, filename, repo_type="dataset"), str):
            return None
        if (Path(datasets.config.HF_DATASETS_CACHE) / repo.replace("/", "___")).is_dir():
            return None
    except Exception as err:  # noqa: BLE001 — a cache we cannot inspect counts as not cached
        log.debug("kick-hf: could not inspect the Hugging Face caches (%s)", err)
    return f"the Hugging Face Hub is not reachable (or offline mode is set) and {repo} ({filename}) is not cached"


def check_hub_calibration(config: CompressionConfig, embedded: bool, reachable: Callable[[], bool] | None = None) -> None:
    """A config that calibrates on Hub text (c4, wikitext2; the pruners' and GPTQ's default off the embedded
    model) is refused offline unless the text is cached, before the model loads rather than after."""
    if not config.needs_calibration:
        return
    name = config.resolved_calib(embedded)
    if name not in _HUB_CALIB:
        return
    problem = hub_calib_problem(name, reachable)
    if problem:
        default = "" if config.calib is not None else f" (method={config.method}'s default)"
        raise ConfigError(f"kick-hf: invalid model_arg calib={name}{default}: {problem}; accepted offline: "
                          "calib=bundled (calibration text shipped with kick) or calib=<path to a .txt/.jsonl file>")
