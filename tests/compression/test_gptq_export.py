"""Packed GPTQ export: a clear install hint without gptqmodel; a lossless pack when it is installed."""

import pytest
import torch

from kick_models.compression.gptq import quantize_gptq


def _layer(bits, group_size, sym=False):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 96, generator=g)
    X = torch.randn(400, 96, generator=g)
    return quantize_gptq(W, 2 * X.T @ X / 400, bits=bits, group_size=group_size, sym=sym)


def test_missing_gptqmodel_names_the_extra(no_gptqmodel):
    from kick_models import export_gptq

    r = _layer(4, 32)
    with pytest.raises(ImportError, match=r"pip install kick\[gptq-export\]"):
        export_gptq.pack_linear(r.weight, None, r, bits=4, group_size=32, sym=False)


@pytest.mark.parametrize("bits, group_size, sym", [(4, 32, False), (8, -1, False), (3, 32, True), (2, 32, False)])
def test_pack_round_trips_through_gptqmodel(bits, group_size, sym):
    pytest.importorskip("gptqmodel")
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module

    from kick_models.export_gptq import pack_linear

    r = _layer(bits, group_size, sym)
    packed = pack_linear(r.weight, None, r, bits=bits, group_size=group_size, sym=sym)
    assert packed["qweight"].shape == (96 * bits // 32, 64) and packed["qweight"].dtype == torch.int32
    layer = TorchLinear(
        bits=bits, group_size=group_size if group_size != -1 else 96, sym=sym, desc_act=False,
        in_features=96, out_features=64, bias=False, register_buffers=True,
    )
    layer.load_state_dict(packed, strict=False)
    convert_gptq_v1_to_v2_format_module(layer, bits=bits, pack_dtype=torch.int32)
    restored = layer.dequantize_weight().T.float()
    # only the fp16 rounding of the scales separates the two
    assert torch.allclose(restored, r.weight, rtol=2e-3, atol=1e-4)


def test_checkpoint_loads_back_in_gptqmodel(tmp_path, smol_path):
    pytest.importorskip("gptqmodel")
    from gptqmodel import GPTQModel
    from transformers import AutoTokenizer

    from kick_models.export_gptq import save_gptq_checkpoint
    from kick_testlib.tiny_models import tiny_llama

    model = tiny_llama(0, layers=2, vocab_size=256, tie_word_embeddings=False)
    results = {}
    for name, layer in model.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.startswith("model.layers"):
            X = torch.randn(256, layer.in_features)
            results[name] = quantize_gptq(layer.weight.data, 2 * X.T @ X / 256, bits=4, group_size=32)
            layer.weight.data.copy_(results[name].weight)
    ids = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        expected = model(ids).logits
    tokenizer = AutoTokenizer.from_pretrained(smol_path)  # gptqmodel insists on a tokenizer
    save_gptq_checkpoint(model, results, tmp_path, bits=4, group_size=32, sym=False, tokenizer=tokenizer)
    loaded = GPTQModel.load(str(tmp_path), device="cpu").model
    with torch.no_grad():
        got = loaded(ids).logits.float()
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()  # fp16 checkpoint
