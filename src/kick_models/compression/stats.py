"""Streaming input statistics for one Linear layer: per-column moments (Wanda's squared norms,
AWQ's mean |x|, DSnoT's mean and variance) and the Hessian H = 2XᵀX/n (SparseGPT, GPTQ),
accumulated in float32 whatever the model dtype."""

from __future__ import annotations

import torch


class InputStats:
    """Accumulates ``sum_t x_t ⊙ x_t`` (with ``sum_t x_t`` and ``sum_t |x_t|``) and/or
    ``sum_t x_t x_tᵀ`` over token rows x_t ∈ R^in.

    Streaming over batches gives the same result as one pass over all tokens (up to float32
    summation order). ``update`` takes any [..., in] activation tensor.
    """

    def __init__(self, in_features: int, *, norms: bool = True, hessian: bool = False, device=None):
        self.in_features = in_features
        self.tokens = 0
        self.sq_norms = torch.zeros(in_features, dtype=torch.float32, device=device) if norms else None
        # first moments ride along with the norms: same cost class, one pass
        self.sums = torch.zeros(in_features, dtype=torch.float32, device=device) if norms else None
        self.abs_sums = torch.zeros(in_features, dtype=torch.float32, device=device) if norms else None
        self._xtx = torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if hessian else None

    @classmethod
    def uniform(cls, in_features: int, *, norms: bool, hessian: bool, device=None) -> InputStats:
        """The data-free stand-in: one pseudo-token with unit norms and |x|, zero mean, unit
        variance and H = 2XᵀX/n = I (every statistic-driven kernel then reduces to its magnitude
        or round-to-nearest form)."""
        stats = cls(in_features, norms=norms, hessian=hessian, device=device)
        stats.tokens = 1
        if stats.sq_norms is not None:
            stats.sq_norms.fill_(1.0)
            stats.abs_sums.fill_(1.0)
        if stats._xtx is not None:
            stats._xtx.copy_(0.5 * torch.eye(in_features, device=device))
        return stats

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.in_features).float()  # [tokens, in]
        self.tokens += x.shape[0]
        if self.sq_norms is not None:
            self.sq_norms += x.square().sum(0)
            self.sums += x.sum(0)
            self.abs_sums += x.abs().sum(0)
        if self._xtx is not None:
            self._xtx.addmm_(x.T, x)

    @property
    def collecting(self) -> bool:
        """Whether any statistic is accumulated (else only tokens are counted)."""
        return self.sq_norms is not None or self._xtx is not None

    @property
    def has_hessian(self) -> bool:
        return self._xtx is not None

    def col_norms(self) -> torch.Tensor:
        """‖X_j‖₂ over all tokens seen, [in]."""
        if self.sq_norms is None:
            raise RuntimeError("InputStats was created with norms=False")
        return self.sq_norms.sqrt()

    def _moment(self, total: torch.Tensor | None) -> torch.Tensor:
        if total is None:
            raise RuntimeError("InputStats was created with norms=False")
        if self.tokens == 0:
            raise RuntimeError("no calibration tokens reached this layer")
        return total / self.tokens

    def mean(self) -> torch.Tensor:
        """E[x_j] over all tokens seen, [in]."""
        return self._moment(self.sums)

    def abs_mean(self) -> torch.Tensor:
        """E[|x_j|] over all tokens seen, [in] (AWQ's activation magnitude)."""
        return self._moment(self.abs_sums)

    def var(self) -> torch.Tensor:
        """Population variance of x_j over all tokens seen, [in] (clamped at 0 against rounding)."""
        return (self._moment(self.sq_norms) - self.mean().square()).clamp_min(0)

    def hessian(self) -> torch.Tensor:
        """H = 2XᵀX / n, [in, in] float32 (a fresh tensor)."""
        if self._xtx is None:
            raise RuntimeError("InputStats was created with hessian=False")
        if self.tokens == 0:
            raise RuntimeError("no calibration tokens reached this layer")
        return self._xtx * (2.0 / self.tokens)

