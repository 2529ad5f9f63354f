import copy

import pytest
import torch
from torch import nn

from kick_models.compression import compress_model
from kick_models.compression.blocks import find_decoder_blocks
from kick_models.compression.loop import LoopOptions, run_layerwise
from kick_models.config import build_config


def ids(n=6, seq=32, seed=0):
    return torch.randint(0, 128, (n, seq), generator=torch.Generator().manual_seed(seed))


def test_identity_loop_reproduces_hidden_states(tiny_llama):
    model = tiny_llama()
    calib = ids()
    captured = []
    handle = model.model.layers[-1].register_forward_hook(
        lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(calib, use_cache=False)
    handle.remove()
    result = run_layerwise(model, calib, lambda *a: False, LoopOptions(norms=True, batch_size=4, keep_outputs=True))
    torch.testing.assert_close(torch.cat(result.outputs), captured[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "args",
    [
        {"method": "magnitude", "sparsity": 0.5},
        {"method": "wanda", "sparsity": 0.5},
        {"method": "sparsegpt", "sparsity": 0.5},
        {"method": "wanda", "pattern": "2:4"},
        {"method": "sparsegpt", "pattern": "4:8"},
        {"method": "wanda", "sparsity": 0.5, "propagate": "dense"},
    ],
)
def test_compress_model_sparsity_and_untouched_modules(tiny_llama, args):
    model = tiny_llama()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "layers" not in k or "norm" in k}
    config = build_config({**args, "nsamples": 6, "seqlen": 32})
    summary = compress_model(model, config, ids())
    assert summary["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert summary["layers"] == 3 * 7
    for k, v in model.state_dict().items():  # embeddings, norms, tied lm_head unchanged
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    if config.pattern:
        n, m = config.pattern
        for layer in model.model.layers:
            for lin in (mod for mod in layer.modules() if isinstance(mod, nn.Linear)):
                w = lin.weight.reshape(lin.out_features, -1, m)
                assert ((w != 0).sum(-1) <= n).all()


def test_same_seed_bit_identical(tiny_llama):
    config = build_config({"method": "sparsegpt", "sparsity": 0.5})
    a, b = tiny_llama(), tiny_llama()
    compress_model(a, config, ids())
    compress_model(b, config, ids())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_noop_and_sparsity_zero(tiny_llama):
    from kick_models.config import CompressionConfig

    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    # build_config refuses this no-op (tests/models/test_refusals.py); the engine must still leave weights alone
    summary = compress_model(model, CompressionConfig(method="wanda", sparsity=0.0), None)
    assert summary["achieved_sparsity"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_owl_keeps_mean_sparsity(tiny_llama):
    model = tiny_llama(layers=4)
    config = build_config({"method": "wanda", "sparsity": 0.5, "sparsity_profile": "owl", "owl_lambda": 0.1})
    summary = compress_model(model, config, ids())
    per_block = summary["block_sparsity"]
    assert len(per_block) == 4 and max(per_block) - min(per_block) > 0.05
    assert sum(per_block) / 4 == pytest.approx(0.5, abs=1e-9)
    assert summary["achieved_sparsity"] == pytest.approx(0.5, abs=1 / 64)  # ⌊s·in⌋ per row, in = 64


def test_bf16_model(tiny_llama):
    model = tiny_llama(dtype=torch.bfloat16)
    summary = compress_model(model, build_config({"method": "sparsegpt", "pattern": "2:4"}), ids())
    assert summary["achieved_sparsity"] >= 0.5
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_bad_inputs(tiny_llama):
    with pytest.raises(ValueError, match="no decoder blocks"):
        find_decoder_blocks(nn.Sequential(nn.Embedding(4, 4), nn.LayerNorm(4)))
    model = tiny_llama()
    with pytest.raises(ValueError, match="needs calibration"):
        compress_model(model, build_config({"method": "wanda", "sparsity": 0.5}), None)
    with pytest.raises(ValueError, match="nsamples > 0"):
        run_layerwise(model, torch.zeros(0, 8, dtype=torch.long), lambda *a: False)


@pytest.mark.parametrize("args", [{"method": "gptq", "wbits": 4}, {"method": "wanda", "pattern": "2:4", "wbits": 4}])
def test_quantization_goes_through_gptq_and_keeps_zeros(tiny_llama, args):
    model = tiny_llama()
    config = build_config({**args, "group_size": 32})
    summary = compress_model(model, config, ids())
    w = model.model.layers[1].mlp.down_proj.weight
    for row in w[:4]:  # at most 2^4 levels per 32-column group
        assert all(len(g.unique()) <= 16 for g in row.split(32))
    if config.prunes:
        assert summary["achieved_sparsity"] >= 0.5
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()


class _TupleBlock(nn.Module):
    """An older-style block: keyword argument in, tuple out."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x, scale=None):
        return (x + scale * self.fc2(torch.relu(self.fc1(x))), None)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(128, 16)
        self.stack = nn.ModuleList(_TupleBlock() for _ in range(3))
        self.head = nn.Linear(16, 128)

    def forward(self, ids, use_cache=False):
        x = self.embed(ids)
        for block in self.stack:
            x = block(x, scale=torch.tensor(0.5))[0]
        return x


def test_generic_blocks_tuple_outputs_and_kwargs():
    model = _Toy()
    assert find_decoder_blocks(model) is model.stack
    calib = ids()
    with torch.no_grad():
        expected = model(calib)
    result = run_layerwise(model, calib, lambda *a: False, LoopOptions(batch_size=4, keep_outputs=True))
    torch.testing.assert_close(torch.cat(result.outputs), expected, rtol=0, atol=1e-6)
    head = model.head.weight.clone()
    summary = compress_model(model, build_config({"method": "wanda", "sparsity": 0.5}), calib)
    assert summary["layers"] == 6 and summary["achieved_sparsity"] == pytest.approx(0.5)
    assert torch.equal(model.head.weight, head)


def test_quant_grids_cover_every_layer_and_reproduce_its_weights(tiny_llama):
    """What a packed GPTQ export reads: one grid per decoder Linear, under its module name, on which
    the weights written into the model lie exactly (and the 2:4 zeros stay zeros)."""
    model = tiny_llama()
    config = build_config({"method": "sparsegpt", "pattern": "2:4", "wbits": 4, "group_size": 32})
    grids = {}
    compress_model(model, config, ids(), quant_grids=grids)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in name}
    assert set(grids) == set(linears) and len(grids) == 3 * 7
    for name, layer in linears.items():
        grid, w = grids[name], layer.weight.detach()
        cols = grid.g_idx.long()
        assert grid.scales.shape == (w.shape[0], w.shape[1] // 32)
        scale, zero = grid.scales[:, cols], grid.zeros[:, cols]
        codes = torch.round(w / scale + zero)
        assert codes.min() >= 0 and codes.max() <= 15, name
        torch.testing.assert_close(scale * (codes - zero), w, rtol=0, atol=1e-6)
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name


def test_pruning_alone_keeps_no_grids(tiny_llama):
    grids = {}
    compress_model(tiny_llama(), build_config({"method": "wanda", "sparsity": 0.5}), ids(), quant_grids=grids)
    assert grids == {}


@pytest.mark.parametrize("true_sequential", [False, True])
def test_true_sequential_refits_later_groups_to_compressed_inputs(tiny_llama, true_sequential):
    """Zeroing v_proj makes attention output zero: with true_sequential the o_proj group's statistics
    must see that (XᵀX = 0); without, they come from the dense block (XᵀX ≠ 0)."""
    model = tiny_llama()
    calls = []

    def compress_block(index, block, linears, groups):
        for group in groups:
            calls.append((index, list(group.names), float(group.stats.hessian().abs().max())
                          if group.names == ["self_attn.o_proj"] else None))
            if "self_attn.v_proj" in group.names:
                linears["self_attn.v_proj"].view().zero_()
        return True

    run_layerwise(model, ids(), compress_block, LoopOptions(norms=False, hessian=True, true_sequential=true_sequential))
    block0 = [c for c in calls if c[0] == 0]
    assert [names for _, names, _ in block0] == [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                                 ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"],
                                                 ["mlp.down_proj"]]
    o_hessians = [h for _, names, h in calls if h is not None]
    assert len(o_hessians) == 3
    if true_sequential:
        assert all(h == 0 for h in o_hessians)
    else:
        assert all(h > 0 for h in o_hessians)


def test_true_sequential_is_recorded_and_keeps_exact_sparsity(tiny_llama):
    args = {"method": "sparsegpt", "pattern": "2:4", "wbits": 4, "group_size": 32}
    config = build_config({**args, "true_sequential": "true"})
    model, plain = tiny_llama(), tiny_llama()
    summary = compress_model(model, config, ids())
    compress_model(plain, build_config(args), ids())
    assert config.to_dict()["true_sequential"] is True
    assert summary["achieved_sparsity"] >= 0.5  # a kept weight may also round to 0
    for layer in model.model.layers:
        w = layer.mlp.down_proj.weight
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    # q/k/v (first group) are fitted on the same inputs either way; later groups are refitted
    first, later = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert torch.equal(first.q_proj.weight, plain.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(later.down_proj.weight, plain.model.layers[0].mlp.down_proj.weight)
