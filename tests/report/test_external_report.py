"""Models kick did not compress, on hand-made results: --parent pairing, unpaired reasons, provenance, label identity."""

from __future__ import annotations

import json

import pytest

from kick_study import report as cli
from kick_study.parents import NO_KL, ParentLink, apply_links, parse_links, read_mapping
from kick_study.provenance import provenance_rows
from kick_study.runs import ReportError, Setting, load_runs

STAMP = "2026-01-01T00-00-00.000001"
TASK = "kick_mmlu_physics"
DENSE = [1, 1, 1, 1, 0, 0, 1, 1, 0, 1]
CKPT = [1, 0, 1, 0, 0, 1, 0, 1, 0, 0]  # 4 right→wrong, 1 wrong→right


def _write(writer, folder, model_args, correct, *, kick=None, model="kick-hf"):
    """A results file and its samples file (one 2-option question per item, the first option right)."""
    path = writer(folder, model_args, {TASK: {"acc": sum(correct) / len(correct)}}, kick=kick, stamp=STAMP, model=model)
    data = json.loads(path.read_text())
    data["configs"] = {TASK: {"output_type": "multiple_choice"}}
    path.write_text(json.dumps(data))
    lines = []
    for i, c in enumerate(correct):
        logliks = [-1.0, -2.0] if c else [-2.0, -1.0]
        lines.append({"doc_id": i, "doc": {}, "target": 0, "arguments": [["q", " A"], ["q", " B"]],
                      "resps": [[[str(x), "False"]] for x in logliks], "filtered_resps": [[str(x), "False"] for x in logliks],
                      "filter": "none", "metrics": ["acc"], "doc_hash": f"d{i}", "prompt_hash": "p", "target_hash": "t",
                      "acc": float(c)})
    (path.parent / f"samples_{TASK}_{STAMP}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _source(kind, label, library, version, bits, **measured):
    return {"kind": kind, "label": label, "library": library, "version": version, "format": "compressed-tensors",
            "checkpoint": f"/ckpt/{label}", "declared": {"bits": bits, "group_size": 64, "symmetric": True},
            "measured": measured}


def _fid(kl):
    from kick_models.fidelity import KL_FORMAT

    return {"kl_format": KL_FORMAT, "kl_mean": kl, "top1_agreement": 0.9, "kl_windows": [kl] * 4,
            "top1_windows": [0.9] * 4, "ppl_dense": 10.0, "ppl_compressed": 11.0, "tokens": 1024, "top_k": 64,
            "seconds": 2.0}


@pytest.fixture
def stock_dir(tmp_path, results_writer):
    """A dense run and a stock `lm_eval --model hf` run of a checkpoint folder that declares GPTQ 4-bit."""
    ckpt = tmp_path / "llmc-w4"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4, "group_size": 64}}}}}))
    root = tmp_path / "results"
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, model="hf")
    _write(results_writer, root / "ckpt", {"pretrained": str(ckpt)}, CKPT, model="hf")
    return root, ckpt


def test_stock_run_is_unpaired_without_parent_and_says_why(stock_dir, tmp_path):
    root, ckpt = stock_dir
    text = cli.build_report(root, tmp_path / "r.md", plots=False).read_text()
    section = text[text.index(f"## {ckpt}"):]
    assert "### Unpaired" in section and "--parent" in section
    assert "declares quantization_config (compressed-tensors, 4 bits)" in section
    assert "flips" not in section.split("### Largest")[0]


