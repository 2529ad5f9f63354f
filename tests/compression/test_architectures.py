"""Beyond a plain Llama stack: fused mixture-of-experts (Mixtral, Qwen3-MoE), older per-expert
Linear experts, GPT-2 Conv1D, mixed layer types (Gemma 3, Qwen2 sliding layers) and a
multimodal Gemma 3 whose vision tower is larger than its text model. Tiny random models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kick_models.compression import compress_model
from kick_models.compression.blocks import block_layout, find_decoder_blocks
from kick_models.compression.capture import capture_block_inputs
from kick_models.compression.loop import LoopOptions, run_layerwise
from kick_models.config import build_config


def ids(n=6, seq=32, seed=0, vocab=128):
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def mixtral(top_k=2, seed=0):
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    return MixtralForCausalLM(MixtralConfig(
        vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=top_k, tie_word_embeddings=True,
    )).eval()


def qwen3_moe(seed=0):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    return Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
        decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=True,
    )).eval()


GEMMA_TEXT = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                  "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 8,
                  "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}


def gemma3_text(seed=0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    return Gemma3ForCausalLM(Gemma3TextConfig(**GEMMA_TEXT)).eval()


def gemma3_multimodal(seed=0):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 5, "num_attention_heads": 2,
                  "image_size": 32, "patch_size": 8}  # 5 vision layers > 3 text layers
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=GEMMA_TEXT, vision_config=vision,
                                                       mm_tokens_per_image=4)).eval()


def qwen2_sliding(seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, use_sliding_window=True, sliding_window=8, max_window_layers=1,
        layer_types=["full_attention", "sliding_attention", "sliding_attention"],
    )).eval()


MOE = {"mixtral": mixtral, "qwen3_moe": qwen3_moe}
METHODS = [
    {"method": "magnitude", "sparsity": 0.5},
    {"method": "wanda", "sparsity": 0.5},
    {"method": "sparsegpt", "pattern": "2:4"},
    {"method": "gptq", "wbits": 4, "group_size": 16},
    {"method": "sparsegpt", "pattern": "2:4", "wbits": 4, "group_size": 16},
]


def expert_views(model):
    """(name, [out, in] matrix) of every expert projection, by hand from the fused parameters."""
    for i, layer in enumerate(model.model.layers):
        experts = layer.mlp.experts
        inter = experts.down_proj.shape[-1]
        for e in range(experts.gate_up_proj.shape[0]):
            yield f"{i}.gate[{e}]", experts.gate_up_proj[e, :inter]
            yield f"{i}.up[{e}]", experts.gate_up_proj[e, inter:]
            yield f"{i}.down[{e}]", experts.down_proj[e]


def block_matrix_zeros(model) -> float:
    """Zero fraction over every >= 2-D parameter of the decoder blocks (independent count)."""
    params = [p for layer in find_decoder_blocks(model) for p in layer.parameters() if p.dim() >= 2]
    return sum(int((p == 0).sum()) for p in params) / sum(p.numel() for p in params)


@pytest.mark.parametrize("args", METHODS, ids=lambda a: "-".join(str(v) for v in a.values()))
@pytest.mark.parametrize("arch", list(MOE))
def test_moe_every_expert_compressed(arch, args):
    model = MOE[arch]()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "experts" not in k and "proj" not in k}
    assert any(".gate." in k for k in frozen)  # the router is among the frozen tensors
    config = build_config({**args, "nsamples": 6, "seqlen": 32})
    summary = compress_model(model, config, ids())
    for k, v in model.state_dict().items():  # router, embeddings, norms: bit-identical
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    for name, w in expert_views(model):
        if config.pattern is not None:
            groups = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
            assert (groups >= 2).all(), name
        elif config.prunes:
            assert int((w == 0).sum()) == w.numel() // 2, name
        if config.quantizes:
            for row in w:
                assert all(len(g.unique()) <= 2 ** config.wbits for g in row.split(16)), name
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)
    kinds = summary["matrices"]["by_kind"]
    assert kinds["compressed expert"]["matrices"] == 2 * 4 * 3
    assert kinds["dense router (never compressed)"]["matrices"] == 2
    assert "no_calibration_tokens" not in summary


def _hand_routed(model, calib, layer=0):
    """Per-expert (tokens, H of gate/up input, H of down input) of one layer, with the router's
    softmax-top-k computed by hand on the MoE block's input from a real forward."""
    moe = model.model.layers[layer].mlp
    seen = []
    handle = moe.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        model(calib, use_cache=False)
    handle.remove()
    x = seen[0].double()
    probs = torch.softmax(x @ moe.gate.weight.double().T, dim=-1)
    chosen = probs.topk(moe.gate.top_k, dim=-1).indices
    experts = moe.experts
    inter = experts.down_proj.shape[-1]
    out = {}
    for e in range(experts.gate_up_proj.shape[0]):
        xe = x[(chosen == e).any(-1)]
        gu = experts.gate_up_proj[e].double()
        h = F.silu(xe @ gu[:inter].T) * (xe @ gu[inter:].T)
        out[e] = (xe.shape[0], 2 * xe.T @ xe / xe.shape[0], 2 * h.T @ h / h.shape[0])
    return out


