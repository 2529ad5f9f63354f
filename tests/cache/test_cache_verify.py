"""kick-hf's side of the cache: a hit is re-measured before its fidelity is reported, and a calibration
memo, a fidelity reference or a converted embedded model that cannot be trusted is rebuilt with a
warning; a cache that cannot be written costs the caching, never the run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from kick_models import cache, fidelity

AWQ = {"method": "awq", "wbits": 4, "group_size": 32, "calib": "bundled", "nsamples": 4, "seqlen": 32}
WANDA = {"method": "wanda", "sparsity": 0.5, "calib": "bundled", "nsamples": 4, "seqlen": 32}


def _lm(model_dir, cache_dir: Path, **args):
    from kick_models.lm import KickHFLM

    return KickHFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=1, cache_dir=str(cache_dir), **args)


def _result(lm) -> dict:
    return lm.get_model_info()["kick"]["result"]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("kick_models") and r.levelno >= logging.WARNING]


def _logits(lm) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(torch.arange(3, 67)[None, :]).logits


# --------------------------------------------------------------------------- the hit's re-measurement
def test_a_hit_that_does_not_reproduce_its_fidelity_is_rebuilt(tiny_llama_dir, tmp_path, caplog):
    """The entry AWQ wrote before every changed tensor was stored: block matrices without the norms
    their scales were folded into, with a manifest that agrees. Its files check out; its first
    held-out window does not."""
    first = _lm(tiny_llama_dir, tmp_path, **AWQ)
    entry = Path(_result(first)["cache"]["path"])
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(entry / cache.WEIGHTS_FILE)).items() if "norm" not in k}
    assert len(tensors) < len(load_file(str(entry / cache.WEIGHTS_FILE)))  # AWQ changed norms too
    save_file(tensors, str(entry / cache.WEIGHTS_FILE), metadata={"kick_key": entry.name})
    manifest = json.loads((entry / cache.MANIFEST_FILE).read_text())
    data = (entry / cache.WEIGHTS_FILE).read_bytes()
    import hashlib

    manifest.update(tensors=sorted(tensors), zeros=cache.zero_count(tensors))
    manifest["files"][cache.WEIGHTS_FILE] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (entry / cache.MANIFEST_FILE).write_text(json.dumps(manifest))

    caplog.set_level(logging.WARNING)
    second = _lm(tiny_llama_dir, tmp_path, **AWQ)
    result = _result(second)
    assert result["cache"]["hit"] is False and result["cache"]["stored"] is True
    assert any("does not reproduce" in m and "first held-out window" in m for m in _warnings(caplog)), _warnings(caplog)
    assert "verified" not in result["fidelity"] and result["fidelity"]["kl_mean"] == _result(first)["fidelity"]["kl_mean"]
    assert torch.equal(_logits(second), _logits(first))
    third = _lm(tiny_llama_dir, tmp_path, **AWQ)
    assert _result(third)["cache"]["hit"] is True and "verified" in _result(third)["fidelity"]


def test_a_hit_without_fidelity_reports_none(tiny_llama_dir, tmp_path):
    _lm(tiny_llama_dir, tmp_path, **WANDA)
    hit = _lm(tiny_llama_dir, tmp_path, fidelity=False, **WANDA)
    assert _result(hit)["cache"]["hit"] is True and "fidelity" not in _result(hit)


def test_a_hit_stored_without_fidelity_is_measured_in_full(tiny_llama_dir, tmp_path):
    _lm(tiny_llama_dir, tmp_path, fidelity=False, **WANDA)
    hit = _lm(tiny_llama_dir, tmp_path, **WANDA)
    fresh = _lm(tiny_llama_dir, tmp_path / "other", **WANDA)
    assert _result(hit)["cache"]["hit"] is True
    assert _result(hit)["fidelity"]["kl_mean"] == pytest.approx(_result(fresh)["fidelity"]["kl_mean"], rel=1e-6)


# --------------------------------------------------------------------------- the calibration memo
def _memo(cache_dir: Path) -> Path:
    (memo,) = (cache_dir / "calibration").glob("*.json")
    return memo


def _edit_token_hash(memo: Path, checksum: bool) -> None:
    record = json.loads(memo.read_text())
    record["info"]["token_sha256"] = "0" * 64
    if checksum:  # a hostile edit: the checksum recomputed to match
        import hashlib

        record["sha256"] = hashlib.sha256(cache._canonical(record["info"]).encode()).hexdigest()
    memo.write_text(json.dumps(record))


@pytest.mark.parametrize("tamper, reason", [
    (lambda memo: _edit_token_hash(memo, checksum=False), "checksum"),
    (lambda memo: _edit_token_hash(memo, checksum=True), "names token hash"),
    (lambda memo: memo.write_text("[1, 2, 3]"), "holds a list"),
    (lambda memo: memo.write_bytes(os.urandom(256)), "unreadable"),
])
def test_a_calibration_memo_that_cannot_be_trusted_is_rebuilt(tiny_llama_dir, tmp_path, caplog, tamper, reason):
    first = _lm(tiny_llama_dir, tmp_path, fidelity=False, **WANDA)
    truth = first.get_model_info()["kick"]["calibration"]
    memo = _memo(tmp_path)
    tamper(memo)
    caplog.set_level(logging.WARNING)
    second = _lm(tiny_llama_dir, tmp_path, fidelity=False, **WANDA)
    assert any(reason in m for m in _warnings(caplog)), _warnings(caplog)
    assert second.get_model_info()["kick"]["calibration"] == truth
    assert _result(second)["cache"]["key"] == _result(first)["cache"]["key"] and _result(second)["cache"]["hit"] is True
    assert torch.equal(_logits(second), _logits(first))
    assert json.loads(memo.read_text())["info"] == truth  # replaced by the true record


# --------------------------------------------------------------------------- the fidelity reference
def _reference(cache_dir: Path) -> Path:
    (path,) = (cache_dir / "fidelity").glob("*.safetensors")
    return path


def _nan_reference(path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["top_logp"][0, 0] = float("nan")
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("tamper, reason", [
    (_nan_reference, "checksum"),
    (lambda path: path.write_bytes(os.urandom(4096)), "unreadable"),
])
def test_a_fidelity_reference_that_cannot_be_trusted_is_measured_again(tiny_llama_dir, tmp_path, caplog, tamper, reason):
    first = _lm(tiny_llama_dir, tmp_path)
    tamper(_reference(tmp_path))
    caplog.set_level(logging.WARNING)
    again = _lm(tiny_llama_dir, tmp_path)
    assert any("fidelity reference" in m and reason in m for m in _warnings(caplog)), _warnings(caplog)
    assert _result(again)["fidelity"]["kl_mean"] == 0.0 == _result(first)["fidelity"]["kl_mean"]
    reference, problem = fidelity.load_reference(_reference(tmp_path))
    assert problem is None and bool(torch.isfinite(reference.top_logp).all())


def test_a_reference_with_nan_and_a_matching_checksum_is_refused(tmp_path):
    windows = torch.zeros(1, 3, dtype=torch.long)
    ref = fidelity.Reference(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), -1.0), torch.full((2,), -2.0), 2.0, 0.0)
    ref.top_logp[1, 1] = float("nan")
    fidelity.save_reference(ref, tmp_path / "r.safetensors", "k")
    refused = fidelity.load_reference(tmp_path / "r.safetensors", "k", windows)
    assert refused == (None, "it holds NaN, infinite or positive log-probabilities")
    assert fidelity.load_reference(tmp_path / "r.safetensors", "other", windows)[1] == "it was written for another model or text"


# --------------------------------------------------------------------------- caches that cannot be written
def _refuse_writes(monkeypatch, error: BaseException) -> None:
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", refuse)


def test_a_full_disk_costs_the_caching_not_the_run(tiny_llama_dir, tmp_path, monkeypatch, caplog):
    """safetensors reports a failed write as its own error (what a full disk gives), for both the
    fidelity reference and the entry."""
    from safetensors import SafetensorError

    _refuse_writes(monkeypatch, SafetensorError("Error while serializing: IoError(No space left on device (os error 28))"))
    caplog.set_level(logging.WARNING)
    lm = _lm(tiny_llama_dir, tmp_path / "cache", **WANDA)
    result = _result(lm)
    assert result["cache"]["stored"] is False and "No space left" in result["cache"]["error"]
    assert result["fidelity"]["kl_mean"] > 0 and result["achieved_sparsity"] > 0.4
    messages = _warnings(caplog)
    assert any("could not keep the fidelity reference" in m for m in messages)
    assert any("could not store" in m for m in messages)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix in (".safetensors", ".tmp")]
    assert leftovers == [] and not list((tmp_path / "cache").glob(".tmp-*"))


def test_a_read_only_cache_without_a_reference_still_measures_a_dense_run(tiny_llama_dir, tmp_path, monkeypatch, caplog):
    _refuse_writes(monkeypatch, PermissionError(13, "Permission denied"))
    caplog.set_level(logging.WARNING)
    lm = _lm(tiny_llama_dir, tmp_path / "cache")
    assert _result(lm)["fidelity"]["kl_mean"] == 0.0
    assert any("could not keep the fidelity reference" in m and "Permission denied" in m for m in _warnings(caplog))


# --------------------------------------------------------------------------- the converted embedded model
def test_a_truncated_converted_embedded_model_is_converted_again(tmp_path, monkeypatch, caplog):
    from kick_models import embedded
    from kick_testlib.tiny_models import save_tiny_llama

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    conversions = []
    monkeypatch.setattr(embedded, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(embedded, "embedded_model_dir", lambda: tmp_path / "converted")
    monkeypatch.setattr(embedded, "_convert", lambda src, out: conversions.append(save_tiny_llama(out)))
    path = embedded.embedded_model_path()
    assert len(conversions) == 1 and embedded.conversion_problem(path) is None
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    caplog.set_level(logging.WARNING)
    assert embedded.embedded_model_path() == path and len(conversions) == 2
    assert any("model.safetensors is 1000 bytes" in m for m in _warnings(caplog)), _warnings(caplog)
    assert embedded.embedded_model_path() == path and len(conversions) == 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(path))  # complete again


# --------------------------------------------------------------------------- the audit's case, end to end
def test_an_awq_hit_on_the_embedded_model_is_the_fresh_model(smol_path, tmp_path):
    """AWQ folds its scales into the norms: a hit must restore them with the quantized matrices."""
    args = {"method": "awq", "wbits": 4, "group_size": 64, "calib": "bundled", "nsamples": 4, "seqlen": 128,
            "max_length": 512}
    fresh = _lm(smol_path, tmp_path, **args)
    hit = _lm(smol_path, tmp_path, **args)
    fresh_result, hit_result = _result(fresh), _result(hit)
    assert fresh_result["cache"]["hit"] is False and hit_result["cache"]["hit"] is True
    changed = json.loads((Path(hit_result["cache"]["path"]) / cache.MANIFEST_FILE).read_text())["tensors"]
    assert any("norm" in name for name in changed)  # the folded scales are stored
    assert torch.equal(_logits(hit), _logits(fresh))
    verified = hit_result["fidelity"]["verified"]
    assert verified["kl"] == pytest.approx(fresh_result["fidelity"]["kl_windows"][0], rel=1e-6)
    ppl = fresh_result["fidelity"]["ppl_compressed"]
    assert hit_result["fidelity"]["ppl_compressed"] == ppl < 2 * fresh_result["fidelity"]["ppl_dense"]


# --------------------------------------------------------------------------- a hit without fidelity is still measured
def _rewrite_entry(entry: Path, edit) -> None:
    """Change the entry's tensors and make its manifest agree (size, sha256, zeros) but keep its recorded summary."""
    import hashlib

    from safetensors.torch import load_file, save_file

    tensors = {k: edit(k, v) for k, v in load_file(str(entry / cache.WEIGHTS_FILE)).items()}
    save_file(tensors, str(entry / cache.WEIGHTS_FILE), metadata={"kick_key": entry.name})
    manifest = json.loads((entry / cache.MANIFEST_FILE).read_text())
    data = (entry / cache.WEIGHTS_FILE).read_bytes()
    manifest.update(zeros=cache.zero_count(tensors))
    manifest["files"][cache.WEIGHTS_FILE] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (entry / cache.MANIFEST_FILE).write_text(json.dumps(manifest))


