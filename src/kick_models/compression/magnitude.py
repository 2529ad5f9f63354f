"""Magnitude pruning: drop the weights with the smallest |W|, one threshold per matrix (or N:M)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import keep_mask


@dataclass
class PruneResult:
    """New weight (input's dtype/shape), its keep-mask (True = kept) and the method's own error
    estimate: magnitude Σ w², Wanda Σ (w·‖X_j‖)², SparseGPT the OBS loss Σ w²/[H⁻¹]_jj."""

    weight: torch.Tensor
    mask: torch.Tensor
    loss: float


def apply_mask(W: torch.Tensor, keep: torch.Tensor, score: torch.Tensor) -> PruneResult:
    """Zero the pruned entries of a copy of W; loss is the summed score of what was pruned."""
    loss = score.masked_fill(keep, 0).sum().item()
    return PruneResult(W.masked_fill(~keep, 0), keep, loss)


def prune_magnitude(
    W: torch.Tensor, *, sparsity: float = 0.0, pattern: tuple[int, int] | None = None, group: str = "matrix"
) -> PruneResult:
    """Keep the largest |W_ij| of each group (default: the whole matrix, as in LLM-KICK)."""
    score = W.float().square()  # same order as |W|, and the pruned sum is Σ w²
    return apply_mask(W, keep_mask(score, sparsity=sparsity, pattern=pattern, group=group), score)