@pytest.mark.parametrize("arch", list(MOE))
def test_per_expert_statistics_match_routing_by_hand(arch):
    model = MOE[arch]()
    calib = ids(n=4)
    expected = _hand_routed(model, calib)
    got = {}

    def record(index, block, linears, groups):
        if index == 0:
            for g in groups:
                if g.expert is not None:
                    got[(g.expert[1], g.expert[2])] = (g.stats.tokens, g.stats.hessian(), g.names)
        return False

    run_layerwise(model, calib, record, LoopOptions(norms=False, hessian=True, batch_size=2))
    assert sum(n for n, _, _ in expected.values()) == calib.numel() * 2  # top-2: two experts per token
    for e, (n, h_in, h_down) in expected.items():
        tokens, H, names = got[(e, "in")]
        assert tokens == n and names == [f"mlp.experts.gate_up_proj[{e}].gate", f"mlp.experts.gate_up_proj[{e}].up"]
        torch.testing.assert_close(H.double(), h_in, rtol=1e-4, atol=1e-5)
        tokens, H, names = got[(e, "down")]
        assert tokens == n and names == [f"mlp.experts.down_proj[{e}]"]
        torch.testing.assert_close(H.double(), h_down, rtol=1e-4, atol=1e-6)


def test_expert_without_tokens_is_compressed_data_free_and_reported():
    model = mixtral(top_k=1)
    router = model.model.layers[0].mlp.gate.weight
    with torch.no_grad():  # logits (a, -a, 0, 0): experts 2 and 3 of layer 0 can never win
        router[1] = -router[0]
        router[2:] = 0
    dense = copy.deepcopy(model.model.layers[0].mlp.experts)
    summary = compress_model(model, build_config({"method": "wanda", "sparsity": 0.5}), ids())
    report = summary["no_calibration_tokens"]
    assert report["count"] == 2 * 3
    assert sorted(report["matrices"]) == sorted(
        f"model.layers.0.mlp.experts.{p}" for e in (2, 3)
        for p in (f"gate_up_proj[{e}].gate", f"gate_up_proj[{e}].up", f"down_proj[{e}]"))
    experts = model.model.layers[0].mlp.experts
    for e in (2, 3):  # unit input norms: Wanda is row-wise magnitude
        w0, w = dense.down_proj[e], experts.down_proj[e]
        cut = w0.abs().kthvalue(w0.shape[1] // 2, dim=1, keepdim=True).values
        assert torch.equal(w == 0, w0.abs() <= cut)
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)


def test_skip_experts_leaves_them_dense_and_says_so():
    model = mixtral()
    before = model.model.layers[1].mlp.experts.down_proj.clone()
    config = build_config({"method": "magnitude", "sparsity": 0.5, "skip_experts": "true"})
    summary = compress_model(model, config, None)
    assert torch.equal(model.model.layers[1].mlp.experts.down_proj, before)
    assert summary["skip_experts"] is True and config.to_dict()["skip_experts"] is True
    assert summary["matrices"]["by_kind"]["dense expert"]["matrices"] == 24
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)
    assert summary["achieved_sparsity"] < 0.15


