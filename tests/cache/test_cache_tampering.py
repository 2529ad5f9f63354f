"""Cache entries that are self-consistent but wrong, caches that cannot be written, frozen lock holders
and leftovers of dead writers: each is detected or survived, and the run goes on."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
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
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.block = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 4)

    def get_output_embeddings(self):
        return self.head


BLOCK_WEIGHTS = ("block.0.weight", "block.2.weight")


def halve(model: nn.Module, calls: list) -> dict:
    """Zero the smaller half of every compressed weight (exactly 50% zeros)."""
    with torch.no_grad():
        for name in BLOCK_WEIGHTS:
            w = dict(model.named_parameters())[name]
            order = w.abs().flatten().argsort()
            w.view(-1)[order[: w.numel() // 2]] = 0
    calls.append(1)
    return {"method": "magnitude", "achieved_sparsity": 0.5}


def parts(model_id: str = "org/tiny"):
    config = build_config({"method": "wanda", "sparsity": 0.5})
    return cache.key_parts(pretrained=model_id, config=config, calib_info=CALIB, revision="abc123")


def run(cache_dir: Path, calls: list, model_id: str = "org/tiny", **kwargs):
    model = Tiny()
    summary, hit = load_or_compress(model, parts(model_id), lambda: halve(model, calls), cache_dir=cache_dir, **kwargs)
    return model, summary, hit


def rewrite(entry: Path, *, weights: bytes | None = None, tensors: dict | None = None, manifest_edit=None) -> None:
    """Replace the entry's weights and make its manifest agree (size and sha256): self-consistent tampering."""
    from safetensors.torch import save_file

    path = entry / cache.WEIGHTS_FILE
    if tensors is not None:
        save_file(tensors, str(path), metadata={"kick_key": entry.name})
    elif weights is not None:
        path.write_bytes(weights)
    manifest = json.loads((entry / cache.MANIFEST_FILE).read_text())
    data = path.read_bytes()
    manifest["files"][cache.WEIGHTS_FILE] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if manifest_edit is not None:
        manifest_edit(manifest)
    (entry / cache.MANIFEST_FILE).write_text(json.dumps(manifest))


def stored(entry: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(entry / cache.WEIGHTS_FILE))


def kick_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kick_models.cache" and r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- item 4: any load failure rebuilds
def test_random_bytes_with_a_matching_manifest_are_rebuilt_with_one_warning(tmp_path, caplog):
    calls: list = []
    _, summary, _ = run(tmp_path, calls)
    entry = Path(summary["cache"]["path"])
    rewrite(entry, weights=os.urandom(4096))
    caplog.set_level(logging.WARNING)
    model, summary, hit = run(tmp_path, calls)
    assert not hit and len(calls) == 2
    unusable = [m for m in kick_warnings(caplog) if "unusable" in m]
    assert len(unusable) == 1 and "safetensors" in unusable[0]
    assert summary["cache"]["stored"] is True
    assert not list(tmp_path.glob(".trash-*")) and not list(tmp_path.glob(".tmp-*"))
    # the bad entry was replaced: the next run is a hit with the right weights
    again, _, hit = run(tmp_path, calls)
    assert hit and len(calls) == 2 and torch.equal(again.block[0].weight, model.block[0].weight)


# --------------------------------------------------------------------------- item 5: dtype, finiteness, sparsity
@pytest.mark.parametrize("tamper, reason", [
    (lambda t: {k: v.half() for k, v in t.items()}, "torch.float16, the model is torch.float32"),
    (lambda t: {k: v.clone().index_fill_(0, torch.tensor([0]), float("nan")) for k, v in t.items()}, "NaN"),
    (lambda t: {k: torch.where(v == 0, torch.full_like(v, 1e-3), v) for k, v in t.items()}, "zeros"),
])
def test_valid_safetensors_with_wrong_dtype_values_or_zeros_are_rebuilt(tmp_path, caplog, tamper, reason):
    calls: list = []
    _, summary, _ = run(tmp_path, calls)
    entry = Path(summary["cache"]["path"])
    rewrite(entry, tensors=tamper(stored(entry)))
    caplog.set_level(logging.WARNING)
    model, summary, hit = run(tmp_path, calls)
    assert not hit and len(calls) == 2
    assert any(reason in m for m in kick_warnings(caplog)), kick_warnings(caplog)
    assert float((model.block[0].weight == 0).float().mean()) == 0.5


