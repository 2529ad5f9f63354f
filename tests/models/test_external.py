"""Models compressed by other libraries: load-time quantizers (bitsandbytes, torchao, HQQ, quanto) and
pre-compressed checkpoints (compressed-tensors, GGUF) judged against their dense parent, on real artefacts
made here from the tiny Llama or the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from kick_models.config import ConfigError


def kick_lm(**kwargs):
    from kick_models.lm import KickHFLM

    return KickHFLM(**{"device": "cpu", "batch_size": 1, **kwargs})


def kick_info(**kwargs):
    lm = kick_lm(**kwargs)
    info = lm.get_model_info()["kick"]
    del lm
    return info


@pytest.fixture(scope="session")
def ct_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama as a compressed-tensors pack-quantized W4 g32 (symmetric) folder."""
    from kick_testlib.ct_files import write_compressed_tensors

    return write_compressed_tensors(tiny_model_dir, tmp_path_factory.mktemp("ct_w4"))


# ------------------------------------------------------------------ load-time quantizers on the tiny Llama
LOAD_TIME_CASES = {
    "bnb8": ({"method": "bnb8"}, "bitsandbytes", 8),
    "bnb4": ({"method": "bnb4", "quant_type": "nf4"}, "bitsandbytes", 4),
    "torchao8": ({"method": "torchao", "wbits": 8}, "torchao", 8),
    "torchao4": ({"method": "torchao", "wbits": 4, "group_size": 32}, "torchao", 4),
    "hqq8": ({"method": "hqq", "wbits": 8, "group_size": 32}, "hqq", 8),
    "hqq4": ({"method": "hqq", "wbits": 4, "group_size": 32}, "hqq", 4),
    "quanto8": ({"method": "quanto", "wbits": 8}, "optimum-quanto", 8),
    "quanto4": ({"method": "quanto", "wbits": 4}, "optimum-quanto", 4),
}


# quanto unpacks 4-bit weights on the CPU with a C++ extension it compiles on first use (1-2 minutes on a fresh
# install): the quick suite runs quanto's 8-bit path, the full suite both
SLOW_CASES = {"quanto4"}


class _Runs(dict):
    """Model info per load-time case, made on first use: a quick run skips the slow cases' models."""

    def __init__(self, model_dir):
        super().__init__()
        self.model_dir = model_dir

    def __missing__(self, case):
        self[case] = kick_info(pretrained=str(self.model_dir), **LOAD_TIME_CASES[case][0])
        return self[case]


def _case(*names):
    marks = [pytest.mark.slow] if SLOW_CASES.intersection(names) else []
    return pytest.param(*names, marks=marks, id="-".join(names))


@pytest.fixture(scope="module")
def load_time_runs(tiny_model_dir):
    """kick-hf's model info for each load-time case (one model each; the dense reference is cached after the first)."""
    return _Runs(tiny_model_dir)


@pytest.mark.parametrize("case", [_case(c) for c in LOAD_TIME_CASES])
def test_load_time_quantizer_records_library_version_and_kl(load_time_runs, tiny_model_dir, case):
    args, library, bits = LOAD_TIME_CASES[case]
    info = load_time_runs[case]
    source = info["source"]
    assert info["method"] == args["method"] and info["model"] == str(tiny_model_dir)
    assert source["kind"] == "load-time" and source["library"] == library
    assert source["version"] == metadata.version(library)
    assert source["declared"]["bits"] == bits
    assert 1 <= source["measured"]["bits_effective"] <= bits
    fidelity = info["result"]["fidelity"]
    assert fidelity["kl_mean"] > 0 and fidelity["tokens"] > 0
    assert info["result"]["cache"]["enabled"] is False


@pytest.mark.parametrize("eight,four", [_case("bnb8", "bnb4"), _case("torchao8", "torchao4"), _case("hqq8", "hqq4"),
                                        _case("quanto8", "quanto4")])
