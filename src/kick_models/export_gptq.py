"""Optional export of GPTQ results as a packed GPTQ checkpoint (the layout vLLM and transformers load),
packed by gptqmodel's own packer so the bit layout is theirs, not a copy of it."""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping

import torch

from kick_models.compression.quant import QuantGrid, QuantResult

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install kick[gptq-export]"


def _packer():
    """gptqmodel's pure-torch GPTQ layer and its v2 -> v1 zero-point conversion, imported lazily."""
    try:
        from gptqmodel.nn_modules.qlinear.torch import TorchLinear
        from gptqmodel.utils.model import convert_gptq_v2_to_v1_format_module
    except ImportError as exc:
        raise ImportError(f"packed GPTQ export needs the optional gptqmodel package (>= 7.6): {INSTALL_HINT}") from exc
    return TorchLinear, convert_gptq_v2_to_v1_format_module


def check_packer() -> None:
    """Raise the install hint now (before a model loads) when gptqmodel is missing."""
    _packer()


def pack_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, result: QuantResult | QuantGrid, *, bits: int, group_size: int,
    sym: bool,
) -> dict[str, torch.Tensor]:
    """Packed tensors of one Linear in GPTQ v1 layout: qweight [in·bits/32, out] int32,
    qzeros [n_groups, out·bits/32] int32, scales [n_groups, out] fp16, g_idx [in] int32 (+ bias fp16).

    ``weight`` is the fake-quantized weight as written into the model; the packer re-derives the
    integer codes from it and ``result``'s scales and zeros (a QuantResult or just its grid).
    """
    TorchLinear, to_v1 = _packer()
    out_features, in_features = weight.shape
    if in_features % 32 or out_features % 32:
        raise ValueError(f"GPTQ packing needs in and out features divisible by 32; got {tuple(weight.shape)}")
    layer = TorchLinear(
        bits=bits,
        group_size=group_size if group_size != -1 else in_features,
        sym=sym,
        desc_act=False,  # kick's act-order groups are static and contiguous: g_idx needs no reordering
        in_features=in_features,
        out_features=out_features,
        bias=bias is not None,
        register_buffers=True,
    )
    linear = torch.nn.Linear(in_features, out_features, bias=bias is not None)
    linear.weight.data = weight.detach().float().cpu()
    if bias is not None:
        linear.bias.data = bias.detach().float().cpu()
    layer.pack_original(linear, result.scales.float().cpu(), result.zeros.float().cpu(), result.g_idx.int().cpu())
    to_v1(layer, SimpleNamespace(bits=bits, pack_dtype=torch.int32))  # reads only these two
    tensors = {k: layer.state_dict()[k].contiguous() for k in ("qweight", "qzeros", "scales", "g_idx")}
    if bias is not None:
        tensors["bias"] = bias.detach().to(torch.float16).cpu()
    return tensors


def save_gptq_checkpoint(
    model,
    results: Mapping[str, QuantResult | QuantGrid],
    out_dir: str | Path,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    tokenizer=None,
) -> Path:
    """Write ``model`` to ``out_dir`` with each Linear named in ``results`` (module name -> its
    QuantResult or QuantGrid, weights already written back) replaced by packed GPTQ tensors; everything else fp16.

    The config carries ``quantization_config`` (``quant_method: gptq``, ``checkpoint_format: gptq``).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    for name, result in results.items():
        linear = modules[name]
        state.pop(f"{name}.weight")
        state.pop(f"{name}.bias", None)
        packed = pack_linear(linear.weight, linear.bias, result, bits=bits, group_size=group_size, sym=sym)
        state.update({f"{name}.{k}": v for k, v in packed.items()})
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["torch_dtype"] = "float16"
    config["quantization_config"] = {
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "desc_act": False,
        # gptqmodel refuses asymmetric v1 checkpoints unless its own (>= 0.9) packer produced them; it did
        "meta": {"quantizer": [f"gptqmodel:{version('gptqmodel')}"]},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    log.info("wrote packed GPTQ checkpoint with %d quantized Linear layers to %s", len(results), out)
    return out
