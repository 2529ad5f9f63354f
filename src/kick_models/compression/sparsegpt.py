"""SparseGPT (Frantar & Alistarh 2023, Alg. 1): prune column by column and let the remaining
weights absorb the error through the inverse Hessian, with lazy batch updates."""

from __future__ import annotations

from typing import Sequence

import torch

from .linalg import dead_columns, inverse_cholesky_upper
from .masks import keep_mask
from .method import PruneResult


def prune_sparsegpt(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    sparsity: float = 0.0,
    pattern: tuple[int, int] | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
    row_groups: Sequence[int] | None = None,
) -> PruneResult:
    """Prune W [out, in] given H = 2XᵀX/n [in, in]; returns the updated weight and the OBS loss.

    With U the upper Cholesky factor of (H + λI)⁻¹ (λ = damp · mean diag H), column j is pruned or
    kept, and its error e = (w_j - q_j) / U_jj is pushed onto later columns: W[:, j:] -= e U[j, j:].
    Unstructured: the mask of each ``blocksize``-column tile is chosen when the sweep enters it, on
    w²/U_jj² over the whole tile (⌊s · out · tile⌋ pruned). N:M: each group of M columns is chosen
    when the sweep reaches it, on the error-updated weights. ``row_groups`` (row counts summing to
    out) lets several matrices that share H (q/k/v) run as one sweep while each keeps its own
    per-tile comparison.
    """
    rows, cols = W.shape
    if H.shape != (cols, cols):
        raise ValueError(f"H has shape {tuple(H.shape)}; expected ({cols}, {cols}) for W {tuple(W.shape)}")
    if pattern is not None and blocksize % pattern[1]:
        raise ValueError(f"blocksize={blocksize} must be a multiple of M={pattern[1]} for pattern {pattern}")
    segments = list(row_groups) if row_groups is not None else [rows]
    if sum(segments) != rows:
        raise ValueError(f"row_groups {segments} do not sum to out_features={rows}")
    keep = torch.ones(rows, cols, dtype=torch.bool, device=W.device)
    if pattern is None and sparsity <= 0:
        return PruneResult(W.clone(), keep, 0.0)

    Wf = W.float().clone()  # [out, in]
    Wf[:, dead_columns(H)] = 0
    U = inverse_cholesky_upper(H, damp)  # (H + λI)⁻¹ = UᵀU
    loss = torch.zeros(rows, dtype=torch.float32, device=W.device)

    def choose(score: torch.Tensor) -> torch.Tensor:  # keep-mask per row segment
        return torch.cat(
            [keep_mask(s, sparsity=sparsity, pattern=pattern, group="matrix") for s in score.split(segments)]
        )

    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        U1 = U[b0:b1, b0:b1]
        d = torch.diagonal(U1)  # [B]
        if pattern is None:
            keep[:, b0:b1] = choose(Wf[:, b0:b1].square() / d.square())
        Wt = Wf[:, b0:b1].T.contiguous()  # [B, out]: one column of W per contiguous row
        cut = (~keep[:, b0:b1]).T.float() / d[:, None]  # [B, out]: 1/U_jj where pruned, else 0
        Et = torch.empty_like(Wt)  # errors (w - q) / U_jj of this block
        m = pattern[1] if pattern is not None else 0
        for j in range(b1 - b0):
            if m and j % m == 0:
                g = choose(Wt[j : j + m].T.square() / d[j : j + m].square())  # [out, M]
                keep[:, b0 + j : b0 + j + m] = g
                cut[j : j + m] = (~g).T.float() / d[j : j + m, None]
            torch.mul(Wt[j], cut[j], out=Et[j])
            Wt[j:].addr_(U1[j, j:], Et[j], alpha=-1.0)
        loss += Et.square().sum(0)
        Wf[:, b0:b1] = Wt.T
        Wf[:, b1:].addmm_(Et.T, U[b0:b1, b1:], alpha=-1.0)  # lazy batch update of later columns
    Wf[~keep] = 0  # exact zeros whatever rounding did
    return PruneResult(Wf.to(W.dtype), keep, loss.sum().item() / 2)
