"""Fused expert weights go through the compressed-weight cache and the kick-compress export like
any other matrix; the export loads in stock `hf` with the experts as compressed."""

from __future__ import annotations

import pytest
import torch

from kick_models import export

ARGS = {"method": "wanda", "sparsity": 0.5, "calib": "bundled", "nsamples": 4, "seqlen": 32, "dtype": "float32", "device": "cpu",
            "batch_size": 1}


@pytest.fixture(scope="module")
def tiny_mixtral_dir(tmp_path_factory):
    """A 2-layer, 64-wide random MixtralForCausalLM (4 fused experts, top-2) with the byte tokenizer."""
    from transformers import MixtralConfig, MixtralForCausalLM

    from kick_testlib.tiny_models import byte_tokenizer

    out = tmp_path_factory.mktemp("tiny_mixtral")
    tokenizer = byte_tokenizer()
    vocab = tokenizer.get_vocab()
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=512, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    MixtralForCausalLM(config).eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _experts(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "experts" in k}


def test_cache_round_trip_carries_expert_weights(tiny_mixtral_dir, tmp_path):
    from kick_models.lm import KickHFLM

    first = KickHFLM(pretrained=str(tiny_mixtral_dir), cache_dir=str(tmp_path / "c"), **ARGS)
    assert first._kick_summary["cache"]["hit"] is False
    experts = _experts(first.model)
    assert experts and all((v == 0).float().mean() == 0.5 for v in experts.values())
    second = KickHFLM(pretrained=str(tiny_mixtral_dir), cache_dir=str(tmp_path / "c"), **ARGS)
    assert second._kick_summary["cache"]["hit"] is True
    for k, v in _experts(second.model).items():
        assert torch.equal(v, experts[k]), k
    assert second._kick_summary["achieved_sparsity"] == first._kick_summary["achieved_sparsity"]
    assert second._kick_summary["matrices"] == first._kick_summary["matrices"]  # measured again, experts as compressed


def test_export_loads_in_stock_hf_with_compressed_experts(tiny_mixtral_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    from kick_models.lm import KickHFLM

    out = tmp_path / "exp"
    assert export.main(["--model", str(tiny_mixtral_dir), "--method", "wanda", "--sparsity", "0.5",
                        "--calib", "bundled", "--nsamples", "4", "--seqlen", "32", "--dtype", "float32",
                        "--no_cache", "--out", str(out)]) == 0
    kick = KickHFLM(pretrained=str(tiny_mixtral_dir), no_cache=True, **ARGS)
    stock = HFLM(pretrained=str(out), dtype="float32", device="cpu", batch_size=1)
    expected = kick.model.state_dict()
    got = stock.model.state_dict()
    assert set(got) == set(expected)
    for k, v in got.items():
        assert torch.equal(v, expected[k]), k
    ids = torch.arange(20)[None, :]
    with torch.no_grad():
        torch.testing.assert_close(stock.model(ids).logits, kick.model(ids).logits, rtol=0, atol=0)
