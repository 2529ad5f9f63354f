"""The second audit's bad inputs to kick-hf and kick-compress: each refused before any weight loads with one
message naming the key, the value and what is accepted, and nothing written; no-ops never recorded as compression."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from kick_common.env import EnvError, check_environment
from kick_models import export
from kick_models.achieved import bits_warning, measured_levels, most_levels, sparsity_warning
from kick_models.config import ConfigError, build_config
from kick_models.lm import KickHFLM, command_line_model_args, duplicate_keys


def kick_hf(model_dir, **args):
    return KickHFLM(pretrained=str(model_dir), device="cpu", cache_dir=str(model_dir.parent / "cache"), **args)


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- item 2: no-ops
@pytest.mark.parametrize("args, message", [
    ({"method": "magnitude"}, r"sparsity='\(not given\)'; accepted: a number in \(0, 1\), or pattern=N:M, with method=magnitude"),
    ({"method": "wanda", "sparsity": 0}, r"sparsity=0.0; accepted: a number in \(0, 1\), or pattern=N:M, with method=wanda"),
    ({"method": "sparsegpt", "wbits": 4}, r"sparsity='\(not given\)'.*with method=sparsegpt"),
    ({"method": "gptq", "wbits": 16}, r"wbits=16; accepted: one of 2, 3, 4, 8 with method=gptq \(16 bits quantizes nothing"),
    ({"method": "rtn", "wbits": "16"}, r"wbits=16; accepted: one of 2, 3, 4, 8 with method=rtn"),
])
def test_a_method_that_would_change_nothing_is_refused(args, message):
    with pytest.raises(ConfigError, match=rf"^kick-hf: invalid model_arg {message}"):
        build_config(args)


def test_the_dense_model_and_real_settings_still_pass():
    assert build_config({}).is_noop and build_config({"method": "none"}).is_noop
    assert build_config({"method": "magnitude", "pattern": "2:4"}).prunes
    assert build_config({"method": "gptq"}).wbits == 4


def test_achieved_sparsity_far_from_the_target_is_a_warning():
    config = build_config({"method": "magnitude", "sparsity": 0.5})

    def summary(zeros):
        return {"matrices": {"by_kind": {"compressed linear": {"params": 100, "zeros": zeros},
                                         "dense router (never compressed)": {"params": 10, "zeros": 0}}}}

    assert sparsity_warning(config, summary(50)) is None
    assert sparsity_warning(config, summary(47)) is None  # within the tolerance
    assert "achieved sparsity 0.0000 over the compressed matrices, target 0.5" in sparsity_warning(config, summary(0))
    assert "compressed no matrix" in sparsity_warning(config, {"matrices": {"by_kind": {}}})


def test_levels_per_group_count_what_a_grid_allows():
    grid = torch.tensor([[0.0, 0.5, 1.0, 1.5] * 8])  # 4 levels in each group of 8
    assert most_levels(grid, 8) == 4 and most_levels(grid, -1) == 4
    assert most_levels(torch.arange(32.0).reshape(1, 32), 8) == 8


def _noop_prune(weights, stats, job):
    from kick_models.compression.magnitude import PruneResult

    return [PruneResult(w.clone(), torch.ones_like(w, dtype=torch.bool), 0.0) for w in weights]


def _noop_quantize(weight, stats, job, mask):
    import dataclasses

    from kick_models.compression.quant import quantize_rtn

    return dataclasses.replace(quantize_rtn(weight, bits=job.config.wbits, group_size=job.config.group_size),
                               weight=weight.clone())


@pytest.fixture
def noop_plugins(monkeypatch):
    """Two plug-ins that change nothing: a pruner and a quantizer (as a buggy plug-in would)."""
    import sys
    import types
    from importlib import metadata

    from kick_models.compression import registry

    module = types.ModuleType("kick_noop_plugins")
    module.prune = registry.Method(name="noprune", kind="prune", version="1", summary="prunes nothing", prune=_noop_prune)
    module.quant = registry.Method(name="noquant", kind="quantize", version="1", summary="quantizes nothing",
                                   quantize=_noop_quantize)
    monkeypatch.setitem(sys.modules, "kick_noop_plugins", module)
    eps = [metadata.EntryPoint("noprune", "kick_noop_plugins:prune", registry.ENTRY_POINT_GROUP),
           metadata.EntryPoint("noquant", "kick_noop_plugins:quant", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None: eps if group == registry.ENTRY_POINT_GROUP else [])
    registry.reload()
    yield
    registry.reload()


def test_a_plugin_that_compresses_nothing_is_recorded_as_such(tiny_model_dir, noop_plugins, caplog):
    caplog.set_level(logging.WARNING)
    lm = kick_hf(tiny_model_dir, method="noprune", sparsity=0.5, no_cache=True, fidelity=False)
    warnings = lm.get_model_info()["kick"]["warnings"]
    assert len(warnings) == 1 and "achieved sparsity 0.0000 over the compressed matrices, target 0.5" in warnings[0]
    assert any("achieved sparsity 0.0000" in r.getMessage() for r in caplog.records)
    lm = kick_hf(tiny_model_dir, method="noquant", wbits=4, group_size=32, no_cache=True, fidelity=False)
    warning = lm.get_model_info()["kick"]["warnings"][0]
    assert "distinct values in one group of 32, more than the 16 a 4-bit grid allows" in warning


def test_real_compression_records_no_warning(tiny_model_dir):
    for args in ({"method": "magnitude", "sparsity": 0.5}, {"method": "rtn", "wbits": 4, "group_size": 32}):
        lm = kick_hf(tiny_model_dir, no_cache=True, fidelity=False, **args)
        assert "warnings" not in lm.get_model_info()["kick"], args
        levels = measured_levels(lm.kick_config, lm.model)
        assert bits_warning(lm.kick_config, levels) is None
        assert lm.get_model_info()["kick"]["result"].get("achieved_bits") == (None if levels is None else 4)


# --------------------------------------------------------------------------- items 3, 4: conflicting and repeated args
def test_pretrained_none_typed_by_hand_is_refused(no_weight_loading):
    with pytest.raises(ConfigError, match=r"pretrained=None; accepted: a Hub id or a local model folder, or no pretrained"):
        KickHFLM.create_from_arg_string("pretrained=None,method=magnitude,sparsity=0.5")


def test_a_key_given_twice_is_refused_naming_both_values(no_weight_loading):
    assert duplicate_keys("a=1,b=2,a=3,b=2,c=1") == ["a", "b"]
    with pytest.raises(ConfigError, match=r"model_arg sparsity is given 2 times in --model_args \(sparsity=0.3, sparsity=0.9\); "
                                          "accepted: each key once"):
        KickHFLM.create_from_arg_string("method=magnitude,sparsity=0.3,sparsity=0.9")
    argv = ["lm_eval", "--model", "kick-hf", "--model_args", "method=wanda,sparsity=0.5", "seed=1", "--tasks", "x",
            "-a", "seed=2"]
    assert duplicate_keys(command_line_model_args(argv)) == ["seed"]


def test_ria_permute_without_a_pattern_is_refused():
    with pytest.raises(ConfigError, match=r"ria_permute=True; accepted: .*pattern=N:M"):
        build_config({"method": "ria", "sparsity": 0.5, "ria_permute": "true"})
    assert build_config({"method": "ria", "pattern": "2:4", "ria_permute": "true"}).params["ria_permute"] is True


@pytest.mark.parametrize("argv, message", [
    (["--model_args", "pretrained=other/model"], r"--model_args pretrained=other/model conflicts with --model"),
    (["--sparsity", "0.3", "--model_args", "sparsity=0.9"],
     r"--sparsity 0.3 and --model_args sparsity=0.9 both set sparsity; accepted: one of the two"),
    (["--model_args", "seed=1,seed=2"], r"seed is given 2 times in --model_args"),
])
def test_kick_compress_refuses_a_setting_given_twice(tiny_config_dir, tmp_path, capsys, no_weight_loading, argv, message):
    base = ["--model", str(tiny_config_dir), "--method", "magnitude", "--out", str(tmp_path / "out")]
    if "--sparsity" not in argv:
        base += ["--sparsity", "0.5"]
    assert export.main([*base, *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[0].startswith("kick-")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- item 7: data loss
@pytest.mark.parametrize("where", ["source", "parent", "inside", "cache", "cwd"])
def test_kick_compress_never_writes_over_or_into_its_source(tiny_model_dir, tmp_path, capsys, monkeypatch, where):
    source = tmp_path / "models" / "tiny"
    source.parent.mkdir()
    import shutil

    shutil.copytree(tiny_model_dir, source)
    (tmp_path / "models" / "sibling").mkdir()
    before = _tree(tmp_path / "models")
    monkeypatch.chdir(tmp_path / "models")
    out = {"source": source, "parent": source.parent, "inside": source / "compressed",
           "cache": os.environ["KICK_CACHE_DIR"], "cwd": "."}[where]
    assert export.main(["--model", str(source), "--method", "magnitude", "--sparsity", "0.5",
                        "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"kick-compress: --out {str(os.path.realpath(out))!r}" in err and "accepted: " in err, err
    assert _tree(tmp_path / "models") == before  # the source and its siblings survive, nothing was added


# --------------------------------------------------------------------------- item 9: Hub calibration offline
@pytest.mark.parametrize("args, shown", [
    ({"method": "wanda", "sparsity": 0.5}, "calib=c4 (method=wanda's default)"),
    ({"method": "sparsegpt", "sparsity": 0.5, "calib": "c4"}, "calib=c4:"),
    ({"method": "gptq", "wbits": 4, "group_size": 32}, "calib=wikitext2 (method=gptq's default)"),
])
def test_hub_calibration_offline_is_refused_naming_bundled(tiny_config_dir, no_weight_loading, monkeypatch, args, shown):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_config_dir.parent / "empty-hub-cache"))
    with pytest.raises(ConfigError, match=rf"{shown.replace('(', '[(]').replace(')', '[)]')}.*not reachable.*accepted "
                                          r"offline: calib=bundled"):
        kick_hf(tiny_config_dir, **args)
    with pytest.raises(AssertionError, match="HFLM started loading"):  # the offline choice passes every check
        kick_hf(tiny_config_dir, **{**args, "calib": "bundled"})


# --------------------------------------------------------------------------- item 10: environment
@pytest.mark.parametrize("name, value, accepted", [
    ("KICK_CACHE_LOCK_TIMEOUT", "abc", "seconds >= 0, or -1 to wait forever"),
    ("KICK_CACHE_LOCK_TIMEOUT", "-5", "seconds >= 0, or -1 to wait forever"),
    ("KICK_JUDGE_CONCURRENCY", "abc", "an integer >= 1"),
    ("KICK_JUDGE_CONCURRENCY", "0", "an integer >= 1"),
    ("KICK_JUDGE_DISABLE", "maybe", "1 | true | yes | on or 0 | false | no | off"),
    ("KICK_JUDGE_CACHE", "perhaps", "1 | true | yes | on or 0 | false | no | off"),
    ("KICK_JUDGE_TIMEOUT", "nan", "seconds > 0"),
    ("KICK_JUDGE_MAX_RETRIES", "-1", "an integer >= 0"),
    ("KICK_ICRQA_SOURCE", "web", "hub | mini"),
])
def test_bad_environment_settings_are_refused_before_loading(tiny_config_dir, no_weight_loading, monkeypatch,
                                                             name, value, accepted):
    monkeypatch.setenv(name, value)
    message = rf"^kick: invalid environment variable {name}={value!r}; accepted: {accepted}"
    with pytest.raises(EnvError, match=message.replace("|", r"\|")):
        kick_hf(tiny_config_dir, method="magnitude", sparsity=0.5)


def test_a_non_http_judge_url_is_refused_without_its_credentials(monkeypatch):
    monkeypatch.setenv("KICK_JUDGE_BASE_URL", "ftp://user:secret@judge.example/v1")
    message = r"KICK_JUDGE_BASE_URL='ftp://judge.example…'; accepted: an http:// or https:// URL"
    with pytest.raises(EnvError, match=message) as err:
        check_environment()
    assert "secret" not in str(err.value)


def test_an_unreachable_judge_is_said_before_loading_without_secrets(tiny_config_dir, no_weight_loading, monkeypatch, caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KICK_JUDGE_MODEL", "judge")
    monkeypatch.setenv("KICK_JUDGE_API_KEY", "sk-secret")
    monkeypatch.setenv("KICK_JUDGE_BASE_URL", f"http://user:pw@127.0.0.1:{port}/v1")
    caplog.set_level(logging.WARNING)
    with pytest.raises(AssertionError, match="HFLM started loading"):
        kick_hf(tiny_config_dir, method="magnitude", sparsity=0.5)
    said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert said and f"http://127.0.0.1:{port}" in said[0] and "KICK_JUDGE_DISABLE=1" in said[0]
    assert not any("secret" in r.getMessage() or "pw@" in r.getMessage() for r in caplog.records)


def test_an_unknown_kick_variable_is_named_in_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("KICK_JUDGE_CONCURENCY", "4")
    caplog.set_level(logging.WARNING)
    check_environment()
    assert any("KICK_JUDGE_CONCURENCY are not kick settings" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- item 11: model folders
def _empty(folder):
    pass


def _corrupt_config(folder):
    (folder / "config.json").write_text("{not json", encoding="utf-8")


def _weightless(folder):
    for p in folder.glob("*.safetensors"):
        p.unlink()


def _truncated(folder):
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _missing_shard(folder):
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002.safetensors"}}))


@pytest.mark.parametrize("break_it, problem", [
    (_empty, "an empty folder"),
    (_corrupt_config, "config.json is not valid JSON"),
    (_weightless, r"no weight files \(\*.safetensors"),
    (_truncated, r"model.safetensors is truncated \(\d+ bytes of \d+\)"),
    (_missing_shard, r"model.safetensors.index.json lists 1 missing shard\(s\), e.g. model-00002.safetensors"),
])
def test_a_broken_model_folder_is_refused_naming_what_is_wrong(tiny_model_dir, tmp_path, no_weight_loading,
                                                              break_it, problem):
    import shutil

    folder = tmp_path / "model"
    if break_it is _empty:
        folder.mkdir()
    else:
        shutil.copytree(tiny_model_dir, folder)
    break_it(folder)
    with pytest.raises(ConfigError, match=rf"pretrained='{folder}': {problem}.*accepted: an existing local model folder"):
        KickHFLM(pretrained=str(folder), method="magnitude", sparsity=0.5)


def test_names_that_cannot_be_a_model_are_refused(tmp_path, monkeypatch, no_weight_loading):
    monkeypatch.chdir(tmp_path)
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(ConfigError, match=r"pretrained='loop': a symlink loop"):
        KickHFLM(pretrained="loop")
    with pytest.raises(ConfigError, match=r"pretrained='': empty \(leave pretrained out for the embedded model\)"):
        KickHFLM.create_from_arg_string("pretrained=,method=magnitude,sparsity=0.5")
    with pytest.raises(ConfigError, match=r"pretrained='tiny--lama': not a local folder, nor a Hub id"):
        KickHFLM(pretrained="tiny--lama")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"pretrained='tiny-lama': not a local folder, and no config for it can be had "
                                          r"from the Hugging Face Hub or its cache \("):
        KickHFLM(pretrained="tiny-lama", method="magnitude", sparsity=0.5)


# --------------------------------------------------------------------------- item 11: arguments against the model
@pytest.mark.parametrize("args, message", [
    ({"method": "magnitude", "pattern": "1:1000000"},
     r"pattern=1:1000000: M=1000000 does not divide the 64 input features of model.layers.0.\S+ \(\d+ matrices\); "
     r"accepted: N:M with 0 < N < M and M dividing 64"),
    ({"method": "magnitude", "pattern": "2:3"}, r"pattern=2:3: M=3 does not divide"),
    ({"method": "rtn", "wbits": 4}, r"group_size=128: larger than the 64 input features.*choose a power of two that "
                                     r"divides every layer width, here group_size=64, or -1"),
    ({"method": "wanda", "sparsity": 0.5, "calib": "bundled", "nsamples": 10**9},
     r"nsamples=1000000000: the calibration activations alone need about .* GiB.*accepted: nsamples in 1\.\.\d+"),
    ({"method": "magnitude", "sparsity": 0.5, "max_length": "abc"}, r"max_length='abc'; accepted: a positive integer"),
    ({"method": "magnitude", "sparsity": 0.5, "max_length": -1}, r"max_length=-1; accepted: a positive integer"),
    ({"method": "magnitude", "sparsity": 0.5, "dtype": "int8"}, r"dtype='int8'; accepted: auto \| float16 \| bfloat16"),
    ({"method": "magnitude", "sparsity": 0.5, "batch_size": "abc"}, r"batch_size='abc'; accepted: a positive integer, auto"),
    ({"method": "magnitude", "sparsity": 0.5, "keep_grids": True},
     r"invalid model_arg keep_grids=true with method=magnitude: .*accepted: false, or true with a quantizer"),
])
def test_arguments_the_model_cannot_take_are_refused(tiny_config_dir, no_weight_loading, args, message):
    with pytest.raises(ConfigError, match=message):
        kick_hf(tiny_config_dir, **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_on_a_cpu_machine_is_refused(tiny_config_dir, no_weight_loading):
    with pytest.raises(ConfigError, match=r"device='cuda:0': this machine has no CUDA GPU; accepted: cpu"):
        KickHFLM(pretrained=str(tiny_config_dir), device="cuda:0", method="magnitude", sparsity=0.5)


@pytest.mark.parametrize("model_config, narrow", [
    ("gpt2", r"transformer.h.0.attn.c_attn"),  # Conv1D, stored [in, out]
    ("mixtral", r"model.layers.0.mlp.experts.down_proj\[0\]"),  # fused experts: each expert's own width
])
def test_group_size_is_checked_against_conv1d_and_expert_widths(model_config, narrow):
    from transformers import GPT2Config, MixtralConfig

    from kick_models.preflight import check_group_size, matrix_widths

    config = (GPT2Config(n_embd=48, n_layer=1, n_head=2, vocab_size=64) if model_config == "gpt2" else
              MixtralConfig(vocab_size=64, hidden_size=64, intermediate_size=48, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=1, num_local_experts=2, num_experts_per_tok=1))
    widths = matrix_widths(config, {})
    assert min(widths.values()) == 48
    with pytest.raises(ConfigError, match=rf"group_size=64: larger than the 48 input features of {narrow}.*here "
                                          r"group_size=16, or -1"):
        check_group_size(build_config({"method": "rtn", "wbits": 4, "group_size": 64}), widths)
    check_group_size(build_config({"method": "rtn", "wbits": 4, "group_size": 48}), widths)
    if model_config == "mixtral":  # experts left dense are not grouped
        assert min(matrix_widths(config, {}, skip_experts=True).values()) == 64


@pytest.mark.parametrize("value, kind, expected", [
    ("0.5", float, 0.5), (3, float, 3.0), (" 4 ", int, 4), (4.0, int, 4), ("4.0", int, None), (4.5, int, None),
    (True, float, None), (True, int, None), ("nan", float, None), ("inf", float, None), ("abc", float, None),
    (None, float, None), ("-1", int, -1),
])
def test_one_reading_of_numbers(value, kind, expected):
    from kick_common.args import as_number

    assert as_number(value, kind) == expected and type(as_number(value, kind)) is type(expected)


def test_kicks_own_model_args_are_declared_as_params_matching_the_config():
    """kick's own keys are Params like a plug-in's (one coercion, one message shape); they must not drift from the config."""
    import dataclasses

    from kick_models.config import KICK_PARAMS, CompressionConfig, compression_keys

    defaults = CompressionConfig().to_dict()  # as the user writes them (pattern: "unstructured")
    fields = {f.name: defaults[f.name] for f in dataclasses.fields(CompressionConfig) if f.name != "method_args"}
    assert {p.name: p.default for p in KICK_PARAMS} == fields
    assert set(fields) <= set(compression_keys())
    with pytest.raises(ConfigError, match=r"^kick-hf: invalid model_arg owl_m=0.0; accepted: a number > 0$"):
        build_config({"method": "wanda", "sparsity": 0.5, "sparsity_profile": "owl", "owl_m": 0.0})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without CUDA")
def test_the_harness_default_device_falls_back_to_cpu_but_a_model_arg_device_is_refused(caplog):
    """lm-eval's CLI passes ``device='cuda:0'`` by default: a CPU machine runs on cpu, as ``hf`` does;
    the same device typed into --model_args is still refused before loading."""
    from kick_models.lm import harness_device_fallback
    from kick_models.preflight import check_device

    with caplog.at_level("WARNING"):
        assert harness_device_fallback({"device": "cuda:0", "batch_size": 1}) == {"device": "cpu", "batch_size": 1}
    assert "cuda:0 is not available" in caplog.text
    assert harness_device_fallback({"device": "cpu"}) == {"device": "cpu"}
    assert harness_device_fallback(None) is None
    with pytest.raises(ConfigError, match="device='cuda:0'"):
        check_device("cuda:0")
