"""Compressed-weight cache: keys, hits and misses, crash safety and concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from kick_models import cache
from kick_models.config import build_config
from kick_testlib.cache_runs import load_or_compress

CALIB = {"dataset": "bundled", "nsamples": 8, "seqlen": 64, "seed": 0, "token_sha256": "ab" * 32}


class Tiny(nn.Module):
    """Two 'decoder' Linears and an output head, like a causal LM in miniature."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.block = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 4)

    def get_output_embeddings(self):
        return self.head


BLOCK_WEIGHTS = ("block.0.weight", "block.2.weight")


def magnitude_half(model: nn.Module, calls: list | None = None) -> dict:
    with torch.no_grad():
        for name in BLOCK_WEIGHTS:
            w = dict(model.named_parameters())[name]
            k = w.numel() // 2
            w[w.abs() <= w.abs().flatten().kthvalue(k).values] = 0
    if calls is not None:
        calls.append(1)
    return {"method": "magnitude", "achieved_sparsity": 0.5}


def parts(config=None, calib=CALIB, model_id="org/tiny"):
    config = config or build_config({"method": "wanda", "sparsity": 0.5})
    return cache.key_parts(pretrained=model_id, config=config, calib_info=calib, revision="abc123")


# --------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    "change",
    [
        {"sparsity": 0.6},
        {"method": "sparsegpt"},
        {"pattern": "2:4"},
        {"nsamples": 16},
        {"seqlen": 128},
        {"seed": 1},
        {"calib": "c4"},
        {"wbits": 4},
        {"sparsity_profile": "owl"},
        {"propagate": "dense"},
    ],
)
def test_key_changes_with_every_parameter_that_matters(change):
    base = {"method": "wanda", "sparsity": 0.5}
    args = {**base, **change}
    if "pattern" in change:
        args.pop("sparsity")
    assert cache.cache_key(parts(build_config(args))) != cache.cache_key(parts(build_config(base)))


def test_key_changes_with_model_revision_calibration_tokens_and_versions(monkeypatch):
    key = cache.cache_key(parts())
    assert cache.cache_key(parts(model_id="org/other")) != key
    assert cache.cache_key(parts(calib={**CALIB, "token_sha256": "cd" * 32})) != key
    other_rev = cache.key_parts(pretrained="org/tiny", config=build_config({"method": "wanda", "sparsity": 0.5}),
                                calib_info=CALIB, revision="def456")
    assert cache.cache_key(other_rev) != key
    monkeypatch.setattr(cache, "package_versions", lambda: {"kick": "9.9", "torch": "2.13", "transformers": "5.24"})
    assert cache.cache_key(parts()) != key


def test_key_ignores_irrelevant_fields():
    wanda = {"method": "wanda", "sparsity": 0.5}
    key = cache.cache_key(parts(build_config(wanda)))
    # GPTQ-only and OWL-only knobs cannot change unquantized uniform Wanda weights
    for extra in ({"group_size": 64}, {"sym": True}, {"act_order": True}, {"blocksize": 64},
                  {"damp": 0.1}, {"owl_m": 7}, {"owl_lambda": 0.2}):
        assert cache.cache_key(parts(build_config({**wanda, **extra}))) == key, extra
    # magnitude needs no data: calibration settings and info do not matter
    mag = build_config({"method": "magnitude", "sparsity": 0.5})
    mag_key = cache.cache_key(parts(mag))
    assert cache.cache_key(parts(build_config({"method": "magnitude", "sparsity": 0.5, "nsamples": 4}),
                                 calib=None)) == mag_key


def test_key_ignores_eval_only_arguments():
    """batch size, output path, limit… are not CompressionConfig fields, so they never reach the key."""
    config = build_config({"method": "wanda", "sparsity": 0.5})
    assert not {"batch_size", "output_path", "limit", "device"} & set(cache.relevant_config(config))


def test_local_folder_key_is_a_content_hash(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"1234")
    (folder / "tokenizer.json").write_text("{}")
    config = build_config({"method": "magnitude", "sparsity": 0.5})
    first = cache.cache_key(cache.key_parts(pretrained=str(folder), config=config, calib_info=None))
    (folder / "tokenizer.json").write_text('{"x": 1}')  # tokenizer does not change weights
    assert cache.cache_key(cache.key_parts(pretrained=str(folder), config=config, calib_info=None)) == first
    (folder / "model.safetensors").write_bytes(b"1235")
    assert cache.cache_key(cache.key_parts(pretrained=str(folder), config=config, calib_info=None)) != first