class _OddExperts(nn.Module):
    """Experts in a layout kick does not know: one 3-D parameter, no dispatch attributes."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 64, 64) * 0.02)

    def forward(self, x):
        return x


class _Scaled(nn.Module):
    """A block-level matrix that is not a Linear (a learned 2-D table)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(8, 64))

    def forward(self, x):
        return x


@pytest.mark.parametrize("extra,skip,message", [
    (_Scaled, False, r"1 matrices of unsupported types .*0\.mlp\.odd\.table \(_Scaled \(8, 64\)\)"),
    (_OddExperts, False, r"fused expert weights of an unknown layout .*skip_experts=true"),
])
def test_unsupported_matrices_refused_before_calibration(tiny_llama, extra, skip, message):
    model = tiny_llama()
    model.model.layers[0].mlp.odd = extra()
    calls = []
    model.model.embed_tokens.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=message):
        compress_model(model, build_config({"method": "wanda", "sparsity": 0.5}), ids())
    assert not calls  # no calibration forward ran


def test_unknown_expert_layout_with_skip_experts_is_counted_dense(tiny_llama):
    model = tiny_llama()
    model.model.layers[0].mlp.odd = _OddExperts()
    summary = compress_model(model, build_config({"method": "wanda", "sparsity": 0.5, "skip_experts": True}), ids())
    assert summary["matrices"]["by_kind"]["dense experts of an unknown layout (skip_experts)"]["params"] == 4 * 64 * 64
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)


# ------------------------------------------------------------------ older per-expert Linear layout
class _LinearMoe(nn.Module):
    """transformers-4.x-style sparse MoE: a Linear router and one MLP of Linears per expert."""

    def __init__(self, hidden=32, inter=64, n=4, k=1):
        super().__init__()
        self.gate = nn.Linear(hidden, n, bias=False)
        self.experts = nn.ModuleList(
            nn.ModuleDict({"w1": nn.Linear(hidden, inter, bias=False), "w2": nn.Linear(inter, hidden, bias=False),
                           "w3": nn.Linear(hidden, inter, bias=False)}) for _ in range(n))
        self.k = k

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        top = self.gate(flat).softmax(-1).topk(self.k, -1)
        out = torch.zeros_like(flat)
        for e, ex in enumerate(self.experts):
            rows, slot = torch.where(top.indices == e)
            if rows.numel():
                h = ex["w2"](F.silu(ex["w1"](flat[rows])) * ex["w3"](flat[rows]))
                out.index_add_(0, rows, h * top.values[rows, slot, None])
        return x + out.reshape(x.shape)


class _LinearMoeModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(128, 32)
        self.layers = nn.ModuleList(nn.ModuleDict({"attn": nn.Linear(32, 32), "mlp": _LinearMoe()}) for _ in range(2))
        with torch.no_grad():  # expert 3 of layer 0 gets no token: its logit is always 0 < max
            r = self.layers[0]["mlp"].gate.weight
            r[1], r[2], r[3] = -r[0], 0, 0
        for layer in self.layers:
            layer.forward = lambda x, layer=layer: layer["mlp"](layer["attn"](x))

    def forward(self, ids, use_cache=False):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return x


def test_older_per_expert_linear_layout():
    model = _LinearMoeModel()
    routers = [layer["mlp"].gate.weight.clone() for layer in model.layers]
    layout = block_layout(model.layers[0])
    assert list(layout.routers) == ["mlp.gate.weight"] and "mlp.gate" not in layout.matrices
    summary = compress_model(model, build_config({"method": "sparsegpt", "pattern": "2:4"}), ids())
    for layer, router in zip(model.layers, routers):
        assert torch.equal(layer["mlp"].gate.weight, router)
        for ex in layer["mlp"].experts:
            for lin in ex.values():
                assert ((lin.weight.reshape(lin.out_features, -1, 4) == 0).sum(-1) == 2).all()
    assert sorted(summary["no_calibration_tokens"]["matrices"]) == [
        f"layers.0.mlp.experts.{e}.{w}" for e in (2, 3) for w in ("w1", "w2", "w3")]
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)


