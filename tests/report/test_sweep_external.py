"""kick-sweep cells beside the grid: external checkpoints and one-cell method entries, checked before any cell runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kick_study import grid, sweep
from kick_study.settings import DEFAULTS, SweepSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "table2.yaml"


def settings(**over):
    base = {**DEFAULTS, "models": ["embedded", "org/tiny"], "methods": [], "tasks": ["t"], "wikitext": "false",
            "out": "unused"}
    base.update(over)
    return SweepSettings.from_mapping(base)


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "m.Q4_0.gguf").write_bytes(b"GGUF")
    (tmp_path / "llmc-w4").mkdir()
    return folder


def test_external_entries_become_parent_cells_without_kick_method_settings(ckpt, tmp_path):
    external = [{"path": str(ckpt / "m.Q4_0.gguf"), "label": "gguf-q4_0", "parent": "embedded"},
                {"path": str(tmp_path / "llmc-w4"), "parent": "org/tiny", "model_args": {"dtype": "float32"}},
                {"path": "someorg/gptq-w4", "label": "hub-gptq", "parent": "org/tiny"}]
    s = settings(external=external, methods=["wanda"], sparsities=[0.5], model_args={"nsamples": 8, "fidelity": True})
    cells = grid.plan_cells(s, ["t"])
    ext = [c for c in cells if c.method == grid.EXTERNAL_METHOD]
    assert [c.model_args for c in ext] == [
        f"pretrained={ckpt},parent=embedded,label=gguf-q4_0,fidelity=true,gguf_file=m.Q4_0.gguf",
        f"pretrained={tmp_path / 'llmc-w4'},parent=org/tiny,label=llmc-w4,fidelity=true,dtype=float32",
        "pretrained=someorg/gptq-w4,parent=org/tiny,label=hub-gptq,fidelity=true",
    ]
    assert [c.label for c in ext] == ["gguf-q4_0", "llmc-w4", "hub-gptq"]
    assert len({c.cell_id for c in cells}) == len(cells) == 2 * 2 + 3  # dense + wanda per model, then the checkpoints
    assert "nsamples" not in "".join(c.model_args for c in ext)  # never re-compressed: no calibration settings


@pytest.mark.parametrize("entry, message", [
    ({"path": "./missing-folder", "parent": "embedded"}, "invalid external[0].path='./missing-folder'"),
    ({"path": "CKPT", "parent": "embedded", "gguf_file": "other.gguf"}, "invalid external[0].gguf_file='other.gguf'"),
    ({"path": "CKPT", "parent": "org/absent"}, "invalid external[0].parent='org/absent'; accepted: one of models"),
    ({"path": "CKPT", "parent": "embedded", "bits": 4}, "invalid external[0].bits=4; accepted: keys path, label"),
    ({"parent": "embedded"}, "invalid external[0].path=None"),
    ({"path": "CKPT", "parent": "embedded", "label": "w4,g64"}, "invalid external[0].label='w4,g64'; accepted: a short "
     "label without commas"),
    ("just-a-path", "invalid external[0]"),
])
def test_bad_external_entries_are_refused_naming_the_key(ckpt, entry, message):
    if isinstance(entry, dict) and entry.get("path") == "CKPT":
        entry = {**entry, "path": str(ckpt)}
    with pytest.raises(grid.SweepError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        settings(external=[entry])


def test_two_external_entries_may_not_share_a_label(ckpt):
    entry = {"path": str(ckpt / "m.Q4_0.gguf"), "label": "q4", "parent": "embedded"}
    with pytest.raises(grid.SweepError, match=r"external\[1\]\.label='q4'"):
        settings(external=[entry, entry])


def test_a_missing_checkpoint_stops_the_sweep_before_any_cell(tmp_path, capsys, results_writer):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({"models": ["embedded"], "methods": ["magnitude"], "tasks": ["t"],
                                      "external": [{"path": str(tmp_path / "nope"), "parent": "embedded"}]}))
    calls = []
    code = sweep.main(["--config", str(config), "--out", str(tmp_path / "out"), "--wikitext", "false"],
                      runner=lambda cell, folder: calls.append(cell))
    assert code == 2 and calls == [] and not (tmp_path / "out").exists()
    assert "external[0].path" in capsys.readouterr().err


def test_method_entries_are_one_cell_each_and_never_crossed_with_bits():
    s = settings(models=["embedded"], methods=["gptq", {"awq": {"wbits": 4}}, {"rtn": {"wbits": 8, "group_size": 64}}],
                 bits=[8, 3])
    specs = [(c.method, c.wbits, c.model_args) for c in grid.plan_cells(s, ["t"])]
    assert specs == [("none", 16, "method=none"), ("gptq", 8, "method=gptq,wbits=8"), ("gptq", 3, "method=gptq,wbits=3"),
                     ("awq", 4, "method=awq,wbits=4"), ("rtn", 8, "method=rtn,wbits=8,group_size=64")]


@pytest.mark.parametrize("entry, message", [
    ({"bnb_nope": {}}, "invalid methods value 'bnb_nope'"),
    ({"awq": {"wbits": 5}}, "grid cell .* is invalid"),
    ({"awq": 4}, "invalid methods entry"),
    ({"awq": {}, "gptq": {}}, "invalid methods entry"),
])
def test_bad_method_entries_are_refused_before_any_cell(entry, message):
    with pytest.raises(grid.SweepError, match=message):
        s = settings(models=["embedded"], methods=[entry])
        grid.plan_cells(s, ["t"])


def test_the_table2_example_plans_its_cells(tmp_path, monkeypatch):
    """examples/table2.yaml: dense, kick GPTQ W8, AWQ W8 / W4, LLM.int8 and a GGUF Q4_0 written beforehand."""
    from kick_study.settings import load_config_file

    data = load_config_file(EXAMPLE)
    (tmp_path / "table2_checkpoints").mkdir()
    (tmp_path / data["external"][0]["path"]).write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    s = SweepSettings.from_mapping({**data, "wikitext": "false"})
    from kick_models.config import method_choices

    assert "bnb8" in method_choices()
    if not _bitsandbytes():  # an optional extra: refused by name before any cell, then planned without it
        with pytest.raises(grid.SweepError, match="'bnb8': it needs bitsandbytes, which is not installed"):
            grid.plan_cells(s, grid.grid_tasks(s))
        data["methods"] = [m for m in data["methods"] if "bnb8" not in m]
        s = SweepSettings.from_mapping({**data, "wikitext": "false"})
    cells = grid.plan_cells(s, grid.grid_tasks(s))
    specs = [(c.method, c.wbits, c.label) for c in cells]
    assert specs[:4] == [("none", 16, None), ("gptq", 8, None), ("awq", 8, None), ("awq", 4, None)]
    if _bitsandbytes():
        assert specs[4] == ("bnb8", 8, None) and cells[4].model_args.startswith("method=bnb8")
    assert specs[-1] == ("checkpoint", 16, "gguf-q4_0")
    assert "gguf_file=SmolLM2-135M-Instruct.Q4_0.gguf" in cells[-1].model_args
    assert cells[0].tasks == ("kick_icrqa_mini_open", "kick_ppl_heldout")


def _bitsandbytes() -> bool:
    from importlib.util import find_spec

    return find_spec("bitsandbytes") is not None


def test_a_plainly_named_load_time_quantizer_is_one_cell_never_crossed():
    s = settings(models=["embedded"], methods=["wanda", "bnb8"], sparsities=[0.3, 0.5], bits=[8, 4])
    if not _bitsandbytes():
        with pytest.raises(grid.SweepError, match="needs bitsandbytes"):
            grid.plan_cells(s, ["t"])
        return
    specs = [(c.method, c.sparsity, c.wbits) for c in grid.plan_cells(s, ["t"])]
    assert specs == [("none", 0.0, 16), ("wanda", 0.3, 16), ("wanda", 0.5, 16), ("bnb8", 0.0, 8)]


def test_a_sweep_of_method_entries_and_a_checkpoint_plans_every_cell(ckpt, tmp_path, capsys):
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({"models": ["embedded"], "methods": [{"gptq": {"wbits": 8}}, {"awq": {"wbits": 4}}],
                                      "tasks": ["t"], "external": [{"path": str(ckpt / "m.Q4_0.gguf"), "parent": "embedded"}]}))
    assert sweep.main(["--config", str(config), "--out", str(tmp_path / "out"), "--wikitext", "false", "--dry_run"]) == 0
    ids = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert [i.split("__")[1] for i in ids] == ["none-unstructured-s0.00-w16", "gptq-unstructured-s0.00-w8",
                                              "awq-unstructured-s0.00-w4", "checkpoint-m.Q4-0.gguf"]
