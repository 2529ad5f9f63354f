"""kick-sweep: grid planning, resume after an interruption, failing cells, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kick_study import grid, runners, sweep
from kick_study import index as sweep_index
from kick_study.runs import load_runs
from kick_study.settings import DEFAULTS, SweepSettings


def settings(**over):
    base = {**DEFAULTS, "models": ["org/tiny"], "methods": ["magnitude", "wanda"], "sparsities": [0.2, 0.5],
            "patterns": ["unstructured", "2:4"], "bits": [16], "tasks": ["kick_freebaseqa"], "limit": 5,
            "wikitext": "false", "out": "unused"}
    base.update(over)
    return SweepSettings.from_mapping(base)


class FakeRunner:
    """Writes an lm-eval-shaped results file per cell; can fail on some cells or stop after k."""

    def __init__(self, writer, fail_on=(), interrupt_after=None):
        self.writer = writer
        self.calls: list[str] = []
        self.fail_on, self.interrupt_after = set(fail_on), interrupt_after

    def __call__(self, cell: grid.Cell, cell_dir: Path) -> Path:
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(cell.cell_id)
        if cell.method in self.fail_on:
            raise runners.CellFailed("CUDA out of memory (pretend)")
        args = dict(part.split("=", 1) for part in cell.model_args.split(","))
        path = self.writer(cell_dir, args, {t: {"acc": 0.5} for t in cell.tasks})
        stamp = path.name[len("results_"):-len(".json")]
        for task in cell.tasks:  # real runners log every item beside the results file
            (path.parent / f"samples_{task}_{stamp}.jsonl").write_text(
                json.dumps({"doc_id": 0, "doc_hash": "h", "filter": "none", "metrics": ["acc"], "acc": 0.5}) + "\n")
        return path


def test_grid_has_dense_first_nm_patterns_and_gptq_bits():
    assert len(grid.plan_cells(settings(methods=["wanda", "gptq"], bits=[16, 4]), ["t"])) == 1 + 3 + 1
    cells = grid.plan_cells(settings(methods=["wanda", "gptq"], bits=[16, 4], prune_and_quantize=True), ["kick_freebaseqa"])
    specs = [(c.method, c.sparsity, c.pattern, c.wbits) for c in cells]
    assert specs[0] == ("none", 0.0, "unstructured", 16)
    assert ("wanda", 0.5, "2:4", 16) in specs and ("wanda", 0.2, "unstructured", 4) in specs
    assert [s for s in specs if s[0] == "gptq"] == [("gptq", 0.0, "unstructured", 4)]
    assert len(specs) == 1 + 2 * 3 + 1
    wanda_nm = next(c for c in cells if c.pattern == "2:4" and c.wbits == 16)
    assert wanda_nm.model_args == "pretrained=org/tiny,method=wanda,pattern=2:4"
    assert len({c.cell_id for c in cells}) == len(cells)


def test_embedded_model_and_extra_model_args():
    cells = grid.plan_cells(settings(models=["embedded"], methods=["wanda"], patterns=["unstructured"],
                                      sparsities=[0.5], model_args={"nsamples": 8, "seqlen": 64}, cache_dir="/c"),
                             ["t"])
    assert cells[0].model_args == "method=none,cache_dir=/c"  # dense reads no calibration data
    assert cells[1].model_args == "method=wanda,sparsity=0.5,nsamples=8,seqlen=64,cache_dir=/c"


def test_no_cell_of_the_main_job_is_handed_a_model_arg_its_compression_ignores():
    """The sweep's model_args are for every cell, and kick-hf warns about each one a cell's method does not use:
    the README's main job (examples/demo.yaml) must not make its dense cells warn about nsamples and seqlen."""
    from kick_common.args import parse_kv
    from kick_models.config import build_config, compression_keys
    from kick_models.ignored import ignored_args
    from kick_study.settings import load_config_file

    demo = load_config_file(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
    cells = grid.plan_cells(SweepSettings.from_mapping({**demo, "wikitext": "false"}), ["t"])
    assert {c.method for c in cells} == {"none", "wanda"} and any(c.floor == "dense" for c in cells)
    for cell in cells:
        args = parse_kv(cell.model_args)
        config = build_config({k: v for k, v in args.items() if k in compression_keys()})
        assert ignored_args(config, args) == {}, cell.model_args
    wanda = next(c for c in cells if c.method == "wanda" and c.floor is None)
    assert "nsamples=16" in wanda.model_args and "seqlen=256" in wanda.model_args


def test_perplexity_contrast_is_always_included():
    assert grid.grid_tasks(settings(), online=lambda: False) == ["kick_freebaseqa", grid.PPL_TASK]
    assert grid.grid_tasks(settings(wikitext="auto"), online=lambda: True)[-1] == "wikitext"
    assert "wikitext" not in grid.grid_tasks(settings(wikitext="false"), online=lambda: True)
    with pytest.raises(grid.SweepError, match="accepted: auto"):
        grid.grid_tasks(settings(wikitext="maybe"))


def test_resume_runs_exactly_the_missing_cells(tmp_path, results_writer):
    cells = grid.plan_cells(settings(), ["kick_freebaseqa", grid.PPL_TASK])
    assert len(cells) == 7
    first = FakeRunner(results_writer, interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        sweep_index.run_sweep(cells, tmp_path, first, progress=False)
    assert first.calls == [c.cell_id for c in cells[:3]]

    second = FakeRunner(results_writer)
    outcome = sweep_index.run_sweep(cells, tmp_path, second, progress=False)
    assert second.calls == [c.cell_id for c in cells[3:]]
    assert outcome.skipped == first.calls and outcome.ran == second.calls

    third = FakeRunner(results_writer)
    assert sweep_index.run_sweep(cells, tmp_path, third, progress=False).ran == [] and third.calls == []
    index = json.loads((tmp_path / sweep_index.INDEX_FILE).read_text())
    assert all(entry["status"] == "ok" for entry in index["cells"].values())
    assert len(load_runs(tmp_path)) == 7  # the report reads what the sweep wrote


def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, results_writer):
    cells = grid.plan_cells(settings(methods=["magnitude", "wanda"]), ["t"])
    runner = FakeRunner(results_writer, fail_on={"magnitude"})
    outcome = sweep_index.run_sweep(cells, tmp_path, runner, progress=False)
    assert len(runner.calls) == len(cells) and len(outcome.failed) == 3 and len(outcome.ran) == 4
    index = json.loads((tmp_path / sweep_index.INDEX_FILE).read_text())
    failed = [e for e in index["cells"].values() if e["status"] == "failed"]
    assert len(failed) == 3 and all("out of memory" in e["error"] for e in failed)
    # a rerun retries only the failed cells
    retry = FakeRunner(results_writer)
    sweep_index.run_sweep(cells, tmp_path, retry, progress=False)
    assert sorted(retry.calls) == sorted(e["cell_id"] for e in failed)


def test_cell_with_missing_results_file_is_rerun(tmp_path, results_writer):
    cells = grid.plan_cells(settings(methods=[]), ["t"])
    sweep_index.run_sweep(cells, tmp_path, FakeRunner(results_writer), progress=False)
    for path in tmp_path.rglob("results_*.json"):
        path.unlink()
    again = FakeRunner(results_writer)
    sweep_index.run_sweep(cells, tmp_path, again, progress=False)
    assert again.calls == [cells[0].cell_id]


# --------------------------------------------------------------------------- CLI and bad input
def kick_only_task_manager(include_path=None, tasks=()):
    """Index only kick's tasks: the full lm-eval index takes ~15 s on a busy CPU."""
    from kick_models.registration import task_manager

    return task_manager(include_defaults=False)


def test_unknown_task_fails_before_any_cell_runs(tmp_path, capsys, results_writer, monkeypatch):
    monkeypatch.setattr(sweep, "task_manager", kick_only_task_manager)
    runner = FakeRunner(results_writer)
    code = sweep.main(["--models", "org/tiny", "--methods", "wanda", "--tasks", "kick_freebaseqa_typo",
                       "--wikitext", "false", "--out", str(tmp_path / "out")], runner=runner)
    assert code == 2 and runner.calls == []
    err = capsys.readouterr().err
    assert "unknown task(s) 'kick_freebaseqa_typo'" in err and "lm_eval ls tasks" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "wanda", "--tasks", "x"], "no models"),
        (["--models", "m", "--methods", "wanda"], "no tasks"),
        (["--models", "m", "--methods", "prune_all", "--tasks", "x"], "invalid"),
        (["--models", "m", "--sparsities", "1.5", "--tasks", "x"], "invalid"),
        (["--models", "m", "--patterns", "4:2", "--tasks", "x"], "pattern"),
        (["--models", "m", "--tasks", "x", "--model_args", "nokeyvalue"], "not key=value"),
    ],
)
def test_bad_grid_settings_are_clear_errors(tmp_path, capsys, argv, message, results_writer):
    runner = FakeRunner(results_writer)
    assert sweep.main([*argv, "--wikitext", "false", "--out", str(tmp_path), "--dry_run"], runner=runner) == 2
    assert message in capsys.readouterr().err and runner.calls == []