def test_eight_bit_moves_the_model_less_than_four_bit(load_time_runs, eight, four):
    kl = {case: load_time_runs[case]["result"]["fidelity"]["kl_mean"] for case in (eight, four)}
    assert kl[eight] < kl[four]


def test_bnb8_through_the_stock_lm_eval_cli(tmp_path, subprocess_env, tiny_model_dir):
    """The paper's LLM.int8 row: `lm_eval --model kick-hf` writes library, version and KL into the results file."""
    out = tmp_path / "out"
    cmd = ["lm_eval", "--model", "kick-hf", "--model_args", f"pretrained={tiny_model_dir},method=bnb8",
           "--tasks", "kick_freebase", "--limit", "2", "--device", "cpu", "--output_path", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    kick = json.loads(results.read_text())["config"]["kick"]
    assert kick["method"] == "bnb8" and kick["model"] == str(tiny_model_dir)
    assert kick["source"]["library"] == "bitsandbytes" and kick["source"]["version"] == metadata.version("bitsandbytes")
    assert kick["source"]["label"] == "bitsandbytes LLM.int8"
    assert kick["result"]["fidelity"]["kl_mean"] > 0


# ------------------------------------------------------------------ a compressed-tensors checkpoint with parent=
def test_compressed_tensors_checkpoint_is_judged_against_its_parent(ct_dir, tiny_model_dir, tmp_path):
    cache = str(tmp_path / "cache")
    dense = kick_info(pretrained=str(tiny_model_dir), cache_dir=cache)  # leaves the parent's reference in the cache
    info = kick_info(pretrained=str(ct_dir), parent=str(tiny_model_dir), cache_dir=cache)
    assert info["model"] == dense["model"] == str(tiny_model_dir)  # pairs with the dense run of the parent
    assert info["method"] == "checkpoint" and info["compression"]["method"] == "checkpoint"
    source = info["source"]
    assert source["kind"] == "checkpoint" and source["library"] == "compressed-tensors"
    assert source["format"] == "compressed-tensors:pack-quantized" and source["checkpoint"] == str(ct_dir)
    assert source["declared"]["bits"] == 4 and source["declared"]["group_size"] == 32 and source["declared"]["symmetric"]
    measured = source["measured"]
    assert measured["bits_effective"] <= 4 and measured["distinct_per_group_max"] <= 16
    assert 0 < measured["zero_fraction"] < 0.5 and "not sparsity" in measured["note"]
    fidelity = info["result"]["fidelity"]
    assert fidelity["kl_mean"] > 0 and fidelity["reference"]["cached"] is True
    assert fidelity["ppl_dense"] == pytest.approx(dense["result"]["fidelity"]["ppl_dense"])


def test_checkpoint_without_parent_says_it_cannot_be_paired(ct_dir, caplog):
    info = kick_info(pretrained=str(ct_dir))
    assert info["method"] == "checkpoint" and info["model"] == str(ct_dir)
    assert info["result"]["fidelity"] is None and "no KL" in info["result"]["unpaired"]
    assert "no parent= was given" in caplog.text


def test_label_names_the_row_in_the_results_file(ct_dir):
    """kick-sweep passes an external entry's label: the results file carries it, not only the sweep's index."""
    info = kick_info(pretrained=str(ct_dir), label="llmc-w4")
    assert info["source"]["label"] == "llmc-w4" and info["source"]["library"] == "compressed-tensors"


# ------------------------------------------------------------------ refusals, all before any weight loads
@pytest.fixture
def other_vocab_dir(tmp_path):
    """A tiny Llama config + tokenizer whose vocab_size differs from the suite's tiny Llama."""
    from kick_testlib.tiny_models import byte_tokenizer, tiny_llama

    tiny_llama(layers=1, vocab_size=300).config.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args,expected", [
    ({"parent": "./no/such/parent"}, "parent='./no/such/parent': no such folder"),
    ({"parent": "{tiny}", "method": "magnitude", "sparsity": 0.5}, "never compressed again; accepted: method=none"),
    ({"method": "hqq", "group_size": 48}, "group_size=48: groups of 48 do not divide the 64 input features"),
    ({"method": "bnb8", "wbits": 4}, "wbits=4; accepted: 8 with method=bnb8"),
    ({"method": "bnb4", "quant_type": "int4"}, "quant_type='int4'; accepted: nf4 | fp4"),
    ({"method": "hqq", "group_size": -1}, "group_size=-1; accepted: a positive group size"),
    ({"method": "magnitude", "sparsity": 0.5, "label": "mine"}, "label='mine' with method=magnitude: it names a model "
     "kick did not compress"),
    ({"label": " "}, "label=' '; accepted: a short non-empty name"),
])
def test_bad_input_is_refused_before_loading(tiny_config_dir, no_weight_loading, args, expected):
    args = {k: (str(tiny_config_dir) if v == "{tiny}" else v) for k, v in args.items()}
    with pytest.raises(ConfigError, match="kick-hf: invalid model_arg") as err:
        kick_lm(pretrained=str(tiny_config_dir), **args)
    assert expected in str(err.value)


