"""GPTQ kernel on tiny Linear layers with known answers: grid shape, error feedback, act-order, masks."""

import pytest
import torch

from kick_models.compression.gptq import QuantResult, quantize_gptq
from kick_models.compression.linalg import inverse_cholesky_upper
from kick_models.compression.quant import fake_quantize, find_grid, quantize_rtn


def correlated_layer(n_in=192, n_out=32, n=1024, seed=0, outliers=0):
    """(W, X, H): inputs with strongly correlated features, optionally a few large-scale channels."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(n_in) + 2 * torch.randn(n_in, n_in, generator=g) / n_in**0.5
    X = torch.randn(n, n_in, generator=g) @ mix
    if outliers:
        X[:, torch.randperm(n_in, generator=g)[:outliers]] *= 20
    W = torch.randn(n_out, n_in, generator=g)
    return W, X, 2 * X.T @ X / n


def output_error(W, Q, X):
    return ((X @ (W - Q).T) ** 2).sum().item() / X.shape[0]


def slow_gptq(W, H, bits, group_size, grid_from_block_start=None):
    """Textbook GPTQ, one column at a time with the full inverse-Hessian row; each group's grid is
    read from the fully updated weights. ``grid_from_block_start=b`` instead reads it from a copy
    taken at the start of each b-column block — what the IST-DASLab reference does."""
    W = W.clone().float()
    U = inverse_cholesky_upper(H.float(), 0.01)
    Q = torch.zeros_like(W)
    scales = []
    for j in range(W.shape[1]):
        if grid_from_block_start and j % grid_from_block_start == 0:
            snapshot = W.clone()
        if j % group_size == 0:
            source = snapshot if grid_from_block_start else W
            scale, zero = find_grid(source[:, j : j + group_size], bits)
            scales.append(scale)
        Q[:, j] = fake_quantize(W[:, j], scale, zero, bits)
        err = (W[:, j] - Q[:, j]) / U[j, j]
        W[:, j:] -= err[:, None] * U[j, j:][None, :]
    return Q, torch.stack(scales, dim=1)


def mismatch(A, B):
    """Fraction of entries that differ by more than float noise (a different grid point)."""
    return ((A - B).abs() > 1e-4).float().mean().item()


def nm_mask(W, n=2, m=4):
    keep = torch.zeros_like(W, dtype=torch.bool)
    top = W.abs().reshape(W.shape[0], -1, m).topk(n, dim=-1).indices
    keep.reshape(W.shape[0], -1, m).scatter_(-1, top, True)
    return keep


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size, act_order", [(64, False), (-1, False), (50, True)])
def test_values_lie_on_the_group_grid(bits, group_size, act_order):
    W, _, H = correlated_layer(n_in=160, n_out=8)
    r = quantize_gptq(W, H, bits=bits, group_size=group_size, act_order=act_order)
    assert isinstance(r, QuantResult)
    gi = r.g_idx.long()
    expected_groups = 1 if group_size == -1 else -(-160 // group_size)
    assert r.scales.shape == r.zeros.shape == (8, expected_groups)
    assert r.codes.dtype == torch.uint8 and int(r.codes.max()) <= 2**bits - 1
    assert torch.equal(r.weight, r.scales[:, gi] * (r.codes.float() - r.zeros[:, gi]))
    for g in range(expected_groups):
        for row in range(8):
            assert r.weight[row, gi == g].unique().numel() <= 2**bits


def test_inputs_not_modified_and_loss_is_the_hessian_error():
    W, X, H = correlated_layer()
    W0, H0 = W.clone(), H.clone()
    r = quantize_gptq(W, H, bits=3, group_size=64, blocksize=48)
    assert torch.equal(W, W0) and torch.equal(H, H0)
    D = (W - r.weight).double()
    Hd = H.double() + 0.01 * H.diagonal().mean().double() * torch.eye(H.shape[0], dtype=torch.float64)
    assert r.loss == pytest.approx(torch.trace(D @ Hd @ D.T).item() / 2, rel=1e-4)


@pytest.mark.parametrize("bits", [3, 4])
def test_beats_round_to_nearest(bits):
    W, X, H = correlated_layer()
    gptq = quantize_gptq(W, H, bits=bits, group_size=64).weight
    rtn = quantize_rtn(W, bits=bits, group_size=64).weight
    assert output_error(W, gptq, X) < 0.8 * output_error(W, rtn, X)


def test_error_falls_with_more_bits_and_smaller_groups():
    W, X, H = correlated_layer()
    by_bits = [output_error(W, quantize_gptq(W, H, bits=b, group_size=64).weight, X) for b in (2, 3, 4, 8)]
    assert by_bits == sorted(by_bits, reverse=True)
    by_group = [output_error(W, quantize_gptq(W, H, bits=3, group_size=g).weight, X) for g in (-1, 96, 48, 16)]
    assert by_group == sorted(by_group, reverse=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_act_order_does_not_hurt_with_outlier_channels(seed):
    W, X, H = correlated_layer(seed=seed, outliers=6)
    plain = output_error(W, quantize_gptq(W, H, bits=3, group_size=64).weight, X)
    ordered = quantize_gptq(W, H, bits=3, group_size=64, act_order=True)
    assert output_error(W, ordered.weight, X) <= plain
    assert torch.equal(ordered.g_idx, torch.arange(192, dtype=torch.int32) // 64)  # static, contiguous groups


def test_unaligned_groups_take_their_grid_from_updated_weights():
    """group_size 96 with blocksize 128: groups start mid-block (96, 288). The blocked kernel must
    match the textbook sweep; the reference's stale-copy grids demonstrably do not."""
    W, _, H = correlated_layer(n_in=384, n_out=16)
    r = quantize_gptq(W, H, bits=3, group_size=96, blocksize=128)
    Q, scales = slow_gptq(W, H, 3, 96)
    _, stale_scales = slow_gptq(W, H, 3, 96, grid_from_block_start=128)
    assert not torch.allclose(stale_scales, scales, rtol=1e-3)  # the test can tell the two apart
    assert torch.allclose(r.scales, scales, rtol=1e-4, atol=1e-6)
    assert mismatch(r.weight, Q) < 1e-3  # rare rounding ties aside, the same weights


