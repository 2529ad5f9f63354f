"""Damped Cholesky factor of H⁻¹, shared by SparseGPT and GPTQ, with dead input columns handled."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def dead_columns(H: torch.Tensor) -> torch.Tensor:
    """Input features that were zero on every calibration token (H_jj == 0), bool [in]."""
    return torch.diagonal(H) == 0


def inverse_cholesky_upper(H: torch.Tensor, damp: float = 0.01, retries: int = 4) -> torch.Tensor:
    """Upper Cholesky factor U of (H + λI)⁻¹ with λ = damp · mean(diag H), so (H + λI)⁻¹ = UᵀU.

    Dead columns get H_jj = 1 (their weights see no input, so any value works). If the damped
    matrix is still not positive definite (float32 rounding on near-singular H), the damping
    fraction is multiplied by 10 (at least 1e-6) up to ``retries`` times, with a warning. Row j of U
    divided by U_jj is the OBS update that spreads column j's error over later columns (SparseGPT
    and GPTQ alike). Does not mutate ``H``.
    """
    H = H.float().clone()
    dead = dead_columns(H)
    H[dead, dead] = 1.0
    diag = torch.arange(H.shape[0], device=H.device)
    mean_diag = torch.mean(torch.diagonal(H)).item()
    frac = damp
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(retries + 1):
        Hd = H.clone()
        Hd[diag, diag] += frac * mean_diag
        # With J the index reversal, J·Hd·J = L·Lᵀ gives Hd⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J), and J L⁻¹ J is
        # upper triangular: one Cholesky and one triangular solve instead of three factorizations.
        L, info = torch.linalg.cholesky_ex(Hd.flip(0, 1))
        if info.item() == 0:
            U = torch.linalg.solve_triangular(L, eye, upper=False).flip(0, 1)
            if torch.isfinite(U).all():
                if attempt:
                    log.warning("Hessian not positive definite at damp=%g; used damp=%g", damp, frac)
                return U
        if attempt < retries:
            frac = max(frac * 10.0, 1e-6)  # a floor, so damp=0 on a singular H can still recover
    raise RuntimeError(f"Hessian is not positive definite even with damp={frac:g}; try a larger damp=")
