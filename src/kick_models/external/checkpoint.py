"""Pre-compressed checkpoints (compressed-tensors, GPTQ, AWQ, AutoRound, bitsandbytes, GGUF): what they declare,
what their stored weights measure, and the checks that pair one with a dense parent before any weight loads."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from kick_models.external.measure import summarize

log = logging.getLogger(__name__)

RECIPE_FILES = ("recipe.yaml", "recipe.yml")  # llm-compressor writes its recipe beside the weights
RECIPE_CHARS = 4000
# transformers' quant_method -> (distribution that loads it, import name, what to install)
LOADERS = {
    "compressed-tensors": ("compressed-tensors", "compressed_tensors", "pip install 'kick[compressed-tensors]'"),
    "gptq": ("gptqmodel", "gptqmodel", "pip install gptqmodel"),
    "awq": ("gptqmodel", "gptqmodel", "pip install gptqmodel"),
    "auto-round": ("auto-round", "auto_round", "pip install auto-round"),
    "bitsandbytes": ("bitsandbytes", "bitsandbytes", "pip install 'kick[bnb]'"),
    "torchao": ("torchao", "torchao", "pip install 'kick[torchao]'"),
    "hqq": ("hqq", "hqq", "pip install 'kick[hqq]'"),
    "quanto": ("optimum-quanto", "optimum.quanto", "pip install 'kick[quanto]'"),
}
EXPORT_RECORD = "kick_compression.json"  # what kick-compress (kick_models.export) writes beside its exports
MEASURE_BLOCK = 0  # measured figures read the first decoder block: enough to see the grid, seconds not minutes


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- reading what a checkpoint declares
def quantization_config(model_config) -> dict[str, Any] | None:
    """The checkpoint's ``quantization_config`` as a plain dict (None for a dense model)."""
    qc = getattr(model_config, "quantization_config", None)
    if qc is None:
        return None
    return dict(qc) if isinstance(qc, Mapping) else qc.to_dict()


def _declared_ct(qc: Mapping[str, Any]) -> dict[str, Any]:
    groups = qc.get("config_groups") or {}
    weights = next((g.get("weights") for g in groups.values() if isinstance(g, Mapping) and g.get("weights")), None) or {}
    sparsity = qc.get("sparsity_config") or {}
    out = {"bits": weights.get("num_bits"), "group_size": weights.get("group_size"), "symmetric": weights.get("symmetric"),
           "strategy": weights.get("strategy"), "type": weights.get("type"), "ignore": qc.get("ignore")}
    if sparsity:
        out["sparsity"] = {k: sparsity.get(k) for k in ("format", "sparsity_structure", "global_sparsity") if k in sparsity}
    return out


def _producer(qc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(library, version) that wrote a GPTQ/AWQ-style checkpoint, from its ``meta.quantizer`` ("gptqmodel:7.6.0")."""
    meta = qc.get("meta") or {}
    quantizer = meta.get("quantizer") if isinstance(meta, Mapping) else None
    first = quantizer[0] if isinstance(quantizer, list) and quantizer else quantizer
    if isinstance(first, str) and ":" in first:
        name, version = first.split(":", 1)
        return name, version
    if qc.get("autoround_version"):
        return "auto-round", str(qc["autoround_version"])
    return None, None


def declared_from_config(qc: Mapping[str, Any]) -> tuple[str | None, str | None, str | None, dict[str, Any]]:
    """(library, version, format, declared settings) read from a ``quantization_config``."""
    method = str(qc.get("quant_method", "unknown"))
    if method == "compressed-tensors":
        return "compressed-tensors", qc.get("version"), f"compressed-tensors:{qc.get('format')}", _declared_ct(qc)
    if method == "bitsandbytes":
        four = bool(qc.get("load_in_4bit"))
        fmt = f"bitsandbytes-{qc.get('bnb_4bit_quant_type', 'nf4')}" if four else "bitsandbytes-llm.int8"
        return "bitsandbytes", None, fmt, {"bits": 4 if four else 8, "group_size": 64 if four else "per-row",
                                           "symmetric": True}
    library, version = _producer(qc)
    bits = qc.get("bits", qc.get("w_bit", qc.get("num_bits")))
    group = qc.get("group_size", qc.get("q_group_size"))
    sym = qc.get("sym", (not qc["zero_point"]) if "zero_point" in qc else None)
    declared = {"bits": bits, "group_size": group, "symmetric": sym}
    for key in ("desc_act", "act_order", "checkpoint_format", "version"):
        if key in qc:
            declared[key] = qc[key]
    return library or method, version, method, declared


def _recipe(folder: Path) -> str | None:
    for name in RECIPE_FILES:
        path = folder / name
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace")[:RECIPE_CHARS]
    return None


def gguf_declared(path: Path) -> tuple[str, dict[str, Any]]:
    """(format "gguf:TYPE" of the most common 2-D tensor type, declared settings) from a GGUF file's header."""
    from collections import Counter

    import gguf

    reader = gguf.GGUFReader(str(path))
    types = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)
    main = types.most_common(1)[0][0] if types else "unknown"
    field = reader.get_field("general.quantization_version")
    members = gguf.GGMLQuantizationType.__members__
    block = gguf.GGML_QUANT_SIZES.get(members[main], (None,))[0] if main in members else None
    return f"gguf:{main}", {"tensor_types": dict(types), "group_size": block,
                            "bits": _GGUF_BITS.get(main), "symmetric": main in ("Q4_0", "Q8_0", "Q5_0"),
                            "quantization_version": field.contents() if field is not None else None}