def test_a_device_the_library_does_not_run_on_is_refused():
    from kick_models.external.loadtime import device_refusal

    assert device_refusal("bnb8", "cpu") is None and device_refusal("quanto", "mps:0") is None
    assert "device='mps': bitsandbytes (bnb8) does not run there; accepted with method=bnb8: cpu | cuda | xpu" \
        in device_refusal("bnb8", "mps")


def test_parent_with_another_vocabulary_is_refused(tiny_config_dir, other_vocab_dir, no_weight_loading):
    with pytest.raises(ConfigError) as err:
        kick_lm(pretrained=str(tiny_config_dir), parent=str(other_vocab_dir))
    assert "vocab_size is 300" in str(err.value) and "KL between them is undefined" in str(err.value)


def test_tokenizers_with_moved_ids_do_not_pair():
    from kick_models.external.checkpoint import same_vocabulary
    from kick_testlib.tiny_models import byte_tokenizer

    a, b = byte_tokenizer(), byte_tokenizer()
    assert same_vocabulary(a, b) is None
    b.add_tokens(["<extra>"])
    assert "tokens" in same_vocabulary(a, b)


@pytest.mark.parametrize("method,module,hint", [("bnb8", "bitsandbytes", "pip install 'kick[bnb]'"),
                                                ("torchao", "torchao", "pip install 'kick[torchao]'"),
                                                ("hqq", "hqq", "pip install 'kick[hqq]'"),
                                                ("quanto", "optimum.quanto", "pip install 'kick[quanto]'")])
def test_missing_library_is_refused_with_the_pip_command(tiny_config_dir, no_weight_loading, monkeypatch,
                                                         method, module, hint):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError) as err:
        kick_lm(pretrained=str(tiny_config_dir), method=method)
    assert f"method={method}: it needs" in str(err.value) and hint in str(err.value)


def test_checkpoint_whose_loader_is_missing_is_refused(ct_dir, no_weight_loading, monkeypatch):
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)
    with pytest.raises(ConfigError) as err:
        kick_lm(pretrained=str(ct_dir))
    assert "needs compressed-tensors, which is not installed" in str(err.value)


# ------------------------------------------------------------------ measured weights: known answers
def test_distinct_values_per_group_and_bits():
    import torch

    from kick_models.external.measure import bits_for, distinct_per_group, summarize

    weight = torch.tensor([[0.0, 1.0, 1.0, 2.0, 5.0, 5.0, 5.0, 5.0]])
    assert distinct_per_group(weight, 4) == 3 and distinct_per_group(weight, None) == 4
    assert [bits_for(n) for n in (1, 2, 3, 16, 17, 256)] == [1, 1, 2, 4, 5, 8]
    out = summarize([("w", weight, None)], 4, symmetric=True, what="test")
    assert out["zero_fraction"] == 1 / 8 and out["bits_effective"] == 2 and "not sparsity" in out["note"]