def test_a_hit_reports_the_sparsity_it_measures_not_the_manifest(tmp_path):
    calls: list = []
    _, summary, _ = run(tmp_path, calls)
    entry = Path(summary["cache"]["path"])

    def claim_more(manifest):
        manifest["summary"]["achieved_sparsity"] = 0.9

    rewrite(entry, manifest_edit=claim_more)
    _, summary, hit = run(tmp_path, calls)
    assert hit and summary["achieved_sparsity"] == 0.5


def test_an_entry_without_a_zero_record_is_checked_against_its_summary(tmp_path):
    """Entries written before the zero count was recorded: a dense file under a 50% summary is refused."""
    calls: list = []
    _, summary, _ = run(tmp_path, calls)
    entry = Path(summary["cache"]["path"])
    dense = {k: v for k, v in Tiny().state_dict().items() if k in stored(entry)}
    rewrite(entry, tensors=dense, manifest_edit=lambda m: m.pop("zeros"))
    _, _, hit = run(tmp_path, calls)
    assert not hit and len(calls) == 2


# --------------------------------------------------------------------------- item 6: unwritable caches
def _read_only(monkeypatch):
    """What a read-only folder does to the cache (tests may run as root, where chmod does not bite)."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(cache.FileLock, "acquire", refuse)
    monkeypatch.setattr(cache, "staged_dir", refuse)


def test_a_read_only_cache_serves_its_hits(tmp_path, monkeypatch):
    calls: list = []
    first, _, _ = run(tmp_path, calls)
    _read_only(monkeypatch)
    model, _, hit = run(tmp_path, calls)
    assert hit and len(calls) == 1 and torch.equal(model.block[0].weight, first.block[0].weight)


def test_a_read_only_cache_miss_compresses_in_memory(tmp_path, monkeypatch, caplog):
    calls: list = []
    _read_only(monkeypatch)
    caplog.set_level(logging.WARNING)
    model, summary, hit = run(tmp_path, calls)
    assert not hit and len(calls) == 1 and summary["cache"]["stored"] is False
    assert float((model.block[0].weight == 0).float().mean()) == 0.5
    assert any("read-only" in m for m in kick_warnings(caplog))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_chmod_read_only_cache_serves_hits_and_compresses_misses(tmp_path):
    calls: list = []
    run(tmp_path, calls)
    tmp_path.chmod(0o555)
    try:
        assert run(tmp_path, calls)[2] is True
        _, summary, hit = run(tmp_path, calls, model_id="org/other")
        assert not hit and summary["cache"]["stored"] is False
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_warns_and_keeps_the_weights_in_memory(tmp_path, monkeypatch, caplog, err):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    calls: list = []
    caplog.set_level(logging.WARNING)
    model, summary, hit = run(tmp_path, calls)
    assert not hit and summary["cache"]["stored"] is False and os.strerror(err) in summary["cache"]["error"]
    assert float((model.block[0].weight == 0).float().mean()) == 0.5
    assert any("could not store" in m for m in kick_warnings(caplog))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith((".lock", ".lock.json"))] == []


def test_memo_of_calibration_tokens_that_cannot_be_written_is_not_fatal(tmp_path, monkeypatch, caplog):
    real = cache.write_json

    def no_memo(path, *args, **kwargs):
        if "calibration" in Path(path).parts:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache, "write_json", no_memo)
    caplog.set_level(logging.WARNING)
    memo = tmp_path / "calibration" / ("ab" * 32 + ".json")
    cache.write_calibration_memo(memo, CALIB)
    assert not memo.exists() and any("could not remember" in m for m in kick_warnings(caplog))


# --------------------------------------------------------------------------- item 7: locks, leftovers, modes
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kick_models import cache

    root, key, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    with cache.key_lock(root, key):
        marker.write_text("held")
        time.sleep(120)
    """
)