def _zero_more(name: str, w: torch.Tensor) -> torch.Tensor:
    """A pruned matrix at 80% zeros instead of 50%: kept nonzeros are the largest, as magnitude keeps them."""
    if w.dim() < 2:
        return w
    out = w.clone()
    out.view(-1)[w.abs().flatten().argsort()[: int(0.8 * w.numel())]] = 0
    return out


def test_a_hit_without_fidelity_measures_its_sparsity_on_the_loaded_weights(tiny_llama_dir, tmp_path, caplog):
    args = {"method": "magnitude", "sparsity": 0.5, "fidelity": False}
    first = _result(_lm(tiny_llama_dir, tmp_path, **args))
    _rewrite_entry(Path(first["cache"]["path"]), _zero_more)  # the manifest's summary still says 50%
    caplog.set_level(logging.WARNING)
    hit = _lm(tiny_llama_dir, tmp_path, **args)
    result = _result(hit)
    assert result["cache"]["hit"] is True
    compressed = result["matrices"]["by_kind"]["compressed linear"]
    assert compressed["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert first["matrices"]["by_kind"]["compressed linear"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert result["matrices"]["compressed"] == first["matrices"]["compressed"]
    weights = [m.weight for layer in hit.model.model.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    assert compressed["zeros"] == sum(int((w == 0).sum()) for w in weights)
    warnings = hit.get_model_info()["kick"]["warnings"]
    measured = compressed["zeros"] / compressed["params"]
    assert len(warnings) == 1 and f"achieved sparsity {measured:.4f} over the compressed matrices, target 0.5" in warnings[0]


def test_a_hit_without_fidelity_measures_its_bit_width_on_the_loaded_weights(tiny_llama_dir, tmp_path):
    args = {"method": "rtn", "wbits": 4, "group_size": 32, "fidelity": False}
    first = _result(_lm(tiny_llama_dir, tmp_path, **args))
    assert first["achieved_bits"] == 4
    torch.manual_seed(0)
    _rewrite_entry(Path(first["cache"]["path"]), lambda name, w: w + 1e-3 * torch.randn_like(w) if w.dim() > 1 else w)
    hit = _lm(tiny_llama_dir, tmp_path, **args)
    assert _result(hit)["cache"]["hit"] is True and _result(hit)["achieved_bits"] == 5  # 32 values in a group of 32
    assert "distinct values in one group of 32, more than the 16" in hit.get_model_info()["kick"]["warnings"][0]
