"""kick-compress: the export is a plain HF checkpoint that stock lm-eval scores exactly like kick-hf."""

from __future__ import annotations

import json

import pytest
import torch

from kick_models import export

PPL = "kick_ppl_heldout"


def _ppl(model, model_args=None, tokenizer=None) -> float:
    """word perplexity on two held-out documents via lm-eval (an LM object or a registered name)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from kick_models.registration import task_manager

    if not isinstance(model, str):
        model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, device="cpu")
    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[PPL], limit=2, device="cpu",
                                  task_manager=task_manager(include_defaults=False), log_samples=False, bootstrap_iters=0)
    return out["results"][PPL]["word_perplexity,none"]


def _prune_half(model) -> None:
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in (layer.self_attn.q_proj, layer.mlp.up_proj):
                w = lin.weight
                w[w.abs() < w.abs().median()] = 0


def test_export_round_trip_by_hand(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    _prune_half(model)
    out = export.export_model(model, tokenizer, tmp_path / "exp", {"summary": {"compression": {"method": "magnitude"}}})
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", export.COMPRESSION_FILE} <= names
    assert json.loads((out / export.COMPRESSION_FILE).read_text())["format"] == "hf-dense"
    assert not list(tmp_path.glob(".tmp-*"))

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert (reloaded.model.layers[0].self_attn.q_proj.weight == 0).float().mean() >= 0.49
    assert _ppl(model, tokenizer=tokenizer) == pytest.approx(_ppl("hf", f"pretrained={out},dtype=float32"), rel=1e-6)


def test_export_is_atomic_and_refuses_to_clobber(tmp_path):
    target = tmp_path / "exp"

    def broken(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full (pretend)")

    with pytest.raises(RuntimeError):
        export.write_atomically(target, broken)
    assert not target.exists() and not list(tmp_path.glob(".tmp-*"))

    export.write_atomically(target, lambda tmp: (tmp / "a").write_text("1"))
    with pytest.raises(export.ExportError, match="already exists.*--overwrite"):
        export.write_atomically(target, lambda tmp: (tmp / "a").write_text("2"))
    export.write_atomically(target, lambda tmp: (tmp / "a").write_text("2"), overwrite=True)
    assert (target / "a").read_text() == "2" and not list(tmp_path.glob(".t*"))


def test_cli_refuses_existing_out_before_loading(tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    assert export.main(["--model", "org/none", "--method", "magnitude", "--sparsity", "0.5",
                        "--out", str(tmp_path / "exp")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("method_args, message", [
    (["--method", "wanda", "--sparsity", "0.5"], "does not quantize"),
    (["--method", "gptq", "--wbits", "16"], "wbits=16; accepted: one of 2, 3, 4, 8 with method=gptq"),  # a no-op: refused first
])
def test_gptq_format_refuses_non_quantizing_config_before_loading(tmp_path, capsys, method_args, message):
    # "org/none" cannot load: a 2 with this message proves the check ran first
    assert export.main(["--model", "org/none", *method_args, "--format", "gptq", "--out", str(tmp_path / "q")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_gptq_format_without_gptqmodel_names_the_extra_before_loading(tmp_path, capsys, no_gptqmodel):
    assert export.main(["--model", "org/none", "--method", "gptq", "--wbits", "4", "--format", "gptq",
                        "--out", str(tmp_path / "q")]) == 2
    assert "pip install kick[gptq-export]" in capsys.readouterr().err


def test_keep_grids_needs_a_quantizing_config():
    from kick_models.config import ConfigError
    from kick_models.lm import split_model_args

    with pytest.raises(ConfigError, match="keep_grids"):
        split_model_args({"method": "wanda", "sparsity": 0.5, "keep_grids": True})
    with pytest.raises(ConfigError, match="keep_grids='yes'"):
        split_model_args({"method": "gptq", "wbits": 4, "keep_grids": "yes"})


@pytest.mark.slow
def test_kick_compress_gptq_packed_checkpoint_loads_in_gptqmodel(tiny_llama_dir, tmp_path):
    """--format gptq: the packed folder, loaded by gptqmodel, computes what kick-hf evaluated."""
    pytest.importorskip("gptqmodel")
    from gptqmodel import GPTQModel

    from kick_models.lm import KickHFLM

    common = ["--model", str(tiny_llama_dir), "--method", "gptq", "--wbits", "4", "--group_size", "32",
              "--calib", "bundled", "--nsamples", "8", "--seqlen", "64", "--dtype", "float32"]
    assert export.main([*common, "--format", "gptq", "--out", str(tmp_path / "q")]) == 0
    record = json.loads((tmp_path / "q" / export.COMPRESSION_FILE).read_text())
    assert record["format"] == "gptq-packed"
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["bits"], config["group_size"]) == ("gptq", 4, 32)
    lm = KickHFLM.create_from_arg_string(export.model_args_string(export.build_parser().parse_args(
        [*common, "--no_cache", "--out", "x"])), {"batch_size": 1, "device": "cpu"})
    ids = torch.randint(0, 200, (1, 24), generator=torch.Generator().manual_seed(0))
    loaded = GPTQModel.load(str(tmp_path / "q"), device="cpu").model
    with torch.no_grad():
        expected = lm.model(ids).logits
        got = loaded(ids).logits.float()
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()  # fp16 checkpoint


def test_model_args_string_matches_kick_hf_args():
    args = export.build_parser().parse_args(["--model", "embedded", "--method", "wanda", "--sparsity", "0.5",
                                             "--nsamples", "8", "--no_cache", "--out", "x", "--model_args", "dtype=float32"])
    assert export.model_args_string(args) == "method=wanda,sparsity=0.5,nsamples=8,no_cache=true,dtype=float32"


@pytest.mark.slow
def test_kick_compress_export_scores_like_kick_hf(tiny_llama_dir, tmp_path):
    """The export of a kick-hf config, read by stock `hf`, gives kick-hf's own log-likelihoods."""
    out = tmp_path / "exp"
    common = ["--model", str(tiny_llama_dir), "--method", "magnitude", "--sparsity", "0.5", "--dtype", "float32"]
    assert export.main([*common, "--no_cache", "--out", str(out)]) == 0
    record = json.loads((out / export.COMPRESSION_FILE).read_text())
    assert record["summary"]["compression"]["method"] == "magnitude"
    kick = _ppl("kick-hf", f"pretrained={tiny_llama_dir},method=magnitude,sparsity=0.5,dtype=float32,no_cache=true")
    stock = _ppl("hf", f"pretrained={out},dtype=float32")
    dense = _ppl("hf", f"pretrained={tiny_llama_dir},dtype=float32")
    assert kick == pytest.approx(stock, rel=1e-6)
    assert dense != pytest.approx(stock, rel=1e-6)


@pytest.mark.parametrize("where, message", [
    ("under_file", "which is a file, not a folder"),
    ("deep_under_file", "which is a file, not a folder"),
    ("is_file", "is a file; accepted: a folder path"),
    ("read_only", "is not writable"),
])
def test_cli_refuses_an_out_that_cannot_be_created_before_loading(tmp_path, capsys, monkeypatch, where, message):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = {"under_file": blocker / "exp", "deep_under_file": blocker / "x" / "y", "is_file": blocker,
           "read_only": tmp_path / "ro" / "exp"}[where]
    if where == "read_only":
        (tmp_path / "ro").mkdir()
        real = export.os.access
        monkeypatch.setattr(export.os, "access", lambda p, mode: False if str(p).endswith("ro") else real(p, mode))

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(export, "load_compressed", no_load)
    assert export.main(["--model", "org/none", "--method", "magnitude", "--sparsity", "0.5", "--out", str(out),
                        "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(out) in err and "Traceback" not in err