# ------------------------------------------------------------------ GPT-2 Conv1D
def test_gpt2_conv1d_blocks_are_compressed_as_transposed_linears():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    dense = copy.deepcopy(model)
    calib = ids()
    norms = {}
    seen = {}
    c_fc = dense.transformer.h[0].mlp.c_fc
    c_fc.register_forward_pre_hook(lambda m, a: seen.update(x=a[0].reshape(-1, 32)))
    with torch.no_grad():
        dense(calib)
    norms["c_fc"] = seen["x"].norm(dim=0)
    summary = compress_model(model, build_config({"method": "wanda", "pattern": "2:4"}), calib)
    w = model.transformer.h[0].mlp.c_fc.weight.T  # [out, in]
    assert ((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all()
    score = (c_fc.weight.T.abs() * norms["c_fc"][None, :]).reshape(w.shape[0], -1, 4)
    keep = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, score.topk(2, dim=-1).indices, True)
    assert torch.equal(w != 0, keep.reshape(w.shape))
    assert summary["matrices"]["by_kind"]["compressed conv1d"]["matrices"] == 2 * 4
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)


@pytest.mark.parametrize("args", [{"method": "sparsegpt", "sparsity": 0.5}, {"method": "gptq", "wbits": 4, "group_size": 16}])
def test_gpt2_conv1d_with_hessian_methods(args):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    config = build_config(args)
    summary = compress_model(model, config, ids())
    for block in model.transformer.h:
        for conv in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            w = conv.weight.T  # [out, in]
            if config.prunes:
                assert int((w == 0).sum()) == w.numel() // 2
            else:
                assert all(len(g.unique()) <= 16 for row in w for g in row.split(16))
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)


# ------------------------------------------------------------------ per-block keyword arguments
def _real_block_calls(model, calib):
    blocks = find_decoder_blocks(model)
    calls = []
    handles = [b.register_forward_pre_hook(lambda m, a, k, i=i: calls.append((i, a, dict(k))), with_kwargs=True)
               for i, b in enumerate(blocks)]
    with torch.no_grad():
        model(calib, use_cache=False)
    for h in handles:
        h.remove()
    return blocks, calls


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("build", [gemma3_text, qwen2_sliding, gemma3_multimodal])
def test_every_block_gets_the_kwargs_of_the_real_forward(build):
    model = build()
    calib = ids(n=2, seq=24)
    blocks, real = _real_block_calls(model, calib)
    captured = capture_block_inputs(model, blocks, calib, 2, torch.device("cpu"))
    assert len(captured) == 1 and len(captured[0].calls) == len(blocks)
    masks = []
    for i, args, kwargs in real:
        got_args, got_kwargs = captured[0].calls[i]
        assert _same(got_args, args[1:]), i
        for key, value in kwargs.items():
            if key in ("past_key_values", "past_key_value", "use_cache", "hidden_states"):
                continue
            assert _same(got_kwargs[key], value), (i, key)
        masks.append(kwargs.get("attention_mask"))
    assert not _same(masks[0], masks[1])  # the model really mixes two kinds of layers
    assert any(key.startswith("position_embeddings") for key in captured[0].calls[0][1]) or build is qwen2_sliding