def test_config_file_yaml_and_toml_with_flag_override(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text("models: [org/tiny]\nmethods: [wanda]\nsparsities: [0.5]\ntasks: [t]\nlimit: 3\n")
    (tmp_path / "grid.toml").write_text('models = ["org/tiny"]\nmethods = ["wanda"]\nsparsities = [0.5]\ntasks = ["t"]\n')
    for name in ("grid.yaml", "grid.toml"):
        assert sweep.main(["--config", str(tmp_path / name), "--out", str(tmp_path / "o"), "--sparsities", "0.3",
                           "--wikitext", "false", "--dry_run"]) == 0
        out = capsys.readouterr().out
        assert "sparsity=0.3" in out and "sparsity=0.5" not in out and "method=none" in out
    (tmp_path / "bad.yaml").write_text("modles: [x]\n")
    assert sweep.main(["--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path), "--dry_run"]) == 2
    assert "unknown setting(s) ['modles']" in capsys.readouterr().err


# --------------------------------------------------------------------------- launchers
def test_dense_cells_first_and_cells_sharing_a_compressed_model_grouped():
    import dataclasses

    from kick_study.launchers import compression_groups, launch_order

    cells = grid.plan_cells(settings(models=["org/a", "org/b"], patterns=["unstructured"]), ["t"])
    ordered = launch_order(cells)
    assert [c.method for c in ordered[:2]] == ["none", "none"] and {c.model for c in ordered[:2]} == {"org/a", "org/b"}
    assert [c.cell_id for c in ordered[2:]] == [c.cell_id for c in cells if c.method != "none"]
    # the same compression asked for on another task list: one group, run one after another
    other_tasks = dataclasses.replace(cells[1], tasks=("kick_freebaseqa",))
    other_dense = dataclasses.replace(cells[0], tasks=("kick_freebaseqa",))
    groups = compression_groups([*cells, other_tasks, other_dense])
    assert [other_dense] in groups  # dense cells compress nothing: never queued behind each other
    shared = next(g for g in groups if cells[1] in g)
    assert shared == [cells[1], other_tasks]
    assert len(groups) == len(cells) + 1


def test_serial_launcher_records_start_end_and_worker(tmp_path, results_writer):
    cells = grid.plan_cells(settings(methods=["wanda"], patterns=["unstructured"], sparsities=[0.5]), ["t"])
    sweep_index.run_sweep(cells, tmp_path, FakeRunner(results_writer), progress=False)
    entries = json.loads((tmp_path / sweep_index.INDEX_FILE).read_text())["cells"].values()
    for entry in entries:
        assert entry["started"] <= entry["ended"] and entry["worker"]["pid"] > 0
    first, second = entries
    assert first["ended"] <= second["started"]  # one after another


class BusyRunner(FakeRunner):
    """A FakeRunner whose dense cell spends CPU in this process and whose other cell spends it in a child."""

    def __call__(self, cell, cell_dir):
        import subprocess
        import time

        if cell.method == "none":
            end = time.process_time() + 0.3
            while time.process_time() < end:
                pass
        else:
            subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                            "while time.process_time() < end: pass"], check=True)
        return super().__call__(cell, cell_dir)


def test_serial_launcher_records_each_cells_cpu_time_in_process_or_in_a_child(tmp_path, results_writer):
    cells = grid.plan_cells(settings(methods=["wanda"], patterns=["unstructured"], sparsities=[0.5]), ["t"])
    sweep_index.run_sweep(cells, tmp_path, BusyRunner(results_writer), progress=False)
    entries = list(json.loads((tmp_path / sweep_index.INDEX_FILE).read_text())["cells"].values())
    assert [e["method"] for e in entries] == ["none", "wanda"]
    for entry in entries:  # 0.3 s burnt by each; the rest is Python start-up and the fake results file
        assert 0.3 <= entry["cpu_seconds"] < 0.3 + 5.0


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path, results_writer):
    from filelock import FileLock

    cells = grid.plan_cells(settings(methods=[]), ["t"])
    held = FileLock(str(tmp_path / sweep_index.LOCK_FILE))  # as a running kick-sweep holds it
    with held, pytest.raises(grid.SweepError, match="another kick-sweep is writing"):
        sweep_index.run_sweep(cells, tmp_path, FakeRunner(results_writer), progress=False)
    assert sweep_index.run_sweep(cells, tmp_path, FakeRunner(results_writer), progress=False).ran