def test_parent_pairs_a_stock_run_item_by_item(stock_dir, tmp_path):
    root, ckpt = stock_dir
    assert cli.main([str(root), "--out", str(tmp_path / "r.md"), "--no_plots",
                     "--parent", f"{root / 'ckpt'}=org/tiny"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert f"## {ckpt}" not in text  # no longer a model of its own
    row = next(line for line in text.splitlines() if line.startswith("| llmc-w4 · lm_eval --model hf | 0% | 1 | 10 |"))
    assert "| 4 / 1 |" in row  # right→wrong / wrong→right
    assert "0.375" in row  # exact two-sided binomial p for 4 vs 1 flips (scipy.stats.binomtest(1, 5).pvalue)
    assert NO_KL in text
    assert "run made elsewhere, paired by --parent: lm_eval --model hf" in text
    assert "bits=4, group_size=64" in text  # declared by its config.json


def test_parent_sides_may_be_files_folders_or_model_names_with_a_mapping_file(stock_dir, tmp_path):
    root, ckpt = stock_dir
    dense_file = next((root / "dense").rglob("results_*.json"))
    mapping = root.parent / "pairs.yaml"
    mapping.write_text(f"- {{run: '{ckpt}/', parent: {dense_file.relative_to(root.parent)}, label: llmc}}\n")
    runs = apply_links(load_runs(root), read_mapping(mapping))
    moved = [r for r in runs if r.setting.is_external]
    assert [(r.model, r.setting.label) for r in moved] == [("org/tiny", "llmc · lm_eval --model hf")]


@pytest.mark.parametrize("value, words", [
    ("no-equals", "invalid --parent 'no-equals'"),
    ("ghost=org/tiny", "RUN 'ghost' names no run"),
    ("org/tiny=ghost", "DENSE 'ghost' names no dense run"),
])
def test_bad_parent_links_are_refused_naming_the_value(stock_dir, value, words):
    root, _ = stock_dir
    with pytest.raises(ReportError, match=words):
        apply_links(load_runs(root), parse_links([value]))


def test_the_same_label_for_two_checkpoints_is_refused(stock_dir, results_writer, tmp_path):
    root, ckpt = stock_dir
    _write(results_writer, root / "other", {"pretrained": "/elsewhere/llmc-w4"}, CKPT, model="vllm")
    links = [ParentLink(str(ckpt), "org/tiny"), ParentLink("/elsewhere/llmc-w4", "org/tiny")]
    with pytest.raises(ReportError, match="label 'llmc-w4' is already used"):
        apply_links(load_runs(root), links)


@pytest.fixture
def contract_dir(tmp_path, results_writer):
    """kick-hf results of one parent: dense, kick's GPTQ W4, two libraries' GPTQ W4 checkpoints, LLM.int8 at load."""
    from kick_models.config import build_config

    root = tmp_path / "results"
    base = {"model": "embedded:SmolLM2-135M-Instruct"}
    _write(results_writer, root / "dense", {"method": "none"}, DENSE,
           kick={**base, "compression": build_config({}).to_dict(), "result": {"fidelity": _fid(0.0)}})
    _write(results_writer, root / "gptq", {"method": "gptq", "wbits": 4}, CKPT,
           kick={**base, "compression": build_config({"method": "gptq", "wbits": 4}).to_dict(),
                 "result": {"fidelity": _fid(0.30), "achieved_sparsity": 0.01, "achieved_bits": 4}})
    for name, lib, kl in (("gptq-w4", "llm-compressor", 0.48), ("gptq-w4", "gptqmodel", 0.37)):
        src = _source("checkpoint", name, lib, "1.0", 4, bits_effective=3.9, distinct_per_group_max=16, zero_fraction=0.06,
                      note="symmetric int4 stores real zeros: not sparsity")
        _write(results_writer, root / lib, {"pretrained": f"/ckpt/{lib}", "parent": "embedded"}, CKPT,
               kick={**base, "method": "checkpoint", "source": src, "result": {"fidelity": _fid(kl)}})
    src = _source("load-time", "bnb8", "bitsandbytes", "0.50.0", 8, bits_effective=8.0)
    src["format"] = "LLM.int8"
    _write(results_writer, root / "bnb8", {"method": "bnb8"}, DENSE,
           kick={**base, "method": "bnb8", "source": src, "result": {"fidelity": _fid(0.015)}})
    return root


def test_two_gptq_w4_checkpoints_from_two_libraries_stay_apart(contract_dir, tmp_path):
    runs = load_runs(contract_dir)
    settings = {r.setting for r in runs}
    assert len(settings) == 5
    assert Setting("gptq", "unstructured", 4) in settings
    labels = sorted(s.label for s in settings if s.is_external)
    assert labels == ["bnb8 · bitsandbytes 0.50.0", "gptq-w4 · gptqmodel 1.0", "gptq-w4 · llm-compressor 1.0"]
    text = cli.build_report(contract_dir, tmp_path / "r.md").read_text()
    assert (tmp_path / "plots").is_dir()
    paired = text[text.index("Paired with dense"):]
    rows = [line.split(" |")[0][2:] for line in paired.splitlines()[4:9] if line.startswith("| ")]
    assert rows == ["gptq w4", "bnb8 · bitsandbytes 0.50.0", "gptq-w4 · gptqmodel 1.0", "gptq-w4 · llm-compressor 1.0"]


def test_provenance_rows_name_source_measured_bits_and_kl(contract_dir):
    rows = {r.label: r for r in provenance_rows(load_runs(contract_dir), "embedded:SmolLM2-135M-Instruct")}
    assert list(rows)[0] == "dense" and rows["dense"].kl == "0 (the reference)"
    kick = rows["gptq w4"]
    assert kick.origin.startswith("kick gptq (wbits=4, group_size=128") and kick.kl == "0.3000"
    assert kick.measured == "zero_fraction=0.0100, bits_effective=4"  # rounding zeros, not pruning; bits measured
    llmc = rows["gptq-w4 · llm-compressor 1.0"]
    assert llmc.origin == "pre-compressed checkpoint: llm-compressor 1.0"
    assert llmc.artefact == "compressed-tensors · /ckpt/gptq-w4"
    assert llmc.declared == "bits=4, group_size=64, symmetric=True"
    assert llmc.measured.startswith("bits_effective=3.9, distinct_per_group_max=16, zero_fraction=0.06; symmetric int4")
    assert llmc.kl == "0.4800"
    bnb = rows["bnb8 · bitsandbytes 0.50.0"]
    assert bnb.origin == "quantized when loaded: bitsandbytes 0.50.0" and bnb.kl == "0.0150"


def test_kick_export_record_still_pairs_a_stock_run(tmp_path, results_writer):
    """The older path: a kick-compress export folder's kick_compression.json, no --parent needed."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "kick_compression.json").write_text(json.dumps(
        {"source_model": "org/tiny", "summary": {"compression": {"method": "wanda", "target_sparsity": 0.5}}}))
    root = tmp_path / "results"
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, model="hf")
    _write(results_writer, root / "export", {"pretrained": str(export)}, CKPT, model="hf")
    runs = load_runs(root)
    assert {(r.model, r.setting.label, r.sparsity) for r in runs} == {("org/tiny", "dense", 0.0),
                                                                      ("org/tiny", "wanda", 0.5)}


def test_a_lone_dense_model_is_not_called_unpaired(tmp_path, results_writer):
    root = tmp_path / "results"
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, model="hf")
    text = cli.build_report(root, tmp_path / "r.md", plots=False).read_text()
    assert "Unpaired" not in text and "### Where each row came from" in text


def test_two_checkpoints_read_as_one_row_are_kept_apart_by_their_names(tmp_path, results_writer):
    root = tmp_path / "results"
    base = {"model": "org/tiny"}
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, kick={**base, "compression": {"method": "none"}})
    for name in ("a", "b"):
        src = {**_source("checkpoint", "GGUF Q4_0", "gguf", "0.19.0", 4), "checkpoint": f"/ckpts/{name}/m.gguf"}
        _write(results_writer, root / name, {"pretrained": f"/ckpts/{name}"}, CKPT,
               kick={**base, "method": "checkpoint", "source": src})
    labels = sorted(r.setting.label for r in load_runs(root) if r.setting.is_external)
    assert labels == ["GGUF Q4_0 [a/m.gguf]", "GGUF Q4_0 [b/m.gguf]"]  # the library is in the label already


def test_sweep_labels_from_the_index_name_the_rows(tmp_path, results_writer):
    root = tmp_path / "results"
    base = {"model": "org/tiny"}
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, kick={**base, "compression": {"method": "none"}})
    path = _write(results_writer, root / "cells" / "c1", {"pretrained": "/ckpts/q4"}, CKPT,
                  kick={**base, "method": "checkpoint", "source": _source("checkpoint", "GGUF Q4_0", "gguf", "0.19.0", 4)})
    (root / "index.json").write_text(json.dumps({"cells": {"c1": {
        "cell_id": "c1", "label": "my-q4", "status": "ok", "results_file": path.relative_to(root).as_posix()}}}))
    text = cli.build_report(root, tmp_path / "r.md", plots=False).read_text()
    assert "| my-q4 · gguf 0.19.0 | 0% | 1 | 10 |" in text


def test_a_checkpoint_evaluated_without_parent_says_how_to_pair_it(tmp_path, results_writer):
    root = tmp_path / "results"
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, model="hf")
    _write(results_writer, root / "ckpt", {"pretrained": "/ckpts/q4"}, CKPT,
           kick={"model": "/ckpts/q4", "method": "checkpoint", "source": _source("checkpoint", "q4", "gguf", "0.19", 4)})
    text = cli.build_report(root, tmp_path / "r.md", plots=False).read_text()
    assert "No dense run of `/ckpts/q4` is here" in text and "--parent /ckpts/q4=DENSE" in text
    runs = apply_links(load_runs(root), parse_links(["/ckpts/q4=org/tiny"]))
    assert {(r.model, r.setting.label) for r in runs} == {("org/tiny", "dense"), ("org/tiny", "q4 · gguf 0.19")}


def test_a_stale_kl_and_an_unquantized_checkpoint_are_said_so(tmp_path, results_writer):
    """An older kick-hf's KL is not shown as a number; a checkpoint of 16-bit weights is not a failed compression."""
    from kick_study.comparison import STALE_KL

    root = tmp_path / "results"
    base = {"model": "org/tiny"}
    _write(results_writer, root / "dense", {"pretrained": "org/tiny"}, DENSE, kick={**base, "compression": {"method": "none"}})
    old = {**_fid(0.2), "kl_format": 1}
    src = {"kind": "checkpoint", "label": "fp16 copy", "library": None, "checkpoint": "/ckpts/fp16", "declared": {}}
    _write(results_writer, root / "ckpt", {"pretrained": "/ckpts/fp16"}, CKPT,
           kick={**base, "method": "checkpoint", "source": src, "result": {"fidelity": old}})
    rows = {r.label: r for r in provenance_rows(load_runs(root), "org/tiny")}
    assert rows["fp16 copy"].kl == STALE_KL
    text = cli.build_report(root, tmp_path / "r.md", plots=False).read_text()
    assert "Compression warnings" not in text and "| fp16 copy | 0% | 1 | 10 |" in text
