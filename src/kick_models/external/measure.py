"""Effective weights of a quantized model, measured rather than declared: distinct values or stored codes per
group, the bit width they need, and the zero fraction (which for symmetric integer grids is not sparsity)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

ZERO_NOTE = ("symmetric integer grids store real zeros (code at the zero point dequantizes to 0.0); "
             "this zero fraction is rounding, not sparsity")


def distinct_per_group(values: torch.Tensor, group: int | None) -> int:
    """Most distinct entries in any group of ``group`` consecutive inputs of a row ([out, in]; None: the row)."""
    rows, cols = values.shape
    group = cols if group is None or group <= 0 or cols % group else group
    grouped = values.reshape(rows * (cols // group), group)
    ordered = grouped.sort(dim=-1).values  # [groups, group]
    return int(((ordered[:, 1:] != ordered[:, :-1]).sum(-1) + 1).max())


def bits_for(distinct: int) -> int:
    """Fewest bits that can index ``distinct`` values."""
    return max(1, math.ceil(math.log2(max(distinct, 1))))


def summarize(matrices: Iterable[tuple[str, torch.Tensor, torch.Tensor | None]], group: int | None | Callable, *,
              symmetric: bool | None, what: str) -> dict[str, Any]:
    """Measured figures over (name, dequantized weight, stored integer codes or None) triples.

    ``group`` is the group size, or a function of the matrix name where the library picks it per layer.

    ``bits_effective`` counts stored codes per row where the format exposes them, else distinct
    dequantized values per group; ``zero_fraction`` is the share of dequantized weights equal to 0.
    """
    names, distinct, zeros, total, code_bits = [], 0, 0, 0, 0
    for name, weight, codes in matrices:
        names.append(name)
        distinct = max(distinct, distinct_per_group(weight.float(), group(name) if callable(group) else group))
        zeros += int((weight == 0).sum())
        total += weight.numel()
        if codes is not None:
            code_bits = max(code_bits, bits_for(distinct_per_group(codes, None)))
    if not names:
        return {"note": f"no quantized matrices found to measure ({what})"}
    out: dict[str, Any] = {
        "bits_effective": code_bits or bits_for(distinct),
        "distinct_per_group_max": distinct,
        "group": "per layer" if callable(group) else group if group is not None else "per-row",
        "zero_fraction": zeros / total,
        "matrices": len(names),
        "measured_on": what,
    }
    note = []
    if code_bits:
        note.append("bits_effective from the stored integer codes per row")
    elif isinstance(group, int) and group < 256:
        note.append(f"a group of {group} weights shows at most {group} distinct values, so bits_effective here "
                    f"cannot exceed {bits_for(group)} even for a wider grid")
    if symmetric and zeros:
        note.append(ZERO_NOTE)
    if note:
        out["note"] = "; ".join(note)
    return out


def probe_weights(model, names: Iterable[str]) -> Iterable[tuple[str, torch.Tensor, None]]:
    """The weight each named (quantized) Linear really applies: its output on the identity minus its output on 0.

    Works for any library's module (bitsandbytes, torchao tensor subclasses, HQQ, quanto) without
    reading its private layout, since every one of them still maps an input to ``x @ W_effᵀ + b``.
    """
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            module = modules[name]
            param = next(module.parameters(), None)
            width = getattr(module, "in_features", None)
            if param is None or width is None:
                continue
            dtype = getattr(module, "compute_dtype", None) or (param.dtype if param.is_floating_point() else torch.float32)
            eye = torch.eye(width, dtype=dtype, device=param.device)
            zero = torch.zeros(1, width, dtype=dtype, device=param.device)
            yield name, (module(eye) - module(zero)).float().T.contiguous().cpu(), None  # [out, in]