def test_ray_missing_is_a_clear_error_before_anything_runs(tmp_path, capsys, results_writer, monkeypatch):
    def no_task_index(include_path=None, tasks=()):
        raise AssertionError("the task index was built before the launcher was checked")

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as when it is not installed
    monkeypatch.setattr(sweep, "task_manager", no_task_index)
    runner = FakeRunner(results_writer)
    code = sweep.main(["--models", "embedded", "--methods", "wanda", "--sparsities", "0.5", "--tasks", "kick_freebaseqa",
                       "--wikitext", "false", "--out", str(tmp_path / "out"), "--launcher", "ray"], runner=runner)
    assert code == 2 and runner.calls == [] and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert "--launcher ray needs Ray" in err and 'pip install "kick[ray]"' in err


def test_driver_lands_a_workers_files_only_inside_the_cell_folder(tmp_path):
    from kick_study.ray_launcher import land

    cell = grid.plan_cells(settings(methods=[]), ["t"])[0]
    payload = {"files": {"m/results_1.json": b"{}", "m/samples_t_1.jsonl": b"{}\n"}, "results_file": "m/results_1.json",
               "error": None, "started": 1.0, "ended": 2.0, "worker": {"pid": 7}}
    run = land(payload, cell, tmp_path)
    cell_dir = tmp_path / "cells" / cell.cell_id
    assert run.error is None and run.results_file == cell_dir / "m" / "results_1.json"
    assert (cell_dir / "m" / "samples_t_1.jsonl").read_bytes() == b"{}\n"
    escaping = land({**payload, "files": {"../../evil.json": b"x"}}, cell, tmp_path)
    assert "leaves its cell folder" in escaping.error and not (tmp_path / "evil.json").exists()
    failed = land({**payload, "error": "CellFailed: boom"}, cell, tmp_path)
    assert failed.error == "CellFailed: boom" and failed.results_file is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpus-per-cell", "1"], "gpus_per_cell only apply with --launcher ray"),
        (["--launcher", "ray", "--cpus-per-cell", "0"], "cpus_per_cell='0'; accepted: a whole number >= 1"),
        (["--launcher", "ray", "--cpus-per-cell", "1.5"], "accepted: a whole number >= 1"),
        (["--launcher", "ray", "--gpus-per-cell", "-1"], "gpus_per_cell='-1'; accepted: a number >= 0"),
        (["--launcher", "ray", "--gpus-per-cell", "many"], "gpus_per_cell='many'"),
    ],
)
def test_bad_launcher_settings_are_clear_errors(tmp_path, capsys, argv, message):
    base = ["--models", "m", "--methods", "wanda", "--tasks", "x", "--wikitext", "false", "--out", str(tmp_path)]
    assert sweep.main([*base, *argv, "--dry_run"]) == 2
    assert message in capsys.readouterr().err


