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
    matrix is still not positive definite (float32 rounding on near-singular H), λ is multiplied
    by 10 up to ``retries`` times, with a warning. Does not mutate ``H``.
    """
    H = H.float().clone()
    dead = dead_columns(H)
    H[dead, dead] = 1.0
    diag = torch.arange(H.shape[0], device=H.device)
    lam = damp * torch.mean(torch.diagonal(H)).item()
    for attempt in range(retries + 1):
        Hd = H.clone()
        Hd[diag, diag] += lam
        L, info = torch.linalg.cholesky_ex(Hd)
        if info.item() == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info.item() == 0:
                return U
        if attempt < retries:
            log.warning("Hessian not positive definite with damping %.3g; retrying with 10x", lam)
            lam *= 10.0
    raise RuntimeError(f"Hessian is not positive definite even with damping {lam:.3g}; try a larger damp=")