@pytest.fixture
def hold_lock(tmp_path):
    """Start a process that takes a key's lock and freezes; yields a function (root, key) -> Popen."""
    procs = []

    def start(root: Path, key: str) -> subprocess.Popen:
        root.mkdir(parents=True, exist_ok=True)
        marker = tmp_path / f"held-{key[:8]}"
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), key, str(marker)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "lock holder never started"
            time.sleep(0.05)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_frozen_lock_holder_is_named_and_the_wait_times_out(tmp_path, hold_lock, caplog, monkeypatch):
    key = cache.cache_key(parts())
    holder = hold_lock(tmp_path, key)
    caplog.set_level(logging.WARNING)
    calls: list = []
    start = time.monotonic()
    with pytest.raises(cache.CacheError, match=f"gave up after 1s.*pid {holder.pid}.*cache_lock_timeout"):
        run(tmp_path, calls, lock_timeout_s=1)
    assert time.monotonic() - start < 30 and calls == []
    waiting = [m for m in kick_warnings(caplog) if "waiting" in m]
    assert waiting and f"pid {holder.pid}" in waiting[0] and "up to 1s" in waiting[0]
    monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "0.5")
    with pytest.raises(cache.CacheError, match="gave up after 0.5s"):
        run(tmp_path, calls)
    monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(cache.CacheError, match="KICK_CACHE_LOCK_TIMEOUT='soon'.*accepted"):
        run(tmp_path, calls)


def test_leftovers_of_dead_writers_are_removed_on_any_use(tmp_path, hold_lock):
    other, busy = "1" * 64, "2" * 64
    dead_tmp = tmp_path / f".tmp-{other}-{'a' * 32}"
    dead_trash = tmp_path / f".trash-{other}-{'b' * 32}"
    live_tmp = tmp_path / f".tmp-{busy}-{'c' * 32}"
    for folder in (dead_tmp, dead_trash, live_tmp):
        folder.mkdir(parents=True)
        (folder / cache.WEIGHTS_FILE).write_bytes(b"partial")
    old_probe, new_probe = tmp_path / ".probe-old", tmp_path / ".probe-new"
    old_probe.write_text(""), new_probe.write_text("")
    os.utime(old_probe, (time.time() - 2 * cache.STALE_GRACE_S,) * 2)
    hold_lock(tmp_path, busy)  # a live writer of another key: its temp folder must survive
    run(tmp_path, [])
    assert not dead_tmp.exists() and not dead_trash.exists() and not old_probe.exists()
    assert live_tmp.exists() and new_probe.exists()


def test_every_entry_file_has_the_same_mode(tmp_path):
    _, summary, _ = run(tmp_path, [])
    entry = Path(summary["cache"]["path"])
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in entry.iterdir()}
    assert len(set(modes.values())) == 1, modes


# --------------------------------------------------------------------------- entries that are not this key's
def test_an_entry_copied_or_symlinked_from_another_configuration_is_refused(tmp_path, caplog):
    import shutil

    calls: list = []
    _, a, _ = run(tmp_path, calls, model_id="org/a")
    _, b, _ = run(tmp_path, calls, model_id="org/b")
    entry_a, entry_b = Path(a["cache"]["path"]), Path(b["cache"]["path"])
    caplog.set_level(logging.WARNING)
    for replace in (lambda: shutil.copytree(entry_a, entry_b), lambda: entry_b.symlink_to(entry_a, target_is_directory=True)):
        shutil.rmtree(entry_b)
        replace()
        caplog.clear()
        _, summary, hit = run(tmp_path, calls, model_id="org/b")
        assert not hit and any("another configuration" in m for m in kick_warnings(caplog)), kick_warnings(caplog)
        assert entry_b.is_dir() and not entry_b.is_symlink() and summary["cache"]["stored"] is True
        assert run(tmp_path, calls, model_id="org/a")[2] and run(tmp_path, calls, model_id="org/b")[2]
    assert len(calls) == 4 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_entry_whose_recorded_configuration_was_edited_is_refused(tmp_path, caplog):
    calls: list = []
    _, summary, _ = run(tmp_path, calls)

    def other_sparsity(manifest):
        manifest["key_parts"]["compression"]["sparsity"] = 0.7

    rewrite(Path(summary["cache"]["path"]), manifest_edit=other_sparsity)
    caplog.set_level(logging.WARNING)
    assert run(tmp_path, calls)[2] is False
    assert any("recorded configuration" in m for m in kick_warnings(caplog))


def test_a_dense_entry_whose_manifest_claims_the_target_is_refused(tmp_path, caplog):
    """Dense tensors and a manifest rewritten to match them (zeros, summary): the zeros are measured on
    load and compared with the key's target sparsity."""
    calls: list = []
    _, summary, _ = run(tmp_path, calls, expect_sparsity=0.5)
    entry = Path(summary["cache"]["path"])
    dense = {k: v for k, v in Tiny().state_dict().items() if k in stored(entry)}

    def match(manifest):
        manifest["zeros"] = cache.zero_count(dense)
        manifest["summary"]["achieved_sparsity"] = 0.5

    rewrite(entry, tensors=dense, manifest_edit=match)
    caplog.set_level(logging.WARNING)
    model, _, hit = run(tmp_path, calls, expect_sparsity=0.5)
    assert not hit and len(calls) == 2
    assert any("far below the 50.00% target" in m for m in kick_warnings(caplog)), kick_warnings(caplog)
    assert float((model.block[0].weight == 0).float().mean()) == 0.5