def test_launcher_settings_from_a_config_file(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text("models: [m]\nmethods: [wanda]\ntasks: [t]\nlauncher: ray\ncpus_per_cell: 2\n"
                                        "gpus_per_cell: 0.5\naddress: auto\n")
    args = sweep.build_parser().parse_args(["--config", str(tmp_path / "grid.yaml"), "--out", str(tmp_path)])
    resolved = sweep.resolve_settings(args)
    assert (resolved.launcher, resolved.cpus_per_cell, resolved.gpus_per_cell, resolved.address) == \
        ("ray", 2, 0.5, "auto")


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["inprocess"])
def test_one_real_cell_end_to_end(tmp_path, subprocess_env, monkeypatch, runner):
    """lm-eval with kick-hf on a tiny random Llama: results file, index, report (subprocess runner: the demo)."""
    from kick_testlib.tiny_models import save_tiny_llama

    save_tiny_llama(tmp_path / "tiny")
    for key, value in subprocess_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KICK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sweep, "task_manager", kick_only_task_manager)
    out = tmp_path / "sweep"
    code = sweep.main(["--models", str(tmp_path / "tiny"), "--methods", "magnitude", "--sparsities", "0.5",
                       "--tasks", grid.PPL_TASK, "--limit", "1", "--wikitext", "false",
                       "--model_args", "dtype=float32", "--out", str(out), "--runner", runner])
    index = json.loads((out / sweep_index.INDEX_FILE).read_text())
    assert code == 0, index
    assert [e["status"] for e in index["cells"].values()] == ["ok", "ok"]
    from kick_study import report as kick_report

    report = kick_report.build_report(out, plots=False).read_text()
    assert "Perplexity (paired by document): kick_ppl_heldout" in report and "| magnitude |" in report
    # lm-eval's real samples carry (loglik, words) per document: paired, and one document is too few to decide
    assert "| magnitude | 50% | 1 | 1 |" in report and "1 paired item; a verdict needs at least 10" in report


