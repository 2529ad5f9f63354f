"""The noise floor: kick-sweep plans dense and the cheapest calibrating cell again under other numerics,
kick-hf records the numerics, kick-report pairs each re-run with the run it repeats."""

from __future__ import annotations

import json

import pytest

from kick_study import floor, grid, sweep
from kick_study import index as sweep_index
from kick_study.runs import load_runs
from kick_study.settings import DEFAULTS, SweepSettings


def _settings(**over):
    base = {**DEFAULTS, "models": ["org/tiny"], "methods": ["sparsegpt", "magnitude", "wanda"],
            "sparsities": [0.3, 0.5], "tasks": ["t"], "wikitext": "false", "noise_floor": True}
    return SweepSettings.from_mapping({**base, **over})


def test_floor_cells_redo_dense_and_the_cheapest_calibrating_cell_under_other_numerics():
    cells = grid.plan_cells(_settings(), ["t"])
    main, extra = cells[:-2], cells[-2:]
    assert len(main) == 1 + 3 * 2 and all(c.floor is None and c.threads is None for c in main)
    dense, redo = extra
    assert (dense.method, dense.floor) == ("none", "dense") and dense.model_args.endswith(",floor=dense")
    # wanda (column norms) is cheaper than SparseGPT (Hessians), magnitude calibrates on nothing; the largest sparsity
    assert (redo.method, redo.sparsity, redo.floor) == ("wanda", 0.5, "recompressed")
    assert "no_cache=true" in redo.model_args  # compressed again, never loaded from the cache
    threads = grid.sweep_threads(_settings())
    assert dense.threads == redo.threads == floor.other_threads(threads) != threads
    assert dense.batch_size == redo.batch_size == 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert grid.plan_cells(_settings(noise_floor=False), ["t"]) == main
    only_magnitude = grid.plan_cells(_settings(methods=["magnitude"]), ["t"])
    assert [c.floor for c in only_magnitude] == [None, None, None, "dense"]  # nothing calibrates: dense only


def test_floor_numerics_and_bad_values():
    assert floor.other_threads(2) == 1 and floor.other_threads(1) == 2
    assert floor.other_batch_size(1) == 2 and floor.other_batch_size("8") == 1 and floor.other_batch_size("auto") == 1
    with pytest.raises(grid.SweepError, match="invalid noise_floor='maybe'; accepted: true | false"):
        _settings(noise_floor="maybe")


@pytest.mark.parametrize("args, bad", [({"method": "wanda", "sparsity": 0.5, "floor": "dense"}, "floor='dense'"),
                                       ({"method": "none", "floor": "recompressed"}, "floor='recompressed'"),
                                       ({"method": "none", "floor": "twice"}, "floor='twice'")])
def test_kick_hf_refuses_a_floor_role_that_does_not_fit(args, bad):
    from kick_models.config import ConfigError
    from kick_models.lm import split_model_args

    with pytest.raises(ConfigError, match=f"invalid model_arg {bad}; accepted: dense .with method=none. | recompressed"):
        split_model_args(args)


@pytest.mark.slow
def test_tiny_sweep_with_the_noise_floor_end_to_end(tmp_path, subprocess_env, monkeypatch):
    """A real sweep on a tiny random Llama: the re-run of dense is never *worse* than dense, the floor rows appear."""
    from kick_study import report as kick_report
    from kick_testlib.tiny_models import save_tiny_llama

    save_tiny_llama(tmp_path / "tiny")
    for key, value in subprocess_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KICK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sweep, "task_manager", lambda include_path=None, tasks=(): _kick_tasks())
    out = tmp_path / "sweep"
    code = sweep.main(["--models", str(tmp_path / "tiny"), "--methods", "wanda", "--sparsities", "0.5",
                       "--tasks", "kick_mmlu_abstract_algebra", "--limit", "6", "--wikitext", "false",
                       "--model_args", "dtype=float32,calib=bundled,nsamples=4,seqlen=32", "--out", str(out),
                       "--runner", "inprocess", "--noise_floor", "true"])
    index = json.loads((out / sweep_index.INDEX_FILE).read_text())
    assert code == 0, index
    assert sorted(str(e.get("floor")) for e in index["cells"].values()) == ["None", "None", "dense", "recompressed"]

    runs = load_runs(out)  # the floor re-runs never stand in for dense or the cell
    assert sorted(r.setting.method for r in runs) == ["none", "wanda"]
    floor_runs = floor.load_floor_runs(out)
    main_dense = next(r for r in runs if r.setting.is_dense).extra["numerics"]
    floor_dense = next(r for r in floor_runs if r.floor == "dense").extra["numerics"]
    assert (main_dense["batch_size"], floor_dense["batch_size"]) == (1, 2)
    assert floor_dense["torch_threads"] == floor.other_threads(main_dense["torch_threads"])
    assert main_dense["floor"] is None

    report = kick_report.build_report(out, plots=False).read_text()
    assert "### Noise floor: what numerics alone change" in report
    row = next(line for line in report.splitlines() if line.startswith("| dense vs dense | kick_mmlu_abstract_algebra"))
    verdict = [c.strip() for c in row.strip("|").split("|")][5]
    assert verdict not in ("worse", "—"), row
    assert "| wanda 50% vs recompressed | kick_mmlu_abstract_algebra" in report
    assert "held-out KL(dense ‖ dense')" in report and "recompressed" in report and "Cells within the floor" in report
    assert "Cost of the floor: 2 extra cells" in report


def _kick_tasks():
    from kick_models.registration import task_manager

    return task_manager(include_defaults=False)