def test_matches_textbook_sweep_for_any_blocksize():
    W, _, H = correlated_layer(n_in=128, n_out=8)
    Q, _ = slow_gptq(W, H, 4, 32)
    for blocksize in (1, 7, 32, 128, 500):
        assert mismatch(quantize_gptq(W, H, bits=4, group_size=32, blocksize=blocksize).weight, Q) < 1e-3


def test_last_partial_group_like_hidden_size_576():
    W, X, H = correlated_layer(n_in=576, n_out=4, n=700)
    r = quantize_gptq(W, H, bits=4, group_size=128)
    assert r.scales.shape == (4, 5) and int((r.g_idx == 4).sum()) == 64
    assert output_error(W, r.weight, X) < output_error(W, quantize_rtn(W, bits=4).weight, X)


@pytest.mark.parametrize("act_order", [False, True])
def test_joint_2of4_and_4_bit_keeps_the_pattern(act_order):
    W, X, H = correlated_layer()
    keep = nm_mask(W)
    Wp = W * keep
    r = quantize_gptq(Wp, H, bits=4, group_size=64, act_order=act_order, mask=keep)
    assert (r.weight[~keep] == 0).all()
    assert ((r.weight != 0).reshape(32, -1, 4).sum(-1) <= 2).all()
    rtn = quantize_rtn(Wp, bits=4, group_size=64).weight
    assert output_error(Wp, r.weight, X) < output_error(Wp, rtn, X)


@pytest.mark.parametrize("act_order", [False, True])
def test_uniform_diagonal_hessian_reduces_to_round_to_nearest(act_order):
    W, _, _ = correlated_layer(n_in=96, n_out=8)
    H = 3.0 * torch.eye(96)
    r = quantize_gptq(W, H, bits=3, group_size=32, act_order=act_order, blocksize=40)
    rtn = quantize_rtn(W, bits=3, group_size=32)
    assert torch.equal(r.weight, rtn.weight) and torch.equal(r.codes, rtn.codes)
    assert torch.equal(r.scales, rtn.scales) and torch.equal(r.zeros, rtn.zeros)


def test_dead_inputs_and_dtype():
    W, _, H = correlated_layer(n_in=64, n_out=8)
    H[5, :] = 0
    H[:, 5] = 0
    r = quantize_gptq(W.to(torch.bfloat16), H, bits=4, group_size=32)
    assert r.weight.dtype == torch.bfloat16 and torch.isfinite(r.weight.float()).all()
    assert (r.weight[:, 5] == 0).all()


def test_singular_hessian_without_damping_still_works():
    W = torch.randn(4, 32)
    X = torch.randn(8, 32)  # rank 8 < 32
    r = quantize_gptq(W, 2 * X.T @ X / 8, bits=4, group_size=-1, damp=0.0)
    assert torch.isfinite(r.weight).all()


def test_16_bits_returns_the_weight():
    W, _, H = correlated_layer(n_in=64, n_out=4)
    assert torch.equal(quantize_gptq(W, H, bits=16, group_size=-1).weight, W)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"bits": 5}, "bits=5"),
        ({"bits": 4, "group_size": 0}, "group_size=0"),
        ({"bits": 4, "group_size": 65}, "group_size=65"),
        ({"bits": 4, "act_order": "true"}, "act_order='true'"),
        ({"bits": 4, "act_order": 1}, "act_order=1"),
        ({"bits": 4, "damp": -0.1}, "damp=-0.1"),
        ({"bits": 4, "blocksize": 0}, "blocksize=0"),
        ({"bits": 4, "mask": torch.ones(3, 3, dtype=torch.bool)}, "mask shape"),
    ],
)
def test_rejects_bad_arguments(kwargs, needle):
    kwargs.setdefault("group_size", 32)
    with pytest.raises(ValueError, match=needle):
        quantize_gptq(torch.zeros(4, 64), torch.eye(64), **kwargs)


def test_rejects_wrong_hessian_shape():
    with pytest.raises(ValueError, match=r"\[64, 64\]"):
        quantize_gptq(torch.zeros(4, 64), torch.eye(32), bits=4, group_size=32)