def test_seeds_give_one_cell_per_seed_for_calibrating_methods_only():
    cells = grid.plan_cells(settings(methods=["magnitude", "wanda", "gptq"], sparsities=[0.5], patterns=["unstructured"],
                                     bits=[4], seeds=[0, 1, 2]), ["t"])
    specs = [(c.method, c.seed) for c in cells]
    assert specs == [("none", None), ("magnitude", None), ("wanda", 0), ("wanda", 1), ("wanda", 2),
                     ("gptq", 0), ("gptq", 1), ("gptq", 2)]
    wanda = [c for c in cells if c.method == "wanda"]
    assert [c.model_args for c in wanda] == [f"pretrained=org/tiny,method=wanda,sparsity=0.5,seed={s}" for s in (0, 1, 2)]
    assert len({c.cell_id for c in cells}) == len(cells) and "seed1" in wanda[1].cell_id
    assert grid.plan_cells(settings(seeds="3, 4"), ["t"])[-1].seed == 4


@pytest.mark.parametrize("seeds, message", [(["x"], "seeds item 'x'"), ([-1], "seeds item -1"), ([1.5], "seeds item 1.5")])
def test_bad_seeds_are_refused_before_anything_runs(seeds, message):
    with pytest.raises(grid.SweepError, match=message):
        grid.plan_cells(settings(seeds=seeds), ["t"])


def test_done_cells_without_samples_run_again(tmp_path, results_writer):
    cells = grid.plan_cells(settings(methods=["magnitude"], sparsities=[0.5], patterns=["unstructured"]), ["kick_freebaseqa"])
    first = FakeRunner(results_writer)
    sweep_index.run_sweep(cells, tmp_path, first, progress=False)
    for path in tmp_path.rglob("samples_*.jsonl"):  # as an older sweep left them: results only
        path.unlink()
    second = FakeRunner(results_writer)
    outcome = sweep_index.run_sweep(cells, tmp_path, second, progress=False)
    assert outcome.ran == [c.cell_id for c in cells] and outcome.skipped == []


@pytest.mark.parametrize("sparsities, bad", [("-0.1,0.3", "-0.1"), ("nan,0.3", "nan"), ("0.3,inf", "inf"),
                                             ("0.3,lots", "lots")])
