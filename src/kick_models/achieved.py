"""What compression actually did, measured on the weights against what was asked, so a method (or a plug-in,
or a cache entry) that changed nothing is never recorded as compression without a word.

Built-in pruners hit their target exactly (exact-count masks; OWL keeps the average), so a gap beyond
:data:`SPARSITY_TOLERANCE` means the method did something else. A quantizer leaves at most 2**wbits values
per group (one more where pruning zeroed weights); more means the weights were not quantized. Both are
measured on the weights the model holds — compressed now or loaded from the cache — never read from a record.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

SPARSITY_TOLERANCE = 0.05  # absolute: exact-count masks, OWL's per-block spread averages out
ROWS_CHECKED = 4  # rows of each matrix whose groups are counted (levels are a per-group property)


def compressed_sparsity(summary: Mapping[str, Any]) -> float | None:
    """Zero fraction over the matrices the engine compressed (the accounting's ``compressed *`` buckets)."""
    rows = [r for k, r in ((summary.get("matrices") or {}).get("by_kind") or {}).items() if k.startswith("compressed")]
    params = sum(r["params"] for r in rows)
    return sum(r["zeros"] for r in rows) / params if params else None


def sparsity_warning(config, summary: Mapping[str, Any]) -> str | None:
    """A warning when the compressed matrices' sparsity is far from the target (or nothing was compressed)."""
    if not config.prunes:
        return None
    achieved = compressed_sparsity(summary)
    target = config.target_sparsity
    if achieved is None:
        return (f"method={config.method} was asked for sparsity {target:g} but compressed no matrix; "
                "the model is dense")
    short = achieved < target - SPARSITY_TOLERANCE
    over = achieved > target + SPARSITY_TOLERANCE and not config.quantizes  # rounding to the grid adds zeros
    if short or over:
        return (f"method={config.method}: achieved sparsity {achieved:.4f} over the compressed matrices, target "
                f"{target:g} (tolerance {SPARSITY_TOLERANCE}); the results are not those of the setting recorded")
    return None


def most_levels(weight: torch.Tensor, group_size: int) -> int:
    """The most distinct values in one quantization group of the first rows of ``weight`` [out, in]."""
    rows = weight[:ROWS_CHECKED].detach().float()
    width = rows.shape[1]
    size = width if group_size <= 0 else min(group_size, width)
    return max(int(torch.unique(rows[r, s:s + size]).numel()) for r in range(rows.shape[0])
               for s in range(0, width - size + 1, size))


def measured_levels(config, model: nn.Module) -> dict[str, Any] | None:
    """The most distinct values in one quantization group over the first decoder block's matrices, with the
    bits they need: ``{"levels", "bits", "matrix", "group"}``. Only groups wider than the grid allows count
    (a narrower one holds few values whatever was done to it); None when not quantizing or none is that wide."""
    if not config.quantizes:
        return None
    from kick_models.compression.blocks import block_layout, find_decoder_blocks
    from kick_models.compression.engine import is_routed_expert
    from kick_models.compression.offload import onloaded
    from kick_models.external.measure import bits_for

    allowed = 2 ** config.wbits + (1 if config.prunes else 0)
    found: dict[str, Any] | None = None
    block = find_decoder_blocks(model)[0]
    with onloaded(block, write_back=False):
        for name, matrix in block_layout(block).matrices.items():
            if config.skip_experts and is_routed_expert(matrix):
                continue
            weight = matrix.view()
            size = weight.shape[1] if config.group_size <= 0 else min(config.group_size, weight.shape[1])
            if size <= allowed:
                continue
            levels = most_levels(weight, config.group_size)
            if found is None or levels > found["levels"]:
                found = {"levels": levels, "bits": bits_for(levels), "matrix": name, "group": size}
    return found


def bits_warning(config, measured: Mapping[str, Any] | None) -> str | None:
    """A warning when :func:`measured_levels` found more values per group than ``wbits`` allows (one more
    where pruning zeroed weights)."""
    allowed = 2 ** config.wbits + (1 if config.prunes else 0)
    if measured is None or measured["levels"] <= allowed:
        return None
    return (f"method={config.method} wbits={config.wbits}: {measured['matrix']} of the first block holds "
            f"{measured['levels']} distinct values in one group of {measured['group']}, more than the {allowed} a "
            f"{config.wbits}-bit grid allows; the weights were not quantized as recorded")
