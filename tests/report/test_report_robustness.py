"""kick-report on damaged input: what cannot be read is skipped with one warning each, the rest is reported."""

from __future__ import annotations

import json
import logging

import pytest

from kick_study import report as kick_report
from kick_study.runs import load_runs


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("kick_study")]


@pytest.mark.parametrize("index, warning", [
    ("[1, 2]", "is not a sweep index"),
    ('{"cells": [1, 2]}', "is not a sweep index"),
    ("{not json", "is unreadable"),
    ('{"cells": {"c1": "failed", "c2": {"cell_id": "c2", "status": "failed", "error": ""}}}', "cells ['c1'] are not objects"),
])
def test_a_damaged_sweep_index_warns_and_the_report_is_built(grid_dir, caplog, index, warning):
    (grid_dir / "index.json").write_text(index)
    caplog.set_level(logging.WARNING)
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    assert "### Task: kick_freebaseqa" in report
    assert [m for m in _warnings(caplog) if warning in m] and len(_warnings(caplog)) == 1
    if "c2" in index:
        assert "| c2 |  |" in report


def _corrupt(grid_dir, edit) -> None:
    path = sorted(grid_dir.rglob("results_*.json"))[1]  # a compressed cell
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, runs, warning", [
    (lambda d: d.update(higher_is_better=[1]), 8, "'higher_is_better' is list, not a mapping"),
    (lambda d: d.update(group_subtasks="kick_mmlu"), 8, "'group_subtasks' is str, not a mapping"),
    (lambda d: d["group_subtasks"].update(kick_mmlu=5), 8, "'group_subtasks' entries ['kick_mmlu'] are not lists"),
    (lambda d: d["config"].update(kick={"result": None, "compression": None}), 8, None),
    (lambda d: d["config"].update(model_args=[1, 2]), 8, None),
    (lambda d: d["results"].update(kick_freebaseqa="junk"), 8, "'results' entries ['kick_freebaseqa'] are not mappings"),
    (lambda d: d.update(date="yesterday"), 8, None),
    (lambda d: d.update(config="junk"), 7, "'config' is not a mapping"),
    (lambda d: d["config"].update(kick={"compression": {"method": "wanda", "wbits": None}}), 7, "skipping"),
])
def test_a_malformed_results_file_is_read_as_far_as_possible(grid_dir, caplog, edit, runs, warning):
    _corrupt(grid_dir, edit)
    caplog.set_level(logging.WARNING)
    assert len(load_runs(grid_dir)) == runs
    messages = _warnings(caplog)
    assert len(messages) <= 1 and (warning is None or (messages and warning in messages[0])), messages
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    assert "### Task: kick_freebaseqa" in report


def test_one_junk_results_file_does_not_break_the_report(grid_dir, caplog):
    (grid_dir / "junk").mkdir()
    (grid_dir / "junk" / "results_1.json").write_text('{"results": {"t": 1}, "config": {"model_args": 3}}')
    (grid_dir / "junk" / "results_2.json").write_text('["not", "an", "object"]')
    (grid_dir / "junk" / "results_3.json").write_bytes(b"\xff\xfe\x00")
    caplog.set_level(logging.WARNING)
    report = kick_report.build_report(grid_dir, plots=False).read_text()
    assert "8 lm-eval runs" in report
    assert sum("skipping" in m for m in _warnings(caplog)) == 3


@pytest.mark.parametrize("out", ["under_file", "is_folder"])
def test_an_out_that_cannot_be_written_is_one_clear_error(grid_dir, tmp_path, capsys, out):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "report.md" if out == "under_file" else tmp_path
    assert kick_report.main([str(grid_dir), "--out", str(target), "--no_plots"]) == 2
    err = capsys.readouterr().err
    assert "kick-report:" in err and str(target) in err and "Traceback" not in err


def test_a_file_named_plots_is_one_clear_error_before_any_work(grid_dir, tmp_path, capsys):
    out = tmp_path / "report" / "report.md"
    out.parent.mkdir()
    (out.parent / "plots").write_text("not a folder")
    assert kick_report.main([str(grid_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kick-report: {str(out.parent / 'plots')!r} is a file") and "accepted: " in err, err
    assert not out.exists() and (out.parent / "plots").read_text() == "not a folder"
    assert kick_report.main([str(grid_dir), "--out", str(out), "--no_plots"]) == 0  # no plots: nothing in the way
