"""RIA (Zhang et al., ICLR 2024, "Plug-and-Play: An Efficient Post-training Pruning Method for LLMs",
eq. 3-4): relative importance × activation, S_ij = (|W_ij|/Σ_k|W_kj| + |W_ij|/Σ_k|W_ik|) · ‖X_j‖₂^a."""

from __future__ import annotations

import torch

from .masks import keep_mask, nm_mask
from .method import PruneResult, apply_mask


def ria_score(W: torch.Tensor, col_norms: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """S [out, in]: |W| relative to its input column's and its output row's total |W|, times ‖X_j‖^a."""
    A = W.float().abs()  # [out, in]
    tiny = torch.finfo(torch.float32).tiny  # an all-zero row/column scores 0, not NaN
    relative = A / A.sum(0, keepdim=True).clamp_min(tiny) + A / A.sum(1, keepdim=True).clamp_min(tiny)
    return relative * col_norms.float().to(W.device)[None, :].pow(alpha)


def reallocate_channels(score: torch.Tensor, m: int) -> torch.Tensor:
    """RIA's heuristic channel reallocation for N:M: sort input columns by total score and deal
    them out so every M-group gets one column of each importance band (odd bands ascending, even
    bands descending). Returns the permutation ``perm`` [in]: position p of the permuted matrix
    holds column ``perm[p]``."""
    cols = score.shape[1]
    order = score.sum(0).argsort(stable=True)  # least important column first
    perm = torch.empty_like(order)
    band = cols // m
    for i in range(m):
        chunk = order[i * band : (i + 1) * band]
        perm[i::m] = chunk if i % 2 == 0 else chunk.flip(0)
    return perm


def prune_ria(
    W: torch.Tensor,
    col_norms: torch.Tensor,
    *,
    sparsity: float = 0.0,
    pattern: tuple[int, int] | None = None,
    alpha: float = 0.5,
    group: str = "matrix",
    permute: bool = False,
) -> PruneResult:
    """Prune W [out, in] by the RIA score: ⌊s · size⌋ per ``group`` (RIA's default: the whole
    matrix), or keep N of every M. ``permute`` (N:M only): choose the N:M groups on RIA's
    reallocated column order (kept only if it retains more total score than the plain order);
    the mask is then N:M in that order, ``mask[:, perm]``, which a 2:4 kernel needs the input
    features permuted for. The loss is the summed score of what was pruned."""
    if col_norms.shape != (W.shape[1],):
        raise ValueError(f"col_norms has shape {tuple(col_norms.shape)}; expected ({W.shape[1]},)")
    score = ria_score(W, col_norms, alpha)
    if pattern is None or not permute:
        return apply_mask(W, keep_mask(score, sparsity=sparsity, pattern=pattern, group=group), score)
    n, m = pattern
    keep = nm_mask(score, n, m)
    perm = reallocate_channels(score, m)
    keep_perm = torch.empty_like(keep)
    keep_perm[:, perm] = nm_mask(score[:, perm], n, m)
    if (score * keep_perm).sum() > (score * keep).sum():
        keep = keep_perm
    return apply_mask(W, keep, score)