_GGUF_BITS = {"Q4_0": 4, "Q4_1": 4, "Q5_0": 5, "Q5_1": 5, "Q8_0": 8, "Q2_K": 2, "Q3_K": 3, "Q4_K": 4, "Q5_K": 5,
              "Q6_K": 6, "F16": 16, "BF16": 16, "F32": 32}


def kick_export_record(folder: Path | None) -> Mapping[str, Any] | None:
    """The record ``kick-compress`` leaves beside its exports (what kick did, with which settings), or None."""
    path = folder / EXPORT_RECORD if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("kick-hf: unreadable %s (%s); the checkpoint is described by its own config only", path, err)
        return None
    return record if isinstance(record, Mapping) else None


def _kick_export_source(pretrained: str, record: Mapping[str, Any], qc: Mapping[str, Any] | None) -> dict[str, Any]:
    """A kick-compress export: kick made it, whatever packer wrote the file. The GPTQ export names gptqmodel as its
    ``meta.quantizer`` (gptqmodel's packer wrote the bits, and gptqmodel refuses the file otherwise), which alone
    would credit kick's GPTQ to gptqmodel."""
    summary = record.get("summary") if isinstance(record.get("summary"), Mapping) else {}
    made = summary.get("source") if isinstance(summary.get("source"), Mapping) else {}
    fmt = str(record.get("format") or "export")
    declared = dict(made.get("declared") or {})
    if qc is not None:
        library, version, packing, settings = declared_from_config(qc)
        declared["packing"] = {"format": packing, "by": " ".join(str(p) for p in (library, version) if p), **settings}
        for key in ("bits", "group_size", "symmetric"):
            declared.setdefault(key, settings.get(key))
    declared.update(kick_model_args=record.get("kick_model_args"), source_model=record.get("source_model"))
    what = made.get("label") or summary.get("method") or "export"
    return {"kind": "checkpoint", "label": f"kick {what} ({fmt})", "library": "kick", "version": made.get("version"),
            "format": f"kick:{fmt}", "checkpoint": pretrained, "declared": declared, "measured": None}


def checkpoint_source(pretrained: str, folder: Path | None, model_config, gguf_file: str | None) -> dict[str, Any] | None:
    """``config.kick["source"]`` for a pre-compressed checkpoint, or None when it declares no compression."""
    if gguf_file:
        path = (folder / gguf_file) if folder is not None else Path(gguf_file)
        fmt, declared = gguf_declared(path) if path.is_file() else ("gguf", {})
        label = f"GGUF {fmt.split(':', 1)[1]}" if ":" in fmt else "GGUF"
        return {"kind": "checkpoint", "label": label, "library": "gguf", "version": _version("gguf"), "format": fmt,
                "checkpoint": f"{pretrained}/{gguf_file}", "declared": declared, "measured": None}
    qc = quantization_config(model_config) if model_config is not None else None
    record = kick_export_record(folder)
    if record is not None:
        return _kick_export_source(pretrained, record, qc)
    if qc is None:
        return None
    library, version, fmt, declared = declared_from_config(qc)
    recipe = _recipe(folder) if folder is not None else None
    if recipe is not None:
        declared["recipe"] = recipe
    bits = declared.get("bits")
    group = declared.get("group_size")
    producer = "llm-compressor" if recipe else library
    label = f"{producer} {fmt.split(':')[-1]} W{bits}" + (f" g{group}" if isinstance(group, int) else "")
    return {"kind": "checkpoint", "label": label, "library": library, "version": version, "format": fmt,
            "checkpoint": pretrained, "declared": declared, "measured": None}


