import pytest
import torch

from kick_models.compression.magnitude import prune_magnitude
from kick_models.compression.masks import prune_count
from kick_models.compression.sparsegpt import prune_sparsegpt
from kick_models.compression.stats import InputStats
from kick_models.compression.wanda import prune_wanda
from kick_testlib.reference import hessian


@pytest.fixture(scope="module")
def layer(correlated_inputs):
    g = torch.Generator().manual_seed(1)
    X = correlated_inputs(2048, 256)  # [tokens, in]
    W = torch.randn(128, 256, generator=g) / 16
    stats = InputStats(256, norms=True, hessian=True)
    stats.update(X)
    return W, X, stats


def recon(W, W_hat, X):
    return ((W - W_hat) @ X.T).square().sum().item()


def run_all(W, stats, **kw):
    return {
        "magnitude": prune_magnitude(W, **kw).weight,
        "wanda": prune_wanda(W, stats.col_norms(), **kw).weight,
        "sparsegpt": prune_sparsegpt(W, stats.hessian(), **kw).weight,
    }


def test_reconstruction_order_unstructured(layer):
    W, X, stats = layer
    err = {k: recon(W, v, X) for k, v in run_all(W, stats, sparsity=0.5).items()}
    assert err["magnitude"] > err["wanda"] > err["sparsegpt"], err


def test_reconstruction_order_2_4(layer):
    W, X, stats = layer
    err = {k: recon(W, v, X) for k, v in run_all(W, stats, pattern=(2, 4)).items()}
    assert err["sparsegpt"] < min(err["magnitude"], err["wanda"]), err


def test_exact_sparsity_per_method(layer):
    W, _, stats = layer
    out = run_all(W, stats, sparsity=0.5)
    assert (out["magnitude"] == 0).sum() == prune_count(0.5, W.numel())
    assert ((out["wanda"] == 0).sum(1) == prune_count(0.5, 256)).all()
    for c in (0, 128):  # SparseGPT: per 128-column tile
        assert (out["sparsegpt"][:, c : c + 128] == 0).sum() == prune_count(0.5, 128 * 128)
    for name, w in run_all(W, stats, pattern=(2, 4)).items():
        assert ((w.reshape(128, -1, 4) != 0).sum(-1) <= 2).all(), name


def test_wanda_with_uniform_norms_is_row_magnitude(layer):
    W, _, _ = layer
    wanda = prune_wanda(W, torch.full((256,), 3.0), sparsity=0.5).weight
    row_mag = prune_magnitude(W, sparsity=0.5, group="row").weight
    assert torch.equal(wanda, row_mag)


def test_sparsity_zero_changes_nothing(layer):
    W, _, stats = layer
    for w in run_all(W, stats, sparsity=0.0).values():
        assert torch.equal(w, W)


def test_inputs_not_mutated_and_dtype_kept(layer):
    W, _, stats = layer
    Wb = W.to(torch.bfloat16)
    H = stats.hessian()
    W0, H0 = Wb.clone(), H.clone()
    for w in run_all(Wb, stats, sparsity=0.5).values():
        assert w.dtype == torch.bfloat16 and w.shape == Wb.shape
    assert torch.equal(Wb, W0) and torch.equal(H, H0)


def test_scaling_hessian_changes_nothing(layer):
    W, _, stats = layer
    H = stats.hessian()
    a = prune_sparsegpt(W, H, sparsity=0.5)
    b = prune_sparsegpt(W, 7.0 * H, sparsity=0.5)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-6)


def test_streaming_hessian_equals_one_shot(layer):
    _, X, _ = layer
    streamed = InputStats(256, norms=True, hessian=True)
    for chunk in X.split(300):
        streamed.update(chunk.reshape(-1, 3, 256) if chunk.shape[0] % 3 == 0 else chunk)
    torch.testing.assert_close(streamed.hessian(), hessian(X), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(streamed.col_norms(), X.double().norm(dim=0).float(), rtol=1e-5, atol=1e-5)


def test_sparsegpt_dead_columns_and_row_groups(layer):
    W, X, _ = layer
    X = X.clone()
    X[:, :5] = 0  # dead inputs
    H = hessian(X)
    out = prune_sparsegpt(W, H, sparsity=0.5, row_groups=[64, 64])
    assert torch.isfinite(out.weight).all()
    for rows in (slice(0, 64), slice(64, 128)):  # each matrix keeps its own per-tile count
        assert (out.weight[rows, :128] == 0).sum() == prune_count(0.5, 64 * 128)
    with pytest.raises(ValueError, match="expected"):
        prune_sparsegpt(W, H[:10, :10], sparsity=0.5)
