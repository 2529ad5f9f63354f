"""The cache-hit path end to end: the test session's kick cache starts empty (tests/conftest.py), so a
second identical kick-hf load is the one place a hit is expected, and it must give the same weights."""

import torch


def test_second_identical_kick_hf_load_is_a_cache_hit_with_identical_weights(tiny_llama_dir, tmp_path):
    from kick_models.lm import KickHFLM

    args = dict(pretrained=str(tiny_llama_dir), method="wanda", sparsity=0.5, calib="bundled", nsamples=2,
                seqlen=32, dtype="float32", device="cpu", batch_size=1, cache_dir=str(tmp_path / "cache"))
    first = KickHFLM(**args)
    second = KickHFLM(**args)
    miss, hit = first.get_model_info()["kick"], second.get_model_info()["kick"]
    assert miss["result"]["cache"]["hit"] is False and hit["result"]["cache"]["hit"] is True
    assert miss["result"]["cache"]["key"] == hit["result"]["cache"]["key"]
    assert hit["calibration"]["token_sha256"] == miss["calibration"]["token_sha256"]
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert hit["result"]["achieved_sparsity"] == miss["result"]["achieved_sparsity"] > 0.4
