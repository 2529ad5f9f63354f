"""RTN, AWQ, RIA and DSnoT checked against their definitions on tiny tensors."""

import copy

import pytest
import torch

from kick_models.compression import awq
from kick_models.compression.blocks import block_linears
from kick_models.compression.dsnot import prune_dsnot, refine_dsnot, row_losses
from kick_models.compression.gather import LinearGroup
from kick_models.compression.masks import keep_mask
from kick_models.compression.quant import quantize_rtn
from kick_models.compression.registry import Job, get_method
from kick_models.compression.ria import prune_ria, reallocate_channels, ria_score
from kick_models.compression.stats import InputStats
from kick_models.config import build_config


@pytest.fixture(scope="module")
def layer(correlated_inputs):
    g = torch.Generator().manual_seed(3)
    X = correlated_inputs(1024, 64)  # [tokens, in]
    X = X + 0.5 * torch.randn(64, generator=g)  # nonzero means, so DSnoT's expected error is not ~0
    W = torch.randn(48, 64, generator=g) / 8
    stats = InputStats(64, norms=True, hessian=True)
    stats.update(X)
    return W, X, stats


def test_stats_moments_match_direct_computation(layer):
    _, X, stats = layer
    torch.testing.assert_close(stats.mean(), X.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.abs_mean(), X.abs().mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.var(), X.var(0, unbiased=False), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ RTN
def test_rtn_is_the_min_max_grid_applied_per_column_group():
    W = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    got = get_method("rtn").quantize(W, None, Job(build_config({"method": "rtn", "group_size": 8}), 0.0, {}), None)
    for c in range(0, 32, 8):
        w = W[:, c : c + 8]
        lo, hi = w.min(1).values.clamp(max=0), w.max(1).values.clamp(min=0)
        scale = (hi - lo) / 15
        zero = torch.round(-lo / scale)
        want = scale[:, None] * (torch.clamp(torch.round(w / scale[:, None]) + zero[:, None], 0, 15) - zero[:, None])
        torch.testing.assert_close(got.weight[:, c : c + 8], want)
    assert len(torch.unique(got.weight[0, :8])) <= 16


def test_rtn_needs_no_calibration():
    config = build_config({"method": "rtn"})
    assert config.wbits == 4 and config.quantizes and not config.needs_calibration


# ------------------------------------------------------------------ AWQ
def test_awq_scales_follow_the_definition():
    m = torch.tensor([0.5, 1.0, 2.0, 8.0])
    s = awq.awq_scales(m, 0.5)
    raw = m.sqrt()
    torch.testing.assert_close(s, raw / (raw.max() * raw.min()).sqrt())
    torch.testing.assert_close(awq.awq_scales(m, 0.0), torch.ones(4))


def test_awq_with_uniform_activations_is_rtn_with_unit_scales(layer):
    W, X, _ = layer
    H = 2 * X.T @ X / X.shape[0]
    found = awq.search_scales([W], torch.full((64,), 0.7), H, bits=4, group_size=16)
    torch.testing.assert_close(found.scales, torch.ones(64))
    assert found.alpha == 0.0
    Q = quantize_rtn(W * found.scales, bits=4, group_size=16).weight / found.scales
    torch.testing.assert_close(Q, quantize_rtn(W, bits=4, group_size=16).weight)


def test_awq_search_never_loses_to_rtn_and_helps_with_outlier_channels(layer):
    W, _, stats = layer
    H = stats.hessian()
    found = awq.search_scales([W], stats.abs_mean(), H, bits=3, group_size=16)
    rtn = awq.output_error(W, quantize_rtn(W, bits=3, group_size=16).weight, H)
    assert found.losses[0] == pytest.approx(rtn, rel=1e-5)  # α = 0 is plain RTN
    assert found.loss < rtn and found.alpha > 0


def _block_input(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_awq_folded_model_computes_the_same_function(tiny_llama):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4)  # MHA: v → o folds too
    model = LlamaForCausalLM(config).eval()
    for p in model.parameters():  # trained-looking norms, not all ones
        if p.dim() == 1:
            p.data.uniform_(0.5, 1.5)
    ids = torch.randint(0, 64, (2, 12))
    before = _block_input(model, ids)
    folded = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    targets = []
    for block in folded.model.layers:
        linears = block_linears(block)
        for names in (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
                      ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]):
            target = awq.fold_target(block, names)
            targets.append(target[0] if target else None)
            s = torch.rand(linears[names[0]].in_features, generator=g) * 4 + 0.25
            assert awq.fold_scales(target[1], [linears[n] for n in names], s)
    assert targets[:4] == ["input_layernorm", "self_attn.v_proj", "post_attention_layernorm", "mlp.up_proj"]
    changed = folded.model.layers[0].mlp.down_proj.weight
    assert not torch.allclose(changed, model.model.layers[0].mlp.down_proj.weight)
    torch.testing.assert_close(_block_input(folded, ids), before, rtol=1e-5, atol=1e-5)


def test_awq_does_not_fold_o_into_v_under_grouped_query_attention(tiny_llama):
    block = tiny_llama().model.layers[0]  # 4 heads, 2 kv heads: v has half of o's inputs
    assert awq.fold_target(block, ["self_attn.o_proj"]) is None
    assert awq.fold_target(block, ["mlp.down_proj"])[0] == "mlp.up_proj"


def test_awq_block_folds_its_scales_into_the_norm(tiny_llama):
    model = tiny_llama()
    block = model.model.layers[0]
    linears = block_linears(block)
    x = torch.randn(256, 64)
    x[:, :3] *= 30
    stats = InputStats(64, norms=True, hessian=True)
    stats.update(x)
    group = LinearGroup(["mlp.gate_proj", "mlp.up_proj"], stats)
    chosen = awq.awq_block(block, linears, [group], bits=3, group_size=32)
    assert chosen["mlp.gate_proj"] > 0
    norm = block.post_attention_layernorm.weight
    assert not torch.allclose(norm, torch.ones_like(norm))  # 1/s went into the norm


