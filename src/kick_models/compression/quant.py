"""Uniform integer quantization grids (per row and column group) and the round-to-nearest baseline GPTQ is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_BITS = (2, 3, 4, 8, 16)


@dataclass(frozen=True)
class QuantGrid:
    """The grid of a quantized matrix, all a packed export needs besides the weights themselves."""

    scales: torch.Tensor  # [out, n_groups] float32
    zeros: torch.Tensor  # [out, n_groups] float32 (integer valued)
    g_idx: torch.Tensor  # [in] int32


@dataclass
class QuantResult:
    """A quantized weight matrix: the fake-quantized weight evaluation uses, and what export needs.

    ``weight[r, c] == scales[r, g_idx[c]] * (codes[r, c] - zeros[r, g_idx[c]])`` (cast to W's dtype).
    ``loss`` is the error GPTQ minimises, ``tr((W - Q) H (W - Q)^T) / 2`` with the damped H; for
    ``H = 2 X^T X / n`` that is (up to the dampening) the output error ``||X (W - Q)^T||^2 / n``.
    """

    weight: torch.Tensor  # [out, in], W's dtype
    codes: torch.Tensor  # [out, in] uint8, in [0, 2^bits - 1]
    scales: torch.Tensor  # [out, n_groups] float32
    zeros: torch.Tensor  # [out, n_groups] float32 (integer valued)
    g_idx: torch.Tensor  # [in] int32, group of each input column
    loss: float

    def grid(self) -> QuantGrid:
        """Scales, zeros and groups on the CPU (small: one pair per row and group)."""
        return QuantGrid(self.scales.detach().cpu(), self.zeros.detach().cpu(), self.g_idx.detach().cpu())


def max_code(bits: int) -> int:
    """Largest integer code of a ``bits``-wide unsigned grid."""
    return 2**bits - 1


def find_grid(x: torch.Tensor, bits: int, *, sym: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row min-max grid of ``x`` [rows, cols]: returns (scale, zero), each [rows].

    Asymmetric: the range is stretched to contain 0 (min <= 0 <= max) so an exact zero — a pruned
    weight — stays exactly representable; ``scale = (max - min) / (2^b - 1)``,
    ``zero = round(-min / scale)``. Symmetric: ``scale = 2 max|x| / (2^b - 1)``, ``zero = 2^(b-1)``.
    An all-zero row (max == min) gets the range [-1, 1] so scale is never 0.
    """
    maxq = max_code(bits)
    x = x.float()
    zeros = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    xmin = torch.minimum(x.amin(dim=1), zeros)
    xmax = torch.maximum(x.amax(dim=1), zeros)
    if sym:
        amax = torch.maximum(xmax, -xmin)
        amax = torch.where(amax == 0, torch.ones_like(amax), amax)
        scale = 2 * amax / maxq
        zero = torch.full_like(scale, float((maxq + 1) // 2))
        return scale, zero
    flat = xmax == xmin
    xmin = torch.where(flat, -torch.ones_like(xmin), xmin)
    xmax = torch.where(flat, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.round(-xmin / scale)
    return scale, zero


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero, 0, 2^b - 1)``; scale/zero broadcast against x."""
    return torch.clamp(torch.round(x / scale) + zero, 0, max_code(bits))


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Values the codes stand for: ``scale * (codes - zero)``."""
    return scale * (codes.float() - zero)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``x`` onto its grid and back (float32)."""
    return dequantize(quantize(x, scale, zero, bits), scale, zero)


def group_index(in_features: int, group_size: int) -> torch.Tensor:
    """Group of each input column [in]: contiguous runs of ``group_size`` (the last may be shorter);
    ``group_size == -1`` puts every column in group 0 (one grid per output channel)."""
    if group_size == -1:
        return torch.zeros(in_features, dtype=torch.int32)
    return torch.arange(in_features, dtype=torch.int32) // group_size


def check_args(W: torch.Tensor, *, bits: int, group_size: int, sym: bool) -> None:
    """Raise ValueError naming the bad value for arguments shared by RTN and GPTQ."""
    if W.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in]; got shape {tuple(W.shape)}")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} is not supported; accepted: {', '.join(map(str, SUPPORTED_BITS))}")
    in_features = W.shape[1]
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not (
        group_size == -1 or 1 <= group_size <= in_features
    ):
        raise ValueError(
            f"group_size={group_size!r} is invalid for in_features={in_features}; "
            f"accepted: -1 (per channel) or an integer in 1..{in_features}"
        )
    if not isinstance(sym, bool):
        raise ValueError(f"sym={sym!r} must be a bool (True or False)")


def quantize_rtn(W: torch.Tensor, *, bits: int, group_size: int = 128, sym: bool = False) -> QuantResult:
    """Round-to-nearest: each (row, group) snapped onto its own min-max grid, no error feedback.

    ``loss`` is NaN: RTN has no Hessian; measure it with the caller's inputs instead.
    """
    check_args(W, bits=bits, group_size=group_size, sym=sym)
    out_features, in_features = W.shape
    g_idx = group_index(in_features, group_size)
    if bits == 16:
        empty = torch.empty(out_features, 0)
        return QuantResult(W.clone(), torch.empty(0, dtype=torch.uint8), empty, empty.clone(), g_idx, 0.0)
    Wf = W.detach().float()
    n_groups = int(g_idx[-1]) + 1
    width = in_features if group_size == -1 else group_size
    scales = torch.empty(out_features, n_groups, device=W.device)
    zeros = torch.empty_like(scales)
    codes = torch.empty(out_features, in_features, dtype=torch.uint8, device=W.device)
    for g in range(n_groups):
        cols = slice(g * width, min((g + 1) * width, in_features))
        scale, zero = find_grid(Wf[:, cols], bits, sym=sym)
        scales[:, g], zeros[:, g] = scale, zero
        codes[:, cols] = quantize(Wf[:, cols], scale[:, None], zero[:, None], bits).to(torch.uint8)
    g_long = g_idx.long().to(W.device)
    weight = dequantize(codes, scales[:, g_long], zeros[:, g_long]).to(W.dtype)
    return QuantResult(weight, codes, scales, zeros, g_idx, float("nan"))