def test_a_bad_sparsity_stops_the_sweep_instead_of_being_dropped(tmp_path, capsys, results_writer, sparsities, bad):
    runner = FakeRunner(results_writer)
    code = sweep.main(["--models", "m", "--methods", "wanda", "--tasks", "x", f"--sparsities={sparsities}",
                       "--wikitext", "false", "--out", str(tmp_path / "out")], runner=runner)
    err = capsys.readouterr().err
    assert code == 2 and runner.calls == [] and not (tmp_path / "out").exists()
    assert f"invalid sparsities value '{bad}'" in err and "accepted: numbers in [0, 1)" in err


@pytest.mark.parametrize("name, content, message", [
    ("grid.yaml", "models: [org/tiny\ntasks: [t]\n", "is not valid YAML at line"),
    ("grid.toml", 'models = ["org/tiny"\n', "is not valid TOML"),
    ("grid.yaml", b"models: [caf\xe9]\n", "is not UTF-8 text"),
    ("grid.yaml", "models: [m]\ntasks: [t]\nsparsities: {a: 0.5}\n", "invalid sparsities={'a': 0.5}"),
    ("grid.yaml", "models: [m]\ntasks: [t]\nmethods: [[wanda]]\n", "invalid methods=[['wanda']]"),
    ("grid.yaml", "models: [m]\ntasks: [t]\nmodel_args: 42\n", "invalid model_args=42"),
    ("grid.yaml", "models: [m]\ntasks: [t]\nmodel_args: nokeyvalue\n", "not key=value"),
    ("grid.yaml", "models: [m]\ntasks: [t]\nbits: [4, 5]\n", "invalid bits value 5"),
    ("grid.yaml", "models: [m]\ntasks: [t]\nlimit: -3\n", "invalid limit=-3"),
    ("grid.yaml", "- models\n- tasks\n", "must hold a mapping"),
])
def test_bad_config_files_are_one_clear_error(tmp_path, capsys, results_writer, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    runner = FakeRunner(results_writer)
    code = sweep.main(["--config", str(path), "--wikitext", "false", "--out", str(tmp_path / "out")], runner=runner)
    err = capsys.readouterr().err
    assert code == 2 and runner.calls == [] and message in err and "Traceback" not in err, err


def test_model_args_as_a_string_in_a_config_file_is_read_like_the_flag(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("models: [m]\ntasks: [t]\nmethods: [wanda]\nsparsities: [0.5]\nmodel_args: nsamples=8,seqlen=64\n")
    assert sweep.main(["--config", str(path), "--model_args", "seed=3", "--wikitext", "false",
                       "--out", str(tmp_path / "o"), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "nsamples=8" in out and "seqlen=64" in out and "seed=3" in out


def test_grid_treats_every_registered_quantizer_like_gptq_and_passes_method_args():
    cells = grid.plan_cells(settings(methods=["rtn", "awq", "ria"], bits=[16, 4], patterns=["2:4"],
                                     model_args={"ria_permute": "true"}), ["t"])
    specs = [(c.method, c.pattern, c.wbits) for c in cells]
    assert ("rtn", "unstructured", 4) in specs and ("awq", "unstructured", 4) in specs
    assert ("ria", "2:4", 16) in specs and not any(m in ("rtn", "awq") and w == 16 for m, _, w in specs)
    ria = next(c for c in cells if c.method == "ria")
    assert "ria_permute=true" in ria.model_args


def test_grid_refuses_an_unknown_method_listing_the_registered_ones():
    with pytest.raises(grid.SweepError) as err:
        grid.plan_cells(settings(methods=["obs"]), ["t"])
    assert "methods value 'obs'" in str(err.value) and "dsnot" in str(err.value) and "awq" in str(err.value)


def test_grid_refuses_method_args_of_a_method_not_in_the_grid():
    with pytest.raises(grid.SweepError, match="dsnot_init='sparsegpt' belongs to method dsnot"):
        grid.plan_cells(settings(methods=["wanda"], model_args={"dsnot_init": "sparsegpt"}), ["t"])
