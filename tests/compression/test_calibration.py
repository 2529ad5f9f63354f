import json

import pytest
import torch

from kick_common.bundled import bundled_documents, heldout_text
from kick_models.compression.calibration import CalibrationError, calibration_ids
from kick_models.config import CompressionConfig


def cfg(**kw):
    base = {"method": "wanda", "sparsity": 0.5, "nsamples": 4, "seqlen": 64}
    return CompressionConfig(**{**base, **kw})


def test_bundled_windows_shape_info_and_determinism(char_tokenizer):
    a, info = calibration_ids(char_tokenizer, cfg(), embedded_model=True, max_length=None)
    b, _ = calibration_ids(char_tokenizer, cfg(), embedded_model=True, max_length=None)
    c, _ = calibration_ids(char_tokenizer, cfg(seed=1), embedded_model=True, max_length=None)
    assert a.shape == (4, 64) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert info["dataset"] == "bundled" and info["nsamples"] == 4 and info["seqlen"] == 64 and info["seed"] == 0
    assert len(info["token_sha256"]) == 64
    capped, info = calibration_ids(char_tokenizer, cfg(), embedded_model=True, max_length=16)
    assert capped.shape == (4, 16) and info["seqlen"] == 16


def test_heldout_split_is_disjoint_from_calibration():
    calib = set(bundled_documents("calibration"))
    held = bundled_documents("heldout")
    assert len(held) > 100 and not calib.intersection(held)
    assert "<doc" not in heldout_text() and len(heldout_text()) > 10_000


def test_local_files(tmp_path, char_tokenizer):
    txt = tmp_path / "calib.txt"
    txt.write_text("hello world " * 50)
    ids, info = calibration_ids(char_tokenizer, cfg(calib=str(txt)), embedded_model=False, max_length=None)
    assert ids.shape == (4, 64) and info["dataset"] == str(txt)
    jsonl = tmp_path / "calib.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["short", "x" * 100, "y" * 200]))
    ids, _ = calibration_ids(char_tokenizer, cfg(calib=str(jsonl)), embedded_model=False, max_length=None)
    assert set(ids.unique().tolist()) <= {ord("x"), ord("y")}


def test_bad_calibration_inputs(tmp_path, char_tokenizer):
    with pytest.raises(CalibrationError, match="nsamples=0"):
        calibration_ids(char_tokenizer, cfg(nsamples=0), embedded_model=True, max_length=None)
    with pytest.raises(CalibrationError, match="is not a file"):
        calibration_ids(char_tokenizer, cfg(calib=str(tmp_path / "missing.txt")), embedded_model=False, max_length=None)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(CalibrationError, match="empty"):
        calibration_ids(char_tokenizer, cfg(calib=str(empty)), embedded_model=False, max_length=None)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "too short"}) + "\n")
    with pytest.raises(CalibrationError, match="longer than every calibration document"):
        calibration_ids(char_tokenizer, cfg(calib=str(docs)), embedded_model=False, max_length=None)
    with pytest.raises(CalibrationError, match="longer than the whole"):
        calibration_ids(char_tokenizer, cfg(seqlen=10**8), embedded_model=True, max_length=None)


@pytest.mark.parametrize("name", ["c4", "wikitext2"])
def test_hub_sources_offline_name_bundled(name, char_tokenizer, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CalibrationError, match="calib=bundled"):
        calibration_ids(char_tokenizer, cfg(calib=name), embedded_model=False, max_length=None)



def test_a_corpus_is_tokenized_once_per_tokenizer_definition(monkeypatch):
    """Equal tokenizers (separate objects) share one tokenization of a corpus; another definition gets its own;
    the remembered ids are a fresh tokenization's, and only the last two pairs are kept."""
    from kick_models.compression import calibration
    from kick_testlib.tiny_models import byte_tokenizer

    reads = []
    monkeypatch.setattr(calibration, "_CORPUS_IDS", {}, raising=False)
    text = "\n\n".join(bundled_documents()[:3])

    def corpus(tokenizer, name="bundled"):
        return calibration.encode_corpus(tokenizer, name, lambda: reads.append(name) or text)

    first, second = corpus(byte_tokenizer()), corpus(byte_tokenizer())
    assert reads == ["bundled"] and torch.equal(first, second)
    assert first.tolist() == byte_tokenizer()(text, add_special_tokens=False)["input_ids"]
    other = byte_tokenizer()
    other.add_tokens(["the"])  # another definition: tokenized again
    assert corpus(other).numel() < first.numel() and reads == ["bundled"] * 2
    corpus(other, "wikitext2")  # a third pair: the oldest is forgotten
    corpus(byte_tokenizer())
    assert reads == ["bundled", "bundled", "wikitext2", "bundled"]
    import random

    from_tensor = calibration.windows_from_text(first, 3, 16, random.Random(0))
    assert torch.equal(from_tensor, calibration.windows_from_text(first.tolist(), 3, 16, random.Random(0)))


def test_bundled_calibration_reuses_the_corpus_tokenization(monkeypatch):
    from kick_models.compression import calibration
    from kick_testlib.tiny_models import byte_tokenizer

    config = cfg(nsamples=3, seqlen=16)
    first, _ = calibration_ids(byte_tokenizer(), config, embedded_model=True, max_length=None)
    encoded = []
    monkeypatch.setattr(calibration, "_encode", lambda tok, text: encoded.append(text) or [])
    second, _ = calibration_ids(byte_tokenizer(), config, embedded_model=True, max_length=None)
    assert encoded == [] and torch.equal(first, second)
