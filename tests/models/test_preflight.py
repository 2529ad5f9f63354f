"""Bad inputs that need the model's folder, config or tokenizer are refused before any weight loads,
with one message naming key, value and what is accepted; through the stock CLI that message comes first."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from kick_models.config import ConfigError
from kick_models.lm import KickHFLM, ignored_args
from kick_models.preflight import check_pretrained, looks_like_path


def kick_hf(model_dir, **args):
    return KickHFLM(pretrained=str(model_dir), device="cpu", cache_dir=str(model_dir.parent / "cache"), **args)


# --------------------------------------------------------------------------- item 8: calibration files
def _binary(path):
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _jsonl_without_text(path):
    path.write_text('{"content": "a document"}\n', encoding="utf-8")
    return path


def _text_not_a_string(path):
    path.write_text('{"text": ["a", "list"]}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("name, write, message", [
    ("calib.bin", _binary, r"not UTF-8 text \(byte 0x80 at offset 128\)"),
    ("calib.txt", _binary, r"not UTF-8 text"),
    ("calib.jsonl", _jsonl_without_text, r"line 1 is not a JSON object with a 'text' field"),
    ("calib.jsonl", _text_not_a_string, r"line 1: 'text' is list, not a string"),
])
def test_unreadable_calibration_files_are_refused_before_loading(tiny_config_dir, tmp_path, no_weight_loading,
                                                                 name, write, message):
    path = write(tmp_path / name)
    with pytest.raises(ConfigError, match=rf"calib='{path}'.*{message}"):
        kick_hf(tiny_config_dir, method="wanda", sparsity=0.5, calib=str(path), nsamples=2, seqlen=32)


def test_calibration_text_shorter_than_one_window_is_refused_with_its_size(tiny_config_dir, tmp_path, no_weight_loading):
    short = tmp_path / "short.txt"
    short.write_text("x" * 20, encoding="utf-8")  # the byte-level tokenizer: 20 tokens
    with pytest.raises(ConfigError, match=r"calib=.*short.txt.*holds 20 tokens, fewer than seqlen=32.*at least 32 tokens"):
        kick_hf(tiny_config_dir, method="wanda", sparsity=0.5, calib=str(short), nsamples=2, seqlen=32)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": "y" * n}) for n in (5, 10)), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"none of its 2 documents has seqlen=32 tokens \(the longest has 10\)"):
        kick_hf(tiny_config_dir, method="wanda", sparsity=0.5, calib=str(docs), nsamples=2, seqlen=32)


def test_seqlen_is_capped_at_the_context_like_calibration_does(tiny_config_dir, tmp_path, no_weight_loading, caplog):
    """600 tokens cannot fill seqlen=2048, but the tiny model's context is 512: calibration would cap it."""
    text = tmp_path / "enough.txt"
    text.write_text("z" * 600, encoding="utf-8")
    caplog.set_level(logging.WARNING)
    with pytest.raises(AssertionError, match="HFLM started loading"):  # every check passed
        kick_hf(tiny_config_dir, method="wanda", sparsity=0.5, calib=str(text), nsamples=4, seqlen=2048)
    assert any("fewer than nsamples x seqlen = 2048; windows will overlap" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- item 9: group_size
def test_group_size_wider_than_a_layer_is_refused_from_the_config(tiny_config_dir, no_weight_loading):
    with pytest.raises(ConfigError, match=r"group_size=128: larger than the 64 input features of model\.layers\.0\.\w+.*1\.\.64"):
        kick_hf(tiny_config_dir, method="gptq", wbits=4, group_size=128, calib="bundled")
    for fine in (64, -1):
        with pytest.raises(AssertionError, match="HFLM started loading"):
            kick_hf(tiny_config_dir, method="gptq", wbits=4, group_size=fine, calib="bundled")


# --------------------------------------------------------------------------- item 14: pretrained and ignored args
@pytest.mark.parametrize("value, is_path", [
    ("/no/such/model", True), ("./model", True), ("../model", True), ("~/model", True), ("a/b/c", True),
    ("org/name", False), ("gpt2", False),
])
def test_what_counts_as_a_path(value, is_path):
    assert looks_like_path(value) is is_path


def test_a_missing_model_folder_is_named_as_such(tmp_path, no_weight_loading, monkeypatch):
    for value in (str(tmp_path / "missing"), "./missing-model-folder", "no/such/folder/x"):
        with pytest.raises(ConfigError, match=rf"pretrained='{value}': no such folder.*accepted: an existing local model folder"):
            KickHFLM(pretrained=value, method="magnitude", sparsity=0.5)
    a_file = tmp_path / "model.gguf"
    a_file.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="is a file, not a model folder"):
        KickHFLM(pretrained=str(a_file))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ConfigError, match="pretrained='models/tiny': no such folder"):
        KickHFLM(pretrained="models/tiny")
    check_pretrained("org/name")  # a Hub id is left to the Hub


def test_calibration_args_of_a_method_without_calibration_are_recorded_as_ignored(tiny_model_dir, tmp_path):
    from kick_models.config import build_config

    given = {"method": "magnitude", "sparsity": 0.5, "calib": "c4", "nsamples": 16, "group_size": 64}
    ignored = ignored_args(build_config(given), given)
    assert set(ignored) == {"calib", "nsamples", "group_size"}
    assert ignored["calib"] == {"value": "c4", "reason": "method=magnitude needs no calibration data"}
    assert ignored_args(build_config({"method": "wanda", "sparsity": 0.5, "calib": "c4"}), {"calib": "c4"}) == {}

    lm = kick_hf(tiny_model_dir, method="magnitude", sparsity=0.5, calib="c4")
    info = lm.get_model_info()["kick"]
    assert info["ignored"]["calib"]["value"] == "c4" and info["calibration"] is None


# --------------------------------------------------------------------------- item 13: the stock CLI
@pytest.mark.slow
def test_stock_cli_prints_the_refusal_before_the_traceback(tmp_path, subprocess_env):
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "kick-hf", "--model_args", "method=bogus",
                           "--tasks", "kick_ppl_heldout", "--output_path", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert proc.returncode != 0
    message = "kick-hf: invalid model_arg method='bogus'"
    first = proc.stderr.find(message)
    assert first >= 0, proc.stderr[-2000:]
    traceback = proc.stderr.find("Traceback")
    assert traceback == -1 or first < traceback
    assert "ConfigError" in proc.stderr  # still raised, for programs that catch it
    assert traceback == -1, proc.stderr[-3000:]  # the rest is short: the refusal as one line, no 40-line traceback
    assert proc.stderr[first:].count("\n") <= 3, proc.stderr[first:]