def test_cache_dir_location(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "kick" / "compressed"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.default_cache_dir() == tmp_path / "mine" / "compressed"


# --------------------------------------------------------------------------- hit / miss
def test_miss_then_hit_restores_the_compressed_weights(tmp_path):
    calls: list = []
    first = Tiny()
    summary, hit = load_or_compress(first, parts(), lambda: magnitude_half(first, calls), cache_dir=tmp_path)
    assert (hit, len(calls), summary["achieved_sparsity"]) == (False, 1, 0.5)

    second = Tiny()
    summary2, hit2 = load_or_compress(second, parts(), lambda: magnitude_half(second, calls), cache_dir=tmp_path)
    assert (hit2, len(calls), summary2["achieved_sparsity"]) == (True, 1, 0.5)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    entry = Path(summary2["cache"]["path"])
    stored = json.loads((entry / cache.MANIFEST_FILE).read_text())
    from safetensors.torch import load_file
    assert set(load_file(str(entry / cache.WEIGHTS_FILE))) == {"block.0.weight", "block.2.weight"}  # no head
    assert stored["files"][cache.WEIGHTS_FILE]["size"] == (entry / cache.WEIGHTS_FILE).stat().st_size


def test_disabled_cache_always_compresses(tmp_path):
    calls: list = []
    for _ in range(2):
        model = Tiny()
        _, hit = load_or_compress(model, parts(), lambda m=model: magnitude_half(m, calls),
                                        cache_dir=tmp_path, enabled=False)
        assert not hit
    assert len(calls) == 2 and not list(tmp_path.iterdir())


def test_corrupted_entry_is_detected_and_rebuilt(tmp_path):
    calls: list = []
    model = Tiny()
    summary, _ = load_or_compress(model, parts(), lambda: magnitude_half(model, calls), cache_dir=tmp_path)
    weights = Path(summary["cache"]["path"]) / cache.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    fresh = Tiny()
    _, hit = load_or_compress(fresh, parts(), lambda: magnitude_half(fresh, calls), cache_dir=tmp_path)
    assert not hit and len(calls) == 2
    weights.write_bytes(weights.read_bytes()[:10])  # truncated
    again = Tiny()
    _, hit = load_or_compress(again, parts(), lambda: magnitude_half(again, calls), cache_dir=tmp_path)
    assert not hit and len(calls) == 3
    last = Tiny()
    assert load_or_compress(last, parts(), lambda: magnitude_half(last, calls), cache_dir=tmp_path)[1]


def test_entry_for_another_architecture_is_not_loaded(tmp_path):
    model = Tiny()
    load_or_compress(model, parts(), lambda: magnitude_half(model), cache_dir=tmp_path)
    other = nn.Sequential(nn.Linear(3, 3))
    calls: list = []
    _, hit = load_or_compress(other, parts(), lambda: calls.append(1) or {}, cache_dir=tmp_path)
    assert not hit and calls == [1]


def test_unwritable_cache_dir_fails_before_compressing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    calls: list = []
    with pytest.raises(cache.CacheError, match="not writable.*no_cache"):
        load_or_compress(Tiny(), parts(), lambda: calls.append(1) or {}, cache_dir=blocker / "sub")
    assert calls == []


# --------------------------------------------------------------------------- processes
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    torch.set_num_threads(1)
    sys.path[:0] = [os.environ["TEST_DIR"], os.path.dirname(os.environ["TEST_DIR"])]
    from test_cache import Tiny, magnitude_half, parts
    from kick_models import cache
    from kick_testlib.cache_runs import load_or_compress

    mode, cache_dir, log_path = sys.argv[1:4]
    if mode == "hang_in_write":
        real = cache.write_json
        def hang(path, data, **kwargs):
            if path.name == cache.MANIFEST_FILE:
                open(log_path + ".writing", "w").close()
                time.sleep(600)
            real(path, data, **kwargs)
        cache.write_json = hang

    def compress():
        with open(log_path, "a") as f:
            f.write("compress\\n")
        time.sleep(float(os.environ.get("COMPRESS_SLEEP", "0")))
        return magnitude_half(model)

    model = Tiny()
    summary, hit = load_or_compress(model, parts(), compress, cache_dir=cache_dir)
    w = model.block[0].weight
    print(json.dumps({"hit": hit, "zeros": int((w == 0).sum()), "checksum": float(w.sum())}))
    """
)


def _spawn(mode: str, cache_dir: Path, log_path: Path, sleep: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "TEST_DIR": str(Path(__file__).parent), "COMPRESS_SLEEP": str(sleep), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, mode, str(cache_dir), str(log_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_writer_leaves_nothing_that_loads(tmp_path):
    log_path = tmp_path / "log"
    proc = _spawn("hang_in_write", tmp_path / "cache", log_path)
    deadline = time.time() + 60
    while not Path(str(log_path) + ".writing").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "writer never reached the manifest write"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    key = cache.cache_key(parts())
    assert not (tmp_path / "cache" / key).exists()  # only a temp folder may remain
    assert cache.read_manifest(tmp_path / "cache" / key) is None
    # the next run is a clean miss (lock released by the kernel), and cleans the dead temp folder
    calls: list = []
    model = Tiny()
    _, hit = load_or_compress(model, parts(), lambda: magnitude_half(model, calls), cache_dir=tmp_path / "cache")
    assert not hit and calls == [1]
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_two_processes_racing_on_one_key_compress_once(tmp_path):
    log_path = tmp_path / "log"
    procs = [_spawn("normal", tmp_path / "cache", log_path, sleep=1.0) for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert log_path.read_text().count("compress") == 1
    assert sorted(o["hit"] for o in outs) == [False, True]
    assert outs[0]["zeros"] == outs[1]["zeros"] > 0 and outs[0]["checksum"] == outs[1]["checksum"]


# --------------------------------------------------------------------------- kick-hf's calls
def _kick_hf(tiny_llama_dir, cache_dir, **args):
    from kick_models.lm import KickHFLM

    return KickHFLM(pretrained=str(tiny_llama_dir), calib="bundled", nsamples=2, seqlen=32, dtype="float32",
                    device="cpu", batch_size=1, fidelity=False, cache_dir=str(cache_dir), **args)


def test_a_hit_skips_calibration_and_a_new_tokenizer_does_not(tiny_llama_dir, tmp_path, monkeypatch):
    import shutil

    from kick_models.compression import calibration

    calls = []
    real = calibration.calibration_ids
    monkeypatch.setattr(calibration, "calibration_ids", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = _kick_hf(tiny_llama_dir, tmp_path / "c", method="wanda", sparsity=0.5)
    second = _kick_hf(tiny_llama_dir, tmp_path / "c", method="wanda", sparsity=0.5)
    assert second.get_model_info()["kick"]["result"]["cache"]["hit"] is True and calls == [1]
    assert second.get_model_info()["kick"]["calibration"] == first.get_model_info()["kick"]["calibration"]
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, folder)
    tok = folder / "tokenizer_config.json"
    tok.write_text(tok.read_text().replace("{", '{"kick_test": 1, ', 1))  # new tokenizer files: tokens recomputed
    _kick_hf(folder, tmp_path / "c", method="wanda", sparsity=0.5)
    assert calls == [1, 1]


@pytest.mark.parametrize("args", [{"method": "wanda", "sparsity": 0.5}, {"method": "magnitude", "sparsity": 0.5}])
def test_kick_hf_stores_under_the_tested_key(tiny_llama_dir, tmp_path, args):
    """kick-hf (and so kick-compress) stores under key_parts' key, so the key-sensitivity tests above
    cover the key kick-hf really uses."""
    lm = _kick_hf(tiny_llama_dir, tmp_path, **args)
    kick = lm.get_model_info()["kick"]
    config = lm.kick_config
    calib = kick["calibration"] if config.needs_calibration else None
    expected = cache.key_parts(pretrained=str(tiny_llama_dir), config=config, calib_info=calib, model=lm.model,
                               cache_dir=tmp_path)
    assert kick["result"]["cache"]["hit"] is False and kick["result"]["cache"]["key"] == cache.cache_key(expected)
    assert (expected["calibration"] is None) == (not config.needs_calibration)
