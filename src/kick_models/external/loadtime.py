"""Load-time quantizers from other libraries (bitsandbytes, torchao, HQQ, quanto) as registry methods.

Each is built from its library's own API — a ``quantization_config`` for ``from_pretrained`` where that
is the library's supported path (bitsandbytes), otherwise the library's quantize call on the loaded
model — and nothing of the quantization is re-implemented here. Their weights are not cached: the
quantized state is the library's own tensor subclass or module, applied in seconds at each load.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from kick_models.compression.method import Method, Param

KIND = "load-time"


@dataclass(frozen=True)
class LoadTime:
    """How a load-time method reaches its library, and what it declares about its result.

    ``at_load(config, dtype)`` returns a transformers ``quantization_config`` (the model is
    quantized while it loads); ``after_load(model, config, head)`` quantizes a loaded model in
    place, leaving the output head ``head`` dense. Exactly one of them is set. ``group(config)``
    is the group of input columns that shares one scale (None: per output row); a group size
    must divide every quantized layer's input width. ``devices`` are the device types it runs on.
    """

    library: str  # distribution name: its version is recorded, the pip hint names it
    module: str  # import name, to tell whether it is installed without importing it
    extra: str  # kick's optional dependency group
    fmt: Callable[[Any], str]
    label: Callable[[Any], str]
    group: Callable[[Any], int | None]
    devices: tuple[str, ...]
    at_load: Callable[[Any, Any], Any] | None = None
    after_load: Callable[[Any, Any, Any], None] | None = None
    symmetric: Callable[[Any], bool | None] = lambda config: None
    divides: bool = True  # False: the library's blocks run over the flattened weight, any width works

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a parent package missing, or the module blocked
            return False

    def version(self) -> str | None:
        try:
            return metadata.version(self.library)
        except metadata.PackageNotFoundError:
            return None

    def declared(self, config) -> dict[str, Any]:
        group = self.group(config)
        return {"bits": config.wbits, "group_size": group if group is not None else "per-row",
                "symmetric": self.symmetric(config), "head": "dense", "params": dict(config.params)}


def _linear_filter(head):
    """torchao's module filter: every Linear but the output head (kick's methods leave it dense too)."""
    from torch import nn

    return lambda module, fqn: isinstance(module, nn.Linear) and module is not head


# ------------------------------------------------------------------ bitsandbytes (LLM.int8, NF4/FP4)
def _bnb8_config(config, dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.params["bnb_threshold"])


def _bnb4_config(config, dtype):
    from transformers import BitsAndBytesConfig

    p = config.params
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=p["quant_type"], bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=p["bnb_double_quant"])


BNB_BLOCKSIZE = 64  # bitsandbytes' fixed 4-bit block (one absmax scale per 64 weights)


# ------------------------------------------------------------------ torchao (int8 weight-only; intx int4)
def _torchao_apply(model, config, head) -> None:
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    if config.wbits == 8:
        spec = Int8WeightOnlyConfig()
    else:
        granularity = PerAxis(0) if config.group_size == -1 else PerGroup(config.group_size)
        spec = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{config.wbits}"), granularity=granularity)
    quantize_(model, spec, filter_fn=_linear_filter(head))


def _torchao_label(config) -> str:
    if config.wbits == 8:
        return "torchao int8 weight-only"
    return f"torchao intx int{config.wbits} weight-only " + ("per-row" if config.group_size == -1 else f"g{config.group_size}")


# ------------------------------------------------------------------ HQQ (its own API: transformers 5's HqqConfig path is broken)
def _hqq_apply(model, config, head) -> None:
    from hqq.core.quantize import BaseQuantizeConfig
    from hqq.models.hf.base import AutoHQQHFModel

    param = next(model.parameters())
    AutoHQQHFModel.quantize_model(model, quant_config=BaseQuantizeConfig(nbits=config.wbits, group_size=config.group_size),
                                  compute_dtype=param.dtype, device=str(param.device))


# ------------------------------------------------------------------ quanto
def _quanto_apply(model, config, head) -> None:
    from optimum.quanto import freeze, qint2, qint4, qint8, quantize

    names = [name for name, module in model.named_modules() if module is head]
    quantize(model, weights={8: qint8, 4: qint4, 2: qint2}[config.wbits], exclude=names or None)
    freeze(model)


QUANTO_MAX_GROUP = 128  # quanto's int2/int4 group: the largest multiple of 32 up to 128 that divides the layer


LOAD_TIME = {
    "bnb8": LoadTime(
        library="bitsandbytes", module="bitsandbytes", extra="bnb", at_load=_bnb8_config,
        fmt=lambda c: "bitsandbytes-llm.int8", label=lambda c: "bitsandbytes LLM.int8",
        group=lambda c: None, symmetric=lambda c: True, devices=("cpu", "cuda", "xpu")),
    "bnb4": LoadTime(
        library="bitsandbytes", module="bitsandbytes", extra="bnb", at_load=_bnb4_config,
        fmt=lambda c: f"bitsandbytes-{c.params['quant_type']}",
        label=lambda c: f"bitsandbytes {c.params['quant_type'].upper()}" + (" dq" if c.params["bnb_double_quant"] else ""),
        group=lambda c: BNB_BLOCKSIZE, symmetric=lambda c: True, devices=("cpu", "cuda", "xpu"), divides=False),
    "torchao": LoadTime(
        library="torchao", module="torchao", extra="torchao", after_load=_torchao_apply,
        fmt=lambda c: "torchao-int8-weight-only" if c.wbits == 8 else f"torchao-intx-int{c.wbits}",
        label=_torchao_label, group=lambda c: None if c.wbits == 8 or c.group_size == -1 else c.group_size,
        symmetric=lambda c: True, devices=("cpu", "cuda")),
    "hqq": LoadTime(
        library="hqq", module="hqq", extra="hqq", after_load=_hqq_apply,
        fmt=lambda c: f"hqq-{c.wbits}bit", label=lambda c: f"HQQ {c.wbits}-bit g{c.group_size}",
        group=lambda c: c.group_size, symmetric=lambda c: False, devices=("cpu", "cuda")),
    "quanto": LoadTime(
        library="optimum-quanto", module="optimum.quanto", extra="quanto", after_load=_quanto_apply,
        fmt=lambda c: f"quanto-qint{c.wbits}", label=lambda c: f"quanto qint{c.wbits}",
        group=lambda c: None, symmetric=lambda c: c.wbits == 8, devices=("cpu", "cuda", "mps")),
}
# wbits each method accepts (kick's own range is 2, 3, 4, 8, 16)
BITS = {"bnb8": (8,), "bnb4": (4,), "torchao": (8, 4, 2), "hqq": (8, 4, 3, 2), "quanto": (8, 4, 2)}


def _check(name: str):
    """Static checks (no model needed): the bit widths and group sizes the library accepts."""
    def check(config):
        if config.wbits not in BITS[name]:
            return "wbits", config.wbits, f"{' | '.join(map(str, BITS[name]))} with method={name}"
        if name == "hqq" and config.group_size == -1:
            return "group_size", -1, "a positive group size dividing every layer's input width with method=hqq (e.g. 64)"
        return None
    return check


def _method(name: str, summary: str, params: tuple = (), default_wbits: int = 8, uses: frozenset = frozenset({"wbits"}),
            default_group_size: int | None = None) -> Method:
    return Method(name=name, kind=KIND, summary=summary, version="1", params=params, uses=uses,
                  default_wbits=default_wbits, default_group_size=default_group_size, check=_check(name),
                  load_time=LOAD_TIME[name])


LOAD_TIME_METHODS = (
    _method("bnb8", "bitsandbytes LLM.int8() (8-bit weights, outlier columns in 16-bit), applied at load",
            (Param("bnb_threshold", float, 6.0, "LLM.int8 outlier threshold (0: no outlier decomposition)", low=0.0),)),
    _method("bnb4", "bitsandbytes 4-bit (NF4 or FP4, blocks of 64), applied at load",
            (Param("quant_type", str, "nf4", "4-bit data type", choices=("nf4", "fp4")),
             Param("bnb_double_quant", bool, False, "quantize the block scales too")), default_wbits=4),
    _method("torchao", "torchao weight-only: int8 per row (wbits=8) or intx int4/int2 per group, after load",
            uses=frozenset({"wbits", "group_size"}), default_group_size=64),
    _method("hqq", "HQQ half-quadratic quantization (calibration-free) per group, after load",
            default_wbits=4, uses=frozenset({"wbits", "group_size"}), default_group_size=64),
    _method("quanto", "optimum-quanto weight-only qint8/qint4/qint2, after load"),
)


# ------------------------------------------------------------------ checks that need the model's shape or device
def missing_library(name: str, spec: LoadTime) -> str | None:
    """The refusal for a method whose library is not installed (None when it is)."""
    if spec.installed():
        return None
    return (f"kick-hf: invalid model_arg method={name}: it needs {spec.library}, which is not installed; "
            f"accepted: install it with pip install 'kick[{spec.extra}]' (or pip install {spec.library}), "
            f"or another method")


def shape_refusal(name: str, config, in_features: Mapping[str, int]) -> str | None:
    """A group size that does not divide some quantized layer's input width, refused with what would."""
    group = LOAD_TIME[name].group(config)
    if group is None or not in_features or not LOAD_TIME[name].divides:
        return None
    width = math.gcd(*in_features.values())
    bad = {layer: n for layer, n in in_features.items() if n % group}
    if not bad:
        return None
    layer, n = next(iter(bad.items()))
    fits = [g for g in range(8, width + 1) if width % g == 0]
    key, value = "group_size", config.group_size
    return (f"kick-hf: invalid model_arg {key}={value!r}: groups of {group} do not divide the {n} input features of "
            f"{layer}; accepted for this model with method={name}: {', '.join(map(str, fits)) or 'none'}"
            + (" or -1 (per row)" if name == "torchao" else ""))


def device_refusal(name: str, device: str) -> str | None:
    spec = LOAD_TIME[name]
    kind = str(device).split(":")[0]
    if kind in spec.devices:
        return None
    return (f"kick-hf: invalid model_arg device={device!r}: {spec.library} ({name}) does not run there; "
            f"accepted with method={name}: {' | '.join(spec.devices)}")


def source(name: str, config) -> dict[str, Any]:
    """``config.kick["source"]`` for a load-time run (``measured`` is added once the model is quantized)."""
    spec = LOAD_TIME[name]
    return {"kind": KIND, "label": spec.label(config), "library": spec.library, "version": spec.version(),
            "format": spec.fmt(config), "checkpoint": None, "declared": spec.declared(config), "measured": None}
