"""OWL layer-wise sparsity (Yin et al. 2023): blocks with more activation outliers are pruned less,
while the mean sparsity over blocks stays at the target."""

from __future__ import annotations

import torch


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Fraction of a block's Wanda scores |W|·‖X‖ above ``m`` times their mean (all its Linears)."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    return (flat > m * flat.mean()).float().mean().item()


def owl_sparsities(ratios: list[float], sparsity: float, lam: float) -> list[float]:
    """Per-block sparsity: outlier ratios rescaled to [0, 2λ], centred, and subtracted from the
    target, so the most outlier-rich block keeps ~λ more weights and the mean stays ``sparsity``."""
    r = torch.tensor(ratios, dtype=torch.float64)
    spread = r.max() - r.min()
    scaled = (r - r.min()) / spread * (2 * lam) if spread > 0 else torch.zeros_like(r)
    out = sparsity - (scaled - scaled.mean())
    if out.min() < 0 or out.max() >= 1:
        raise ValueError(
            f"owl_lambda={lam} moves block sparsities outside [0, 1) at sparsity={sparsity}; use a smaller owl_lambda")
    return out.tolist()
