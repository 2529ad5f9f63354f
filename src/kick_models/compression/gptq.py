"""GPTQ (Frantar et al., 2023): quantize one Linear weight column by column, pushing each column's
rounding error onto the columns not yet quantized through the inverse Hessian of its inputs."""

from __future__ import annotations

import math

import torch

from kick_models.compression.linalg import inverse_cholesky_upper
from kick_models.compression.quant import (
    QuantResult,
    check_args,
    dequantize,
    find_grid,
    group_index,
)

__all__ = ["QuantResult", "quantize_gptq"]


def _check_gptq_args(W, H, *, act_order, damp, blocksize, mask) -> None:
    in_features = W.shape[1]
    if tuple(H.shape) != (in_features, in_features):
        raise ValueError(f"H must be [in, in] = [{in_features}, {in_features}]; got shape {tuple(H.shape)}")
    if not isinstance(act_order, bool):
        raise ValueError(f"act_order={act_order!r} must be a bool (True or False)")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or damp < 0:
        raise ValueError(f"damp={damp!r} must be a finite number >= 0 (fraction of the mean Hessian diagonal)")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize={blocksize!r} must be a positive integer")
    if mask is not None and tuple(mask.shape) != tuple(W.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the weight shape {tuple(W.shape)}")


def _current_columns(WT, W1, Err1, U, i1, i, i2, pos):
    """Columns ``pos`` (visiting positions, all >= i1 + i) as they stand after every error so far,
    as rows [len(pos), out] of the transposed layout.

    Inside the block they are read from the block copy ``W1``; past the block the lazy update
    from this block's first ``i`` columns has not been applied to ``WT`` yet, so apply it here.
    (The reference implementation reads the not-yet-updated copy for both, so a group starting
    mid-block got its grid from stale weights.)
    """
    cur = torch.empty(pos.numel(), WT.shape[1], dtype=WT.dtype, device=WT.device)
    inside = pos < i2
    cur[inside] = W1[pos[inside] - i1]
    outside = pos[~inside]
    if outside.numel():
        cur[~inside] = WT[outside] - U[i1 : i1 + i, outside].T @ Err1[:i]
    return cur


def quantize_gptq(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    bits: int,
    group_size: int = 128,
    sym: bool = False,
    act_order: bool = False,
    damp: float = 0.01,
    blocksize: int = 128,
    mask: torch.Tensor | None = None,
) -> QuantResult:
    """GPTQ-quantize ``W`` [out, in] given ``H = 2 X^T X / n`` [in, in]; W and H are not modified.

    Greedy OBS per column j in order: ``q_j = quant(w_j)``, ``e_j = (w_j - q_j) / U_jj``,
    ``w_k -= e_j U_jk`` for k > j (within a block at once, past it lazily once per block), loss
    ``sum e_j^2 / 2``. Each (row, group) grid is taken when the sweep reaches the group's first
    column, from the weights as updated so far. ``act_order`` visits columns by decreasing
    ``diag(H)``; groups stay contiguous runs of the original columns, so ``g_idx`` is the plain
    ``column // group_size`` and the output needs no reordering to be exported.
    ``mask`` (bool [out, in], True = keep): pruned weights quantize to exactly 0 and their pending
    updates are fed forward as error like any rounding error, so the sparsity pattern is kept.
    ``bits == 16`` returns a copy of W with empty codes.
    """
    check_args(W, bits=bits, group_size=group_size, sym=sym)
    _check_gptq_args(W, H, act_order=act_order, damp=damp, blocksize=blocksize, mask=mask)
    out_features, n = W.shape
    g_idx = group_index(n, group_size)
    if bits == 16:
        empty = torch.empty(out_features, 0)
        return QuantResult(W.clone(), torch.empty(0, dtype=torch.uint8), empty, empty.clone(), g_idx, 0.0)

    dev = W.device
    Wf = W.detach().to(torch.float32).clone()
    Hf = H.detach().to(device=dev, dtype=torch.float32).clone()
    keep = None if mask is None else mask.to(device=dev, dtype=torch.bool)
    dead = torch.diag(Hf) == 0  # inputs that were always 0: their weights are free
    Hf[dead, dead] = 1
    Wf[:, dead] = 0
    if keep is not None:
        Wf = Wf * keep

    perm = torch.argsort(torch.diag(Hf), descending=True, stable=True) if act_order else torch.arange(n, device=dev)
    # Transposed layout: row j of WT is column perm[j] of W, so per-column work is on contiguous memory.
    WT = Wf.T[perm].contiguous()  # [n, out] in visiting order
    Hp = Hf[perm][:, perm]
    keepT = None if keep is None else keep.T[perm].contiguous()  # [n, out]
    group_of = g_idx.to(dev)[perm]  # [n] group of each visited position
    U = inverse_cholesky_upper(Hp, damp)  # [n, n] upper

    n_groups = int(g_idx[-1]) + 1
    positions = torch.argsort(group_of, stable=True).split(torch.bincount(group_of, minlength=n_groups).tolist())
    first_visit = {int(pos[0]): g for g, pos in enumerate(positions)}  # position -> group starting there
    group_list = group_of.tolist()
    inv_diag = (1 / torch.diag(U)).tolist()

    scales = torch.empty(n_groups, out_features, device=dev)
    zeros = torch.empty_like(scales)
    codes = torch.empty_like(WT)  # float codes in visiting order; small integers, exact
    grid: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # group -> (scale, zero), each [out]
    loss = 0.0
    maxq = 2**bits - 1

    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = WT[i1:i2].clone()  # [b, out] block, updated column by column
        Err1 = torch.zeros_like(W1)  # [b, out] (w - q) / U_jj per column
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            p = i1 + i
            g = group_list[p]
            if p in first_visit:
                cur = _current_columns(WT, W1, Err1, U, i1, i, i2, positions[g])
                if keepT is not None:
                    cur = cur * keepT[positions[g]]
                scale, zero = find_grid(cur.T, bits, sym=sym)
                scales[g], zeros[g] = grid[g] = scale, zero
            scale, zero = grid[g]
            w = W1[i]
            c = torch.round(w / scale).add_(zero).clamp_(0, maxq)  # = quant.quantize
            if keepT is not None:
                c = torch.where(keepT[p], c, zero)  # the code of exactly 0.0
            codes[p] = c
            err = torch.sub(w, (c - zero).mul_(scale)).mul_(inv_diag[p])
            Err1[i] = err
            W1[i + 1 :].addr_(U1[i, i + 1 :], err, alpha=-1)
        loss += float(Err1.double().square().sum())
        WT[i2:] -= U[i1:i2, i2:].T @ Err1

    codes = codes[torch.argsort(perm)].T  # [out, n] in original column order
    scales, zeros = scales.T.contiguous(), zeros.T.contiguous()  # [out, n_groups]
    g_cols = g_idx.long().to(dev)
    weight = dequantize(codes, scales[:, g_cols], zeros[:, g_cols]).to(W.dtype)
    return QuantResult(weight.contiguous(), codes.to(torch.uint8).contiguous(), scales, zeros, g_idx, loss / 2)
