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
    assert hit["result"]["matrices"] == miss["result"]["matrices"]  # measured on the loaded weights, as on the miss


def test_a_cache_inside_the_model_folder_does_not_change_the_key(tiny_llama_dir, tmp_path, monkeypatch):
    """The cache's own entries (and the fidelity reference) written inside the model folder are not the model."""
    import shutil

    from kick_models.lm import KickHFLM

    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    monkeypatch.setenv("KICK_CACHE_DIR", str(model / "kick-cache"))
    (model / "results").mkdir()
    args = dict(pretrained=str(model), method="wanda", sparsity=0.5, calib="bundled", nsamples=2, seqlen=32,
                dtype="float32", device="cpu", batch_size=1)
    first = KickHFLM(**args).get_model_info()["kick"]["result"]["cache"]
    assert first["hit"] is False and first["path"].startswith(str(model / "kick-cache"))
    (model / "results" / "model.safetensors").write_bytes(b"an export kept beside the results")
    second = KickHFLM(**args).get_model_info()["kick"]["result"]["cache"]
    assert second["hit"] is True and second["key"] == first["key"]