@pytest.mark.parametrize("qtype,bits", [("Q4_0", 4), ("Q8_0", 8)])
def test_gguf_codes_are_read_from_the_blocks(tmp_path, qtype, bits):
    """A GGUF tensor quantized by the gguf package: its stored codes need exactly ``bits`` bits per row."""
    import gguf
    import numpy as np

    from kick_models.external.checkpoint import measure_checkpoint

    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 256)).astype(np.float32)
    kind = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    source = {"format": f"gguf:{qtype}", "declared": {"group_size": 32, "symmetric": True}}
    measured = measure_checkpoint(source, tmp_path, "m.gguf")
    assert measured["bits_effective"] == bits and measured["matrices"] == 1
    assert measured["distinct_per_group_max"] <= min(2 ** bits, 32)


# ------------------------------------------------------------------ GGUF files of the embedded model
@pytest.fixture(scope="module")
def smol_ggufs(smol_path, tmp_path_factory):
    """The embedded model's GGUF re-quantized to Q8_0 and Q4_0 with the gguf package."""
    from kick_models.embedded import embedded_gguf_path
    from kick_testlib.gguf_files import requantize_gguf

    folder = tmp_path_factory.mktemp("gguf")
    for qtype in ("Q8_0", "Q4_0"):
        requantize_gguf(embedded_gguf_path(), folder / f"smol-{qtype}.gguf", qtype)
    return folder


def test_gguf_checkpoints_with_the_embedded_parent(smol_ggufs, smol_path):
    runs = {q: kick_info(pretrained=str(smol_ggufs), gguf_file=f"smol-{q}.gguf", parent="embedded")
            for q in ("Q8_0", "Q4_0")}
    for qtype, info in runs.items():
        assert info["model"] == "embedded:SmolLM2-135M-Instruct" and info["method"] == "checkpoint"
        assert info["source"]["format"] == f"gguf:{qtype}" and info["source"]["library"] == "gguf"
        assert info["source"]["measured"]["bits_effective"] <= info["source"]["declared"]["bits"]
        assert info["result"]["fidelity"]["kl_mean"] > 0
    assert runs["Q8_0"]["result"]["fidelity"]["kl_mean"] < runs["Q4_0"]["result"]["fidelity"]["kl_mean"]
    assert runs["Q4_0"]["result"]["fidelity"]["reference"]["cached"] is True  # the parent is measured once


def test_kick_methods_and_dense_record_a_source_of_the_same_shape(tiny_model_dir):
    pruned = kick_info(pretrained=str(tiny_model_dir), method="magnitude", sparsity=0.5, no_cache=True)
    assert pruned["method"] == "magnitude"
    assert pruned["source"]["kind"] == "kick" and pruned["source"]["label"] == "magnitude 0.5"
    assert pruned["source"]["measured"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    dense = kick_info(pretrained=str(tiny_model_dir), no_cache=True)
    assert dense["method"] == "none" and dense["source"]["label"] == "dense"
    keys = {"kind", "label", "library", "version", "format", "checkpoint", "declared", "measured"}
    assert set(pruned["source"]) == set(dense["source"]) == keys


GPTQ_CONFIG = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False,
               "meta": {"quantizer": ["gptqmodel:7.6.0"]}}


@pytest.mark.parametrize("qc,expected", [
    (GPTQ_CONFIG, ("gptqmodel", "7.6.0", "gptq", {"bits": 4, "group_size": 128, "symmetric": True})),
    ({"quant_method": "awq", "w_bit": 4, "q_group_size": 64, "zero_point": True},
     ("awq", None, "awq", {"bits": 4, "group_size": 64, "symmetric": False})),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
     ("bitsandbytes", None, "bitsandbytes-fp4", {"bits": 4, "group_size": 64, "symmetric": True})),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized", "version": "0.14.0",
      "config_groups": {"g": {"weights": {"num_bits": 4, "group_size": 64, "symmetric": False}}}},
     ("compressed-tensors", "0.14.0", "compressed-tensors:pack-quantized", {"bits": 4, "group_size": 64, "symmetric": False})),
])
def test_declared_settings_are_read_from_each_quantization_config(qc, expected):
    from kick_models.external.checkpoint import declared_from_config

    library, version, fmt, declared = declared_from_config(qc)
    assert (library, version, fmt) == expected[:3]
    assert {k: declared[k] for k in expected[3]} == expected[3]


