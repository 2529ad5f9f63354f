"""kick-hf's dense-vs-compressed fidelity on held-out text: top-k KL with a rest bucket, agreement, cache hits."""

from __future__ import annotations

import math

import pytest
import torch

from kick_models import fidelity


def test_topk_kl_with_rest_bucket_on_known_distributions():
    p = torch.tensor([0.5, 0.3, 0.1, 0.1])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    # k = 2: buckets (0.5, 0.3, rest 0.2) vs (0.25, 0.25, rest 0.5)
    top = torch.tensor([[0, 1]])
    p_tail, q_tail = fidelity.tail_logp(p.log()[None], top), fidelity.tail_logp(q.log()[None], top)
    assert p_tail.exp().item() == pytest.approx(0.2) and q_tail.exp().item() == pytest.approx(0.5)
    kl = fidelity.topk_kl(p[:2].log()[None], p_tail, q[:2].log()[None], q_tail)
    expected = 0.5 * math.log(2.0) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert kl.item() == pytest.approx(expected)
    full = float((p * (p / q).log()).sum())
    assert kl.item() <= full + 1e-12  # the coarser partition is a lower bound (log-sum inequality)
    none = torch.tensor([float("-inf")])  # k = vocabulary: no rest, the exact KL
    assert fidelity.topk_kl(p.log()[None], none, q.log()[None], none).item() == pytest.approx(full)
    assert fidelity.topk_kl(p[:2].log()[None], p_tail, p[:2].log()[None], p_tail).item() == 0.0


def _lm(tiny_llama_dir, tmp_path, **args):
    from kick_models.lm import KickHFLM

    return KickHFLM(pretrained=str(tiny_llama_dir), dtype="float32", batch_size=1, cache_dir=str(tmp_path / "cache"), **args)


def test_method_none_gives_kl_zero_and_agreement_one(tiny_llama_dir, tmp_path):
    lm = _lm(tiny_llama_dir, tmp_path)
    fid = lm.get_model_info()["kick"]["result"]["fidelity"]
    assert fid["kl_mean"] == 0.0 and fid["top1_agreement"] == 1.0
    assert fid["ppl_dense"] == fid["ppl_compressed"]
    assert fid["tokens"] == fidelity.FIDELITY_TOKENS and fid["top_k"] == fidelity.TOP_K


def test_compressed_fidelity_is_stored_with_the_cache_entry(tiny_llama_dir, tmp_path):
    first = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.5)
    result = first.get_model_info()["kick"]["result"]
    fid = result["fidelity"]
    assert result["cache"]["hit"] is False
    assert fid["kl_mean"] > 0.0 and fid["top1_agreement"] < 1.0
    assert fid["ppl_compressed"] != fid["ppl_dense"]
    # against a recomputation by hand: the KL of the compressed model vs a fresh dense reference
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    windows = fidelity.fidelity_windows(first.tokenizer, max_length=first.max_length)
    again = fidelity.compare(first.model, fidelity.dense_reference(dense, windows), windows)
    assert again["kl_mean"] == pytest.approx(fid["kl_mean"], rel=1e-6)
    assert again["ppl_dense"] == pytest.approx(fid["ppl_dense"], rel=1e-6)

    (stored,) = (tmp_path / "cache" / "fidelity").glob("*.safetensors")  # the dense reference, for the next cells
    reference, problem = fidelity.load_reference(stored)
    assert problem is None and torch.equal(reference.top_ids, fidelity.dense_reference(dense, windows).top_ids)
    other = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.3)
    assert 0.0 < other.get_model_info()["kick"]["result"]["fidelity"]["kl_mean"] < fid["kl_mean"]

    hit = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.5)
    result = hit.get_model_info()["kick"]["result"]
    assert result["cache"]["hit"] is True
    verified = result["fidelity"].pop("verified")  # the hit re-measured its first window
    assert result["fidelity"] == fid
    assert verified["window"] == 0 and verified["kl"] == pytest.approx(fid["kl_windows"][0], rel=1e-6, abs=1e-9)


def test_a_cache_entrys_fidelity_from_the_old_kl_formula_is_measured_again(tiny_llama_dir, tmp_path):
    import json

    first = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.5)
    fid = first.get_model_info()["kick"]["result"]["fidelity"]
    assert fid["kl_format"] == fidelity.KL_FORMAT
    (manifest,) = (tmp_path / "cache").glob("*/manifest.json")
    data = json.loads(manifest.read_text())
    stale = {k: v for k, v in data["summary"]["fidelity"].items() if k != "kl_format"}
    data["summary"]["fidelity"] = {**stale, "kl_mean": 123.0}  # what an older kick-hf stored
    manifest.write_text(json.dumps(data))
    again = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.5).get_model_info()["kick"]["result"]
    assert again["cache"]["hit"] is True
    assert again["fidelity"]["kl_mean"] == pytest.approx(fid["kl_mean"], rel=1e-6)  # re-measured, not 123
    for path in (tmp_path / "cache" / "fidelity").glob("*.safetensors"):
        path.unlink()  # no dense reference cached: it is taken from the dense model before the hit loads
    manifest.write_text(json.dumps(data))
    measured = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.5).get_model_info()["kick"]["result"]
    assert measured["cache"]["hit"] is True and measured["fidelity"]["kl_mean"] == pytest.approx(fid["kl_mean"], rel=1e-6)
    assert list((tmp_path / "cache" / "fidelity").glob("*.safetensors"))


def test_fidelity_false_skips_the_measurement(tiny_llama_dir, tmp_path):
    lm = _lm(tiny_llama_dir, tmp_path, method="magnitude", sparsity=0.3, fidelity=False, no_cache=True)
    assert "fidelity" not in lm.get_model_info()["kick"]["result"]
