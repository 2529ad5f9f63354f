"""Keep-masks for pruning, in one place: unstructured (per row / matrix / column tile) and N:M.

Every mask is chosen by count (k-th value, then ties by position; top-n for N:M), never by a bare
comparison with a threshold value, so ties -- common in bf16 weights -- can never prune more than asked for.
Masks are boolean with the weight's shape; ``True`` means *keep*.
"""

from __future__ import annotations

import math

import torch

GROUPS = ("row", "matrix", "tile")


def prune_count(sparsity: float, n: int) -> int:
    """⌊sparsity · n⌋, robust to float noise (0.29 · 100 is 28.999… in binary floating point)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity!r}; accepted: a number in [0, 1]")
    return min(n, math.floor(sparsity * n + 1e-9))


def _lowest_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask over the last dim of ``score`` [..., n] with exactly ``k`` lowest scores pruned per
    leading index: everything below the k-th smallest value, then ties at that value by position
    (first come, first pruned), so the count is exact and the result deterministic. O(n) selection
    (kthvalue) instead of a full sort."""
    if k <= 0:
        return torch.ones_like(score, dtype=torch.bool)
    kth = score.kthvalue(k, dim=-1, keepdim=True).values  # [..., 1]
    below = score < kth
    need = k - below.sum(-1, keepdim=True)  # how many ties at the k-th value still to prune
    ties = score == kth
    return ~(below | (ties & (ties.cumsum(-1) <= need)))


def unstructured_mask(score: torch.Tensor, sparsity: float, group: str = "row", tile: int = 128) -> torch.Tensor:
    """Prune the ⌊sparsity · size⌋ lowest scores of each comparison group of ``score`` [out, in]:
    each output row (Wanda), the whole matrix (magnitude), or each ``tile``-column slice across all
    rows (SparseGPT's adaptive mask)."""
    if score.dim() != 2:
        raise ValueError(f"score must be 2-D [out, in], got shape {tuple(score.shape)}")
    rows, cols = score.shape
    if group == "row":
        return _lowest_k_mask(score, prune_count(sparsity, cols))
    if group == "matrix":
        flat = score.reshape(1, -1)
        return _lowest_k_mask(flat, prune_count(sparsity, flat.numel())).reshape(rows, cols)
    if group == "tile":
        if tile <= 0:
            raise ValueError(f"tile={tile!r}; accepted: a positive integer")
        keep = torch.empty_like(score, dtype=torch.bool)
        for c in range(0, cols, tile):
            keep[:, c : c + tile] = unstructured_mask(score[:, c : c + tile], sparsity, "matrix")
        return keep
    raise ValueError(f"group={group!r}; accepted: {' | '.join(GROUPS)}")


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every ``m`` consecutive input columns of each row
    (2:4 keeps 2 of 4). Vectorised: [out, in] → [out, in/m, m], top-n over the last dim.

    N counts *kept* weights. The Wanda/SparseGPT reference scripts' ``prune_n`` counts pruned ones;
    for 1:2, 2:4 and 4:8 (N = M/2) both readings give the same mask."""
    if not 0 < n < m:
        raise ValueError(f"pattern {n}:{m}; accepted: N:M with 0 < N < M (keep N of every M)")
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"in_features={cols} is not a multiple of M={m}; N:M needs whole groups")
    groups = score.reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1, sorted=False).indices, True)
    return keep.reshape(rows, cols)


def keep_mask(
    score: torch.Tensor,
    *,
    sparsity: float = 0.0,
    pattern: tuple[int, int] | None = None,
    group: str = "row",
    tile: int = 128,
) -> torch.Tensor:
    """N:M mask when ``pattern`` is given, else an unstructured mask at ``sparsity``."""
    if pattern is not None:
        return nm_mask(score, *pattern)
    return unstructured_mask(score, sparsity, group, tile)
