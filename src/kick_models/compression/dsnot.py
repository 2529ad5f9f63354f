"""DSnoT (Zhang et al., ICLR 2024, "Dynamic Sparse No Training", Alg. 1): refine a pruning mask
by swaps, without weight updates. Per output row i the expected reconstruction error is
ε_i = Σ_{j pruned} W_ij E[x_j]; each cycle regrows the pruned weight that cuts |ε_i| most
(sign(W_ij E[x_j]) = sign(ε_i), largest |W_ij E[x_j]| / Var[x_j]^p) and prunes, in exchange, a
kept weight that moves ε_i back (opposite sign, smallest Wanda score; N:M: the least important
kept weight of the regrown one's M-group). A row stops once |ε_i| ≤ threshold, once a swap would
flip the sign of ε_i (the sign criterion), or after ``max_cycles``."""

from __future__ import annotations

import torch

from .linalg import inverse_cholesky_upper
from .masks import keep_mask
from .method import PruneResult

INITS = ("wanda", "sparsegpt")


def initial_score(W: torch.Tensor, init: str, col_norms: torch.Tensor, H: torch.Tensor | None,
                  damp: float = 0.01) -> torch.Tensor:
    """The starting mask's score: Wanda |W|·‖X_j‖, or SparseGPT's w²/[U_jj]² (U: upper Cholesky
    factor of (H + λI)⁻¹), both compared within each row."""
    Wf = W.float()
    if init == "wanda":
        return Wf.abs() * col_norms.float()[None, :]
    if init == "sparsegpt":
        if H is None:
            raise ValueError("init='sparsegpt' needs the Hessian")
        return Wf.square() / torch.diagonal(inverse_cholesky_upper(H, damp)).square()[None, :]
    raise ValueError(f"init={init!r}; accepted: {' | '.join(INITS)}")


def row_losses(W: torch.Tensor, keep: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Layer reconstruction loss per row, ½ d_i H d_iᵀ with d_i the pruned part of row i
    (= ‖X d_iᵀ‖²/n for H = 2XᵀX/n), [out]."""
    D = W.float().masked_fill(keep, 0)  # [out, in]
    return 0.5 * ((D @ H.float()) * D).sum(1)


def refine_dsnot(
    W: torch.Tensor,
    keep: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    prune_score: torch.Tensor,
    *,
    pattern: tuple[int, int] | None = None,
    max_cycles: int = 50,
    threshold: float = 0.0,
    var_power: float = 1.0,
    same_sign: bool = True,
    H: torch.Tensor | None = None,
) -> PruneResult:
    """Swap-refine ``keep`` [out, in] (True = kept) for W [out, in]; every swap regrows one weight and
    prunes one of the same row (and M-group), so per-row counts and N:M patterns are kept exactly.
    ``prune_score`` [out, in] ranks the weights that may be pruned (lower goes first). With ``H``,
    any row whose loss :func:`row_losses` came out higher than with the starting mask gets its
    starting mask back, so the layer loss never grows; the result's loss is that layer loss."""
    rows = W.shape[0]
    Wf = W.float()
    delta = Wf * mean.float()[None, :]  # E[contribution] of each weight to its row's output
    regrow_rank = delta / var.float().clamp_min(1e-12)[None, :].pow(var_power)
    start = keep.clone()
    keep = keep.clone()
    can_grow = ~keep  # only weights pruned at the start may regrow, only kept ones be pruned
    can_prune = keep.clone()
    err = delta.masked_fill(keep, 0).sum(1)  # ε [out]
    sign0 = torch.sign(err)
    active = err.abs() > threshold
    r = torch.arange(rows, device=W.device)
    inf = torch.tensor(float("inf"), device=W.device)
    for _ in range(max_cycles):
        if not bool(active.any()):
            break
        positive = (err > 0)[:, None]
        # regrow: same sign as ε, largest |rank|
        grow_key = torch.where(can_grow & (torch.sign(delta) == torch.sign(err)[:, None]),
                               torch.where(positive, regrow_rank, -regrow_rank), -inf)
        grow_val, j = grow_key.max(1)
        if pattern is None:  # prune: opposite sign to ε, smallest score
            prune_key = torch.where(can_prune & (torch.sign(delta) == -torch.sign(err)[:, None]), prune_score, inf)
            prune_val, k = prune_key.min(1)
        else:  # prune: the weakest kept weight of j's M-group
            m = pattern[1]
            offsets = (j - j % m)[:, None] + torch.arange(m, device=W.device)[None, :]  # [out, m]
            group_key = torch.where(can_prune.gather(1, offsets), prune_score.gather(1, offsets), inf)
            prune_val, pos = group_key.min(1)
            k = offsets.gather(1, pos[:, None]).squeeze(1)
        after = err - delta[r, j] + delta[r, k]
        go = active & torch.isfinite(grow_val) & torch.isfinite(prune_val)
        if same_sign:
            go &= torch.sign(after) == sign0
        rows_go = r[go]
        keep[rows_go, j[go]] = True
        keep[rows_go, k[go]] = False
        can_grow[rows_go, j[go]] = False
        can_prune[rows_go, k[go]] = False
        err = torch.where(go, after, err)
        active = go & (err.abs() > threshold)
    loss = 0.0
    if H is not None:
        before, now = row_losses(W, start, H), row_losses(W, keep, H)
        worse = now > before
        keep[worse] = start[worse]
        loss = float(torch.where(worse, before, now).sum())
    return PruneResult(W.masked_fill(~keep, 0), keep, loss)


def prune_dsnot(
    W: torch.Tensor,
    col_norms: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    H: torch.Tensor | None,
    *,
    sparsity: float = 0.0,
    pattern: tuple[int, int] | None = None,
    init: str = "wanda",
    damp: float = 0.01,
    **refine,
) -> PruneResult:
    """A Wanda or SparseGPT-score mask (per row, or N:M), then :func:`refine_dsnot`. Unstructured
    swaps prune by Wanda score (as the DSnoT reference), N:M swaps by the initial score."""
    score = initial_score(W, init, col_norms, H, damp)
    keep = keep_mask(score, sparsity=sparsity, pattern=pattern, group="row")
    wanda = W.float().abs() * col_norms.float()[None, :]
    prune_score = wanda if pattern is None else score
    return refine_dsnot(W, keep, mean, var, prune_score, pattern=pattern, H=H, **refine)
