"""Magnitude pruning: drop the weights with the smallest |W|, one threshold per matrix (or N:M)."""

from __future__ import annotations

import torch

from .masks import keep_mask
from .method import PruneResult, apply_mask  # noqa: F401 -- plug-ins import PruneResult and apply_mask from here


def prune_magnitude(
    W: torch.Tensor, *, sparsity: float = 0.0, pattern: tuple[int, int] | None = None, group: str = "matrix"
) -> PruneResult:
    """Keep the largest |W_ij| of each group (default: the whole matrix, as in LLM-KICK)."""
    score = W.float().square()  # same order as |W|, and the pruned sum is Σ w²
    return apply_mask(W, keep_mask(score, sparsity=sparsity, pattern=pattern, group=group), score)
