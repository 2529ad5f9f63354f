"""kick-sweep's in-process cells use every core unless OMP_NUM_THREADS says otherwise."""

import os

import pytest
import torch

from kick_study.sweep import use_all_cores


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_all_cores_without_omp_num_threads(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert use_all_cores() == cores == torch.get_num_threads()


def test_omp_num_threads_wins(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    assert use_all_cores() == 1 == torch.get_num_threads()


def test_threads_are_set_before_the_grid_is_planned(monkeypatch, tmp_path):
    """The noise-floor cells are planned with other threads than the grid's, so those must be known first."""
    from kick_study import sweep

    calls = []
    monkeypatch.setattr(sweep, "use_all_cores", lambda jobs=1: calls.append("threads") or 2)
    real_plan = sweep.plan_cells
    monkeypatch.setattr(sweep, "plan_cells", lambda *a, **k: calls.append("plan") or real_plan(*a, **k))
    code = sweep.main(["--models", "embedded", "--methods", "magnitude", "--sparsities", "0.5", "--tasks",
                       "kick_ppl_heldout", "--runner", "inprocess", "--out", str(tmp_path / "out"), "--dry_run"])
    assert code == 0
    assert calls == ["threads", "plan"]