def test_awq_refuses_true_sequential():
    from kick_models.config import ConfigError

    with pytest.raises(ConfigError, match="true_sequential=True; accepted: false with method=awq"):
        build_config({"method": "awq", "true_sequential": True})


# ------------------------------------------------------------------ RIA
def test_ria_score_matches_its_definition():
    W = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    norms = torch.tensor([4.0, 9.0])
    want = torch.empty(2, 2)
    for i in range(2):
        for j in range(2):
            a = abs(W[i, j])
            want[i, j] = (a / W[:, j].abs().sum() + a / W[i, :].abs().sum()) * norms[j] ** 0.5
    torch.testing.assert_close(ria_score(W, norms, 0.5), want)


@pytest.mark.parametrize("group", ["matrix", "row"])
def test_ria_unstructured_prunes_exact_counts(layer, group):
    W, _, stats = layer
    r = prune_ria(W, stats.col_norms(), sparsity=0.3, group=group)
    if group == "row":
        assert ((~r.mask).sum(1) == int(0.3 * 64)).all()
    else:
        assert int((~r.mask).sum()) == int(0.3 * W.numel())
    assert torch.equal(r.weight == 0, ~r.mask)


@pytest.mark.parametrize("permute", [False, True])
def test_ria_n_m_keeps_the_pattern(layer, permute):
    W, _, stats = layer
    r = prune_ria(W, stats.col_norms(), pattern=(2, 4), permute=permute)
    score = ria_score(W, stats.col_norms())
    plain = keep_mask(score, pattern=(2, 4))
    if permute:
        perm = reallocate_channels(score, 4)
        in_order = r.mask if torch.equal(r.mask, plain) else r.mask[:, perm]
        assert (score * r.mask).sum() >= (score * plain).sum()
    else:
        in_order = r.mask
        assert torch.equal(r.mask, plain)
    assert (in_order.reshape(48, 16, 4).sum(-1) == 2).all()


def test_ria_reallocation_is_a_permutation_spreading_importance():
    score = torch.arange(16.0).repeat(3, 1)  # column j has importance j
    perm = reallocate_channels(score, 4)
    assert sorted(perm.tolist()) == list(range(16))
    groups = perm.reshape(4, 4)  # each M-group holds one column of each importance band
    assert all(sorted(int(c) // 4 for c in g) == [0, 1, 2, 3] for g in groups)


# ------------------------------------------------------------------ DSnoT
@pytest.mark.parametrize("init", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_dsnot_keeps_counts_and_never_worsens_the_layer_loss(layer, init, pattern):
    W, _, stats = layer
    H = stats.hessian()
    kw = {"pattern": pattern} if pattern else {"sparsity": 0.5}
    start = prune_dsnot(W, stats.col_norms(), stats.mean(), stats.var(), H, init=init, max_cycles=0, **kw)
    refined = prune_dsnot(W, stats.col_norms(), stats.mean(), stats.var(), H, init=init, **kw)
    if pattern:
        assert (refined.mask.reshape(48, 16, 4).sum(-1) == 2).all()
    else:
        assert ((~refined.mask).sum(1) == 32).all()
    before, after = row_losses(W, start.mask, H), row_losses(W, refined.mask, H)
    assert (after <= before + 1e-6).all()
    assert refined.loss == pytest.approx(float(after.sum()), rel=1e-5)
    assert refined.loss <= start.loss + 1e-6
    assert torch.equal(refined.weight, W.masked_fill(~refined.mask, 0))


def test_dsnot_swaps_shrink_the_expected_error_without_flipping_its_sign(layer):
    W, _, stats = layer
    mean, var = stats.mean(), stats.var()
    wanda = W.abs() * stats.col_norms()
    keep = keep_mask(wanda, sparsity=0.5, group="row")
    out = refine_dsnot(W, keep, mean, var, wanda, threshold=0.0)  # no H: the swaps alone
    err0 = (W * mean).masked_fill(keep, 0).sum(1)
    err1 = (W * mean).masked_fill(out.mask, 0).sum(1)
    changed = (out.mask != keep).any(1)
    assert changed.any()
    assert (err1[changed].abs() < err0[changed].abs()).all()
    assert (torch.sign(err1[changed]) == torch.sign(err0[changed])).all()
    assert torch.equal((~out.mask).sum(1), (~keep).sum(1))


def test_dsnot_with_zero_cycles_is_its_initial_mask(layer):
    W, _, stats = layer
    r = prune_dsnot(W, stats.col_norms(), stats.mean(), stats.var(), stats.hessian(), sparsity=0.5, max_cycles=0)
    assert torch.equal(r.mask, keep_mask(W.abs() * stats.col_norms(), sparsity=0.5, group="row"))


def test_new_methods_compress_a_tiny_model_end_to_end(tiny_llama):
    from kick_models.compression import compress_model

    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    for args in ({"method": "awq", "group_size": 32}, {"method": "rtn", "group_size": 32},
                 {"method": "ria", "pattern": "2:4"}, {"method": "dsnot", "sparsity": 0.5},
                 {"method": "dsnot", "sparsity": 0.5, "wbits": 4, "group_size": 32}):
        model = tiny_llama()
        config = build_config(args)
        summary = compress_model(model, config, ids if config.needs_calibration else None)
        assert summary["method"] == args["method"]
        assert summary["achieved_sparsity"] >= config.target_sparsity - 1e-9
        with torch.no_grad():
            assert torch.isfinite(model(ids).logits).all()