def needed_loader(source: Mapping[str, Any] | None, qc_method: str | None) -> str | None:
    """The refusal when the library that loads this checkpoint is not installed (None when it is)."""
    if qc_method is None or qc_method not in LOADERS:
        return None
    dist, module, hint = LOADERS[qc_method]
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (f"kick-hf: invalid model_arg pretrained={source.get('checkpoint') if source else '?'!r}: its quantization "
            f"({qc_method}) needs {dist}, which is not installed; accepted: install it with {hint}")


# --------------------------------------------------------------------------- measured effective weights
def _ct_matrices(folder: Path, declared: Mapping[str, Any]):
    """Dequantized weights and stored codes of compressed-tensors pack-quantized Linear layers in block 0."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors import safe_open

    bits = declared.get("bits")
    prefix = f".layers.{MEASURE_BLOCK}."
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            keys = set(handle.keys())
            for key in sorted(k for k in keys if k.endswith(".weight_packed") and prefix in k):
                base = key[: -len(".weight_packed")]
                shape = torch.Size(handle.get_tensor(f"{base}.weight_shape").tolist())
                codes = unpack_from_int32(handle.get_tensor(key), bits, shape).to(torch.int32)  # [out, in], signed
                scale = handle.get_tensor(f"{base}.weight_scale").float()  # [out, in/group]
                zero = handle.get_tensor(f"{base}.weight_zero_point").float() if f"{base}.weight_zero_point" in keys else 0.0
                per = shape[1] // scale.shape[1]
                weight = (codes.float() - (zero.repeat_interleave(per, 1) if torch.is_tensor(zero) else zero)) \
                    * scale.repeat_interleave(per, 1)
                yield base, weight, codes


_GGUF_CODES = {"Q4_0": (2, 4), "Q4_1": (4, 4), "Q8_0": (2, 8)}  # type -> (header bytes per block, bits per code)


def _gguf_matrices(path: Path):
    """Dequantized weights (and codes for Q4_0/Q4_1/Q8_0) of block 0's 2-D GGUF tensors, via the gguf package."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    for tensor in reader.tensors:
        if not tensor.name.startswith(f"blk.{MEASURE_BLOCK}.") or len(tensor.shape) != 2:
            continue
        kind = tensor.tensor_type
        weight = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(tensor.data, kind))).float()
        codes = None
        if kind.name in _GGUF_CODES:
            header, bits = _GGUF_CODES[kind.name]
            block_bytes = gguf.GGML_QUANT_SIZES[kind][1]
            raw = np.asarray(tensor.data).reshape(weight.shape[0], -1, block_bytes)[..., header:]
            if bits == 4:
                raw = np.concatenate([raw & 0x0F, raw >> 4], axis=-1)
            else:
                raw = raw.view(np.int8)
            codes = torch.from_numpy(raw.reshape(weight.shape[0], -1).astype(np.int32))
        yield tensor.name, weight, codes


def measure_checkpoint(source: Mapping[str, Any], folder: Path | None, gguf_file: str | None) -> dict[str, Any]:
    """Measured figures of the stored weights, or a note saying why this format is not read here."""
    declared = source.get("declared") or {}
    fmt = str(source.get("format") or "")
    try:
        if gguf_file and folder is not None:
            return summarize(_gguf_matrices(folder / gguf_file), declared.get("group_size"),
                             symmetric=declared.get("symmetric"), what=f"GGUF tensors of block {MEASURE_BLOCK}")
        if fmt == "compressed-tensors:pack-quantized" and folder is not None:
            return summarize(_ct_matrices(folder, declared), declared.get("group_size"),
                             symmetric=declared.get("symmetric"), what=f"packed Linear weights of block {MEASURE_BLOCK}")
    except (ImportError, OSError, KeyError, ValueError, RuntimeError) as err:
        log.warning("kick-hf: could not measure the stored weights of %s: %s", source.get("checkpoint"), err)
        return {"note": f"stored weights unreadable here: {err}"}
    return {"note": f"stored weights of format {fmt or 'unknown'} are not read by kick; declared figures only"}


# --------------------------------------------------------------------------- pairing with a parent
def same_vocabulary(checkpoint_tok, parent_tok) -> str | None:
    """Why two tokenizers cannot be paired (KL needs the same token ids), or None when they can."""
    a, b = checkpoint_tok.get_vocab(), parent_tok.get_vocab()
    if a == b:
        return None
    only_a = sorted(set(a) - set(b))[:3]
    moved = sum(1 for token, i in a.items() if b.get(token, i) != i)
    return (f"the tokenizers differ ({len(a)} vs {len(b)} tokens; {moved} shared tokens have other ids"
            + (f"; e.g. {only_a} only in the checkpoint" if only_a else "") + ")")
