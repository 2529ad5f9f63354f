"""Wanda (Sun et al. 2023, eq. 1): score S_ij = |W_ij| · ‖X_j‖₂, compared within each output row."""

from __future__ import annotations

import torch

from .masks import keep_mask
from .method import PruneResult, apply_mask


def prune_wanda(
    W: torch.Tensor,
    col_norms: torch.Tensor,
    *,
    sparsity: float = 0.0,
    pattern: tuple[int, int] | None = None,
    group: str = "row",
) -> PruneResult:
    """Prune ⌊sparsity · in⌋ weights of each row of W [out, in] (or N:M groups) by |W|·‖X_j‖.

    ``col_norms`` [in] is ‖X_j‖₂ over the calibration tokens; any positive scale gives the same mask.
    """
    if col_norms.shape != (W.shape[1],):
        raise ValueError(f"col_norms has shape {tuple(col_norms.shape)}; expected ({W.shape[1]},)")
    score = W.float().abs() * col_norms.float().to(W.device)[None, :]  # [out, in]
    return apply_mask(W, keep_mask(score, sparsity=sparsity, pattern=pattern, group=group), score.square())
