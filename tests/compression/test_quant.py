"""Min-max grid, quantize/dequantize round trip and the round-to-nearest baseline."""

import pytest
import torch

from kick_models.compression.quant import (
    dequantize,
    fake_quantize,
    find_grid,
    group_index,
    quantize,
    quantize_rtn,
)


def test_asymmetric_grid_known_values():
    x = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 2.0, 3.0], [-4.0, -2.0, -1.0]])
    scale, zero = find_grid(x, 2)  # maxq = 3
    # row 0: [-1, 2] -> scale 1, zero 1; row 1: min clamped to 0 -> [0, 3]; row 2: max clamped to 0 -> [-4, 0]
    assert torch.allclose(scale, torch.tensor([1.0, 1.0, 4 / 3]))
    assert torch.equal(zero, torch.tensor([1.0, 0.0, 3.0]))
    assert torch.allclose(fake_quantize(x[:1], scale[:1, None], zero[:1, None], 2), x[:1])


def test_zero_is_exact_on_every_grid():
    torch.manual_seed(0)
    x = torch.randn(50, 16) * torch.rand(50, 1) * 10 + torch.randn(50, 1)
    for bits in (2, 3, 4, 8):
        for sym in (False, True):
            scale, zero = find_grid(x, bits, sym=sym)
            assert (scale > 0).all()
            q = fake_quantize(torch.zeros(50, 1), scale[:, None], zero[:, None], bits)
            assert torch.equal(q, torch.zeros(50, 1))


def test_degenerate_all_zero_row():
    scale, zero = find_grid(torch.zeros(2, 8), 4)
    assert (scale > 0).all() and torch.isfinite(zero).all()
    assert torch.equal(fake_quantize(torch.zeros(2, 8), scale[:, None], zero[:, None], 4), torch.zeros(2, 8))
    scale, zero = find_grid(torch.zeros(1, 8), 4, sym=True)
    assert scale.item() > 0


def test_symmetric_grid():
    x = torch.tensor([[-3.0, 1.0], [0.5, 2.0]])
    scale, zero = find_grid(x, 4, sym=True)
    assert torch.allclose(scale, torch.tensor([6 / 15, 4 / 15]))
    assert torch.equal(zero, torch.tensor([8.0, 8.0]))


def test_quantize_clamps_and_dequantize_inverts():
    scale, zero = torch.tensor([0.5]), torch.tensor([2.0])
    codes = quantize(torch.tensor([-100.0, -1.0, 0.0, 0.24, 100.0]), scale, zero, 3)
    assert codes.tolist() == [0.0, 0.0, 2.0, 2.0, 7.0]
    assert dequantize(codes, scale, zero).tolist() == [-1.0, -1.0, 0.0, 0.0, 2.5]


def test_group_index_with_partial_last_group():
    g = group_index(576, 128)
    assert g.tolist()[::128] == [0, 1, 2, 3, 4] and int(g[-1]) == 4 and int((g == 4).sum()) == 64
    assert group_index(10, -1).tolist() == [0] * 10


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [-1, 32, 48])
def test_rtn_values_lie_on_the_group_grid(bits, group_size):
    torch.manual_seed(1)
    W = torch.randn(6, 100)
    r = quantize_rtn(W, bits=bits, group_size=group_size)
    gi = r.g_idx.long()
    assert r.scales.shape == (6, int(gi[-1]) + 1)
    assert torch.equal(r.weight, r.scales[:, gi] * (r.codes.float() - r.zeros[:, gi]))
    for g in range(r.scales.shape[1]):
        block = r.weight[:, gi == g]
        for row in range(6):
            assert block[row].unique().numel() <= 2**bits
    # each weight is at its nearest grid point: error at most half a step (no clamping: min <= w <= max)
    assert ((W - r.weight).abs() <= r.scales[:, gi] / 2 + 1e-6).all()


def test_rtn_keeps_pruned_zeros_and_dtype():
    torch.manual_seed(2)
    W = torch.randn(8, 64)
    W[torch.rand_like(W) < 0.5] = 0
    r = quantize_rtn(W.to(torch.bfloat16), bits=3, group_size=16)
    assert r.weight.dtype == torch.bfloat16
    assert (r.weight[W == 0] == 0).all()


def test_rtn_16_bits_is_identity():
    W = torch.randn(4, 8)
    assert torch.equal(quantize_rtn(W, bits=16, group_size=-1).weight, W)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"bits": 5}, "bits=5"),
        ({"bits": 4, "group_size": 0}, "group_size=0"),
        ({"bits": 4, "group_size": 65}, "group_size=65"),
        ({"bits": 4, "group_size": -2}, "group_size=-2"),
        ({"bits": 4, "group_size": -1, "sym": "no"}, "sym='no'"),
    ],
)
def test_rtn_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        quantize_rtn(torch.zeros(2, 64), **kwargs)
