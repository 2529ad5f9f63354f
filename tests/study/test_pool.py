"""kick-sweep's jobs: cells side by side in worker processes, each with its share of the cores; cells of one
compressed model one after the other; noise-floor cells (more threads) alone after; failures recorded."""

import json
import os
from functools import partial

import pytest

from kick_study.grid import Cell
from kick_study.index import run_sweep
from kick_study.pool import pool_launcher, split_by_threads
from kick_study.settings import SweepError, SweepSettings, resolve_jobs


def cell(method="none", sparsity=0.0, threads=None, model="m", floor=None):
    args = f"method={method}" + (f",sparsity={sparsity}" if sparsity else "") + (f",floor={floor}" if floor else "")
    return Cell(model=model, method=method, sparsity=sparsity, pattern="unstructured", wbits=16, tasks=("t",),
                model_args=args, threads=threads, floor=floor)


def test_split_keeps_groups_and_sets_wider_cells_apart():
    dense, wanda = cell(), cell("wanda", 0.5)
    floor = cell("wanda", 0.5, threads=2, floor="recompressed")
    pooled, alone = split_by_threads([[dense], [wanda], [floor]], threads=1)
    assert pooled == [[dense], [wanda]] and alone == [floor]
    pooled, alone = split_by_threads([[dense], [wanda], [floor]], threads=2)
    assert pooled == [[dense], [wanda], [floor]] and alone == []


@pytest.mark.parametrize("value", [0, -1, 1.5, "two", ""])
def test_bad_jobs_refused(value):
    with pytest.raises(SweepError, match=r"invalid jobs=.*accepted: a whole number >= 1, or auto"):
        resolve_jobs(value)


def test_jobs_auto_is_one_per_core():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve_jobs("auto") == cores and resolve_jobs(None) == 1 and resolve_jobs("3") == 3


def test_jobs_with_ray_refused(tmp_path):
    from kick_study import sweep

    code = sweep.main(["--models", "embedded", "--methods", "magnitude", "--sparsities", "0.5", "--tasks", "kick_ppl_heldout",
                       "--launcher", "ray", "--jobs", "2", "--out", str(tmp_path / "o"), "--dry_run"])
    assert code == 2


def test_floor_cells_are_planned_with_more_threads_than_a_job(monkeypatch):
    """With two cells at once on two threads, a cell gets one thread, so the noise floor is planned with two."""
    import torch

    from kick_study.grid import plan_cells

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        settings = {"models": ["embedded"], "methods": ["wanda"], "sparsities": [0.5], "patterns": ["unstructured"],
                    "bits": [16], "noise_floor": True, "jobs": 2, "batch_size": 1}
        cells = plan_cells(SweepSettings.from_mapping(settings), ["kick_ppl_heldout"])
    finally:
        torch.set_num_threads(before)
    floors = [c for c in cells if c.floor]
    assert len(floors) == 2 and all(c.threads == 2 for c in floors)
    assert all(c.threads is None for c in cells if not c.floor)


def _runs(tmp_path, cells, jobs=2, threads=1, rendezvous=0):
    from kick_testlib.pool_runner import record_runner

    launcher = pool_launcher(jobs, threads, partial(record_runner, rendezvous=rendezvous), record_runner())
    outcome = run_sweep(cells, tmp_path, launcher=launcher, progress=False)
    index = json.loads((tmp_path / "index.json").read_text())
    records = {}
    for cell_id, entry in index["cells"].items():
        if entry["status"] == "ok":
            records[cell_id] = json.loads((tmp_path / entry["results_file"]).read_text())
    return outcome, index, records


def test_cells_run_side_by_side_single_threaded_then_the_floor_alone(tmp_path):
    dense, magnitude, wanda = cell(), cell("magnitude", 0.5), cell("wanda", 0.5)
    floor = cell("wanda", 0.5, threads=2, floor="recompressed")
    outcome, index, rec = _runs(tmp_path, [dense, magnitude, wanda, floor], rendezvous=2)
    assert sorted(outcome.ran) == sorted(c.cell_id for c in (dense, magnitude, wanda, floor)) and not outcome.failed
    pooled = [rec[c.cell_id] for c in (dense, magnitude, wanda)]
    assert {r["threads"] for r in pooled} == {1} and {r["omp"] for r in pooled} == {"1"}
    assert len({r["pid"] for r in pooled}) == 2 and os.getpid() not in {r["pid"] for r in pooled}
    assert all(r["met"] for r in pooled)  # two cells were running at once (one after the other they never meet)
    alone = rec[floor.cell_id]
    assert alone["pid"] == os.getpid() and alone["threads"] == 2
    assert alone["started"] >= max(r["ended"] for r in pooled)
    assert index["cells"][dense.cell_id]["worker"]["pid"] == rec[dense.cell_id]["pid"]
    for entry in index["cells"].values():  # the cells sleep: their CPU time, measured where they ran, is below their wall
        assert 0 <= entry["cpu_seconds"] < entry["seconds"]


def test_one_compressed_model_runs_one_cell_after_the_other(tmp_path):
    first = cell("wanda", 0.5)
    again = Cell(**{**first.__dict__, "tasks": ("u",)})  # same model and args: loads what the first compressed
    assert again.cell_id != first.cell_id
    _, _, rec = _runs(tmp_path, [first, again, cell(), cell("magnitude", 0.5)])
    assert rec[again.cell_id]["started"] >= rec[first.cell_id]["ended"]


def test_a_failing_cell_and_a_dead_worker_are_recorded_and_the_sweep_ends(tmp_path):
    outcome, index, rec = _runs(tmp_path, [cell(), cell("boom", 0.5), cell("die", 0.5)])
    assert cell().cell_id in outcome.ran or cell().cell_id in outcome.failed
    failed = {c: index["cells"][c]["error"] for c in outcome.failed}
    assert "RuntimeError: this cell fails" in failed.get(cell("boom", 0.5).cell_id, "RuntimeError: this cell fails")
    assert cell("die", 0.5).cell_id in failed and "worker process failed" in failed[cell("die", 0.5).cell_id]
    assert {e["status"] for e in index["cells"].values()} <= {"ok", "failed"}