@pytest.mark.parametrize("build", [gemma3_text, qwen2_sliding])
def test_loop_hidden_states_follow_the_real_forward(build):
    model = build()
    calib = ids(n=4, seq=24)
    blocks = find_decoder_blocks(model)
    outs = []
    handle = blocks[-1].register_forward_hook(lambda m, a, out: outs.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(calib, use_cache=False)
    handle.remove()
    result = run_layerwise(model, calib, lambda *a: False, LoopOptions(batch_size=2, keep_outputs=True))
    torch.testing.assert_close(torch.cat(result.outputs), outs[0], rtol=0, atol=1e-5)


# ------------------------------------------------------------------ the language model of a multimodal model
def test_multimodal_gemma3_compresses_the_language_model_only():
    model = gemma3_multimodal()
    vision = {k: v.clone() for k, v in model.state_dict().items() if "vision" in k or "projector" in k}
    blocks = find_decoder_blocks(model)
    assert blocks is model.model.language_model.layers
    summary = compress_model(model, build_config({"method": "wanda", "sparsity": 0.5}), ids())
    for k, v in model.state_dict().items():
        if k in vision:
            assert torch.equal(v, vision[k]), k
    assert summary["achieved_sparsity"] == pytest.approx(block_matrix_zeros(model), abs=1e-12)
    assert math.isclose(summary["achieved_sparsity"], 0.5)


class _NoTextDecoder(nn.Module):
    """A multimodal-looking model that names no language model."""

    def __init__(self):
        super().__init__()
        self.config = type("Cfg", (), {"vision_config": {"hidden_size": 8}})()
        self.vision_tower = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.stacks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8)) for _ in range(2))


def test_no_text_decoder_is_refused():
    with pytest.raises(ValueError, match="no text decoder found in _NoTextDecoder"):
        find_decoder_blocks(_NoTextDecoder())


# ------------------------------------------------------------------ other fused-expert layouts of transformers 5.x
_BASE = {"vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
_OTHERS = {
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", {"intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {
        "intermediate_size": 64, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts": 4,
        "num_experts_per_tok": 2}),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", {  # stored [E, in, out], gate/up interleaved, with biases
        "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16}),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", {
        "intermediate_size": 64, "moe_intermediate_size": 32, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "n_shared_experts": 1, "first_k_dense_replace": 0, "n_group": 1, "topk_group": 1, "kv_lora_rank": 16,
        "q_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16}),
}


@pytest.mark.parametrize("arch", list(_OTHERS))
def test_other_fused_layouts_2_4_per_expert(arch):
    import transformers

    config_cls, model_cls, extra = _OTHERS[arch]
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**_BASE, **extra)).eval()
    routers = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("gate.weight", "router.weight"))}
    assert routers
    summary = compress_model(model, build_config({"method": "sparsegpt", "pattern": "2:4"}), ids())
    for k, v in model.state_dict().items():
        if k in routers:
            assert torch.equal(v, routers[k]), k
    for layer in model.model.layers:
        experts = layer.mlp.experts
        for name in ("gate_up_proj", "down_proj"):
            p = getattr(experts, name)
            w = p.transpose(1, 2) if experts.is_transposed else p  # [E, out, in]
            assert ((w.reshape(*w.shape[:2], -1, 4) == 0).sum(-1) == 2).all(), name
    params = [p for n, p in model.model.layers.named_parameters() if p.dim() >= 2 and not n.endswith("_bias")]
    independent = sum(int((p == 0).sum()) for p in params) / sum(p.numel() for p in params)
    assert summary["achieved_sparsity"] == pytest.approx(independent, abs=1e-12)


def test_true_sequential_refits_experts_in_call_order():
    model = mixtral()
    plain = copy.deepcopy(model)
    compress_model(plain, build_config({"method": "sparsegpt", "pattern": "2:4"}), ids())
    summary = compress_model(model, build_config({"method": "sparsegpt", "pattern": "2:4", "true_sequential": True}), ids())
    for name, w in expert_views(model):
        assert ((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all(), name
    # down_proj reads the compressed gate/up's activation, so its result differs from the one-pass run
    assert not torch.equal(model.model.layers[0].mlp.experts.down_proj, plain.model.layers[0].mlp.experts.down_proj)
    assert summary["matrices"]["compressed"] == 2 * (4 * 3 + 4)


def test_packed_grids_refused_for_fused_experts_before_calibration():
    model = mixtral()
    with pytest.raises(ValueError, match=r"packs nn.Linear layers only.*--format dense"):
        compress_model(model, build_config({"method": "gptq", "wbits": 4}), None, quant_grids={})