def test_a_kick_export_judged_with_parent_is_credited_to_kick(tiny_model_dir, tmp_path):
    """kick-compress's export carries kick_compression.json: the row says kick made it, not "unquantized"."""
    from kick_models.export import main as kick_compress

    out = tmp_path / "wanda-export"
    assert kick_compress(["--model", str(tiny_model_dir), "--out", str(out), "--method", "magnitude",
                          "--sparsity", "0.5", "--no_cache"]) == 0
    info = kick_info(pretrained=str(out), parent=str(tiny_model_dir), cache_dir=str(tmp_path / "cache"))
    source = info["source"]
    assert source["library"] == "kick" and source["label"] == "kick magnitude 0.5 (hf-dense)"
    assert source["declared"]["sparsity"] == 0.5 and source["declared"]["source_model"] == str(tiny_model_dir)
    assert info["model"] == str(tiny_model_dir) and info["result"]["fidelity"]["kl_mean"] > 0


def test_a_kick_gptq_export_names_kick_as_maker_and_gptqmodel_as_packer(tiny_config_dir, tmp_path):
    """The packed GPTQ export's meta.quantizer says gptqmodel (its packer wrote the bits); the record says kick."""
    import shutil

    from transformers import AutoConfig

    from kick_models.external.checkpoint import checkpoint_source

    folder = shutil.copytree(tiny_config_dir, tmp_path / "gptq")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": GPTQ_CONFIG}))
    (folder / "kick_compression.json").write_text(json.dumps({
        "format": "gptq-packed", "source_model": "org/dense", "kick_model_args": "pretrained=org/dense,method=gptq,wbits=4",
        "summary": {"method": "gptq", "source": {"kind": "kick", "label": "gptq W4", "library": "kick", "version": "0.3",
                                                 "declared": {"bits": 4, "group_size": 128, "symmetric": True}}}}))
    source = checkpoint_source(str(folder), folder, AutoConfig.from_pretrained(folder), None)
    assert source["library"] == "kick" and source["version"] == "0.3" and source["label"] == "kick gptq W4 (gptq-packed)"
    assert source["declared"]["packing"]["by"] == "gptqmodel 7.6.0" and source["declared"]["bits"] == 4
    (folder / "kick_compression.json").unlink()
    assert checkpoint_source(str(folder), folder, AutoConfig.from_pretrained(folder), None)["library"] == "gptqmodel"


def test_gptq_checkpoint_without_its_loader_is_refused(tiny_config_dir, tmp_path, no_weight_loading, monkeypatch):
    import shutil

    folder = shutil.copytree(tiny_config_dir, tmp_path / "gptq")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": GPTQ_CONFIG}))
    monkeypatch.setitem(sys.modules, "gptqmodel", None)
    with pytest.raises(ConfigError) as err:
        kick_lm(pretrained=str(folder), parent=str(tiny_config_dir))
    assert "its quantization (gptq) needs gptqmodel" in str(err.value) and "pip install gptqmodel" in str(err.value)


def test_a_gguf_folder_needs_no_config_json_but_its_gguf_file_must_exist(tmp_path):
    from kick_models.preflight import check_pretrained

    (tmp_path / "model-Q4_0.gguf").write_bytes(b"GGUF")
    check_pretrained(str(tmp_path), "model-Q4_0.gguf")  # GGUF carries its own config
    with pytest.raises(ConfigError) as err:
        check_pretrained(str(tmp_path), "model-Q8_0.gguf")
    assert "gguf_file='model-Q8_0.gguf': no such file" in str(err.value) and "model-Q4_0.gguf" in str(err.value)
    with pytest.raises(ConfigError, match="no config.json"):
        check_pretrained(str(tmp_path))