def test_a_compression_that_reaches_far_below_its_target_is_not_stored(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    model = Tiny()
    summary, hit = load_or_compress(model, parts(), lambda: {"method": "magnitude"}, cache_dir=tmp_path, expect_sparsity=0.5)
    assert not hit and summary["cache"]["stored"] is False and "not cacheable" in summary["cache"]["error"]
    assert any("not storing" in m for m in kick_warnings(caplog))


@pytest.mark.parametrize("damage, reason", [
    (lambda entry: (entry / cache.MANIFEST_FILE).unlink(), "no manifest.json"),
    (lambda entry: (__import__("shutil").rmtree(entry), entry.write_text("not an entry")), "is a file"),
])
def test_an_entry_without_manifest_or_that_is_a_file_is_rebuilt_with_a_warning(tmp_path, caplog, damage, reason):
    calls: list = []
    _, summary, _ = run(tmp_path, calls)
    entry = Path(summary["cache"]["path"])
    damage(entry)
    caplog.set_level(logging.WARNING)
    _, summary, hit = run(tmp_path, calls)
    assert not hit and summary["cache"]["stored"] is True
    assert any(reason in m for m in kick_warnings(caplog)), kick_warnings(caplog)
    assert run(tmp_path, calls)[2] and len(calls) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- a full disk, for real
FSIZE_WORKER = textwrap.dedent(
    """
    import json, os, resource, sys
    sys.path[:0] = [os.environ["TEST_DIR"], os.path.dirname(os.environ["TEST_DIR"])]
    from test_cache_tampering import Tiny, halve, parts
    from kick_testlib.cache_runs import load_or_compress

    resource.setrlimit(resource.RLIMIT_FSIZE, (600, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    model, calls = Tiny(), []
    summary, hit = load_or_compress(model, parts(), lambda: halve(model, calls), cache_dir=sys.argv[1])
    print(json.dumps({"hit": hit, "cache": summary["cache"], "zeros": float((model.block[0].weight == 0).float().mean())}))
    """
)


def test_a_file_size_limit_during_the_write_warns_and_goes_on(tmp_path):
    """The weights file outgrows RLIMIT_FSIZE: safetensors raises its own error, not an OSError."""
    env = {**os.environ, "TEST_DIR": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-c", FSIZE_WORKER, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hit"] is False and out["cache"]["stored"] is False and out["zeros"] == 0.5
    assert "could not store" in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith((".lock", ".lock.json"))] == []


# --------------------------------------------------------------------------- the content-hash memo
def test_weights_replaced_with_their_mtime_kept_change_the_fingerprint(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"old weights")
    memo = tmp_path / "memo"
    memo.mkdir()
    first = cache.folder_fingerprint(folder, memo)
    stat = weights.stat()
    weights.write_bytes(b"new weights")  # same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert cache.folder_fingerprint(folder, memo) != first
    (memo / "file_digests.json").write_text("[1, 2]")  # a memo that is not a mapping is ignored
    assert cache.folder_fingerprint(folder, memo) == cache.folder_fingerprint(folder)


def test_only_the_folders_own_files_are_fingerprinted_and_a_subfolder_is_its_own_model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    first = cache.folder_fingerprint(folder)
    for inner in ("kick-cache/compressed/ab12", "checkpoint-500"):  # a cache, a training checkpoint: not the model
        (folder / inner).mkdir(parents=True)
        (folder / inner / "weights.safetensors").write_bytes(b"other bytes")
        (folder / inner / "config.json").write_text('{"other": 1}')
    assert cache.folder_fingerprint(folder) == first
    (folder / "model.safetensors").write_bytes(b"new weights")
    assert cache.folder_fingerprint(folder) != first
    inner = cache.model_identity(str(folder), subfolder="checkpoint-500")
    assert inner == {"local_sha256": cache.folder_fingerprint(folder / "checkpoint-500"), "subfolder": "checkpoint-500"}
    assert cache.model_identity(str(folder)) == {"local_sha256": cache.folder_fingerprint(folder)}
    with pytest.raises(cache.CacheError, match="subfolder=NAME"):
        cache.folder_fingerprint(folder / "kick-cache")
