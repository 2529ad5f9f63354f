"""kick-sweep --launcher ray on a local Ray instance (num_cpus=2): parallel cells, one index writer,
dead workers, Ctrl-C, the cache lock across workers, and the serial runner's exact scores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kick_study import grid
from kick_study import index as sweep_index
from kick_study.ray_launcher import TASK_NAME, RayLauncher

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

SRC = Path(__file__).resolve().parents[2] / "src"
GRID_ARGS = ["--models", "org/tiny", "--methods", "magnitude", "--sparsities", "0.3,0.5", "--patterns",
             "unstructured,2:4", "--tasks", grid.PPL_TASK, "--wikitext", "false", "--launcher", "ray"]

# A driver process running kick-sweep's CLI with a runner that sleeps, then writes an lm-eval-shaped
# results file and a samples file; every cell it starts is appended to CALLS.
DRIVER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    from kick_models.registration import task_manager
    from kick_study import sweep

    sweep.task_manager = lambda include_path=None, tasks=(): task_manager(include_defaults=False)
    CALLS, SLEEP = Path(sys.argv[1]), float(sys.argv[2])

    def sleepy(cell, cell_dir):
        with open(CALLS, "a") as log:
            log.write(cell.cell_id + "\\n")
        time.sleep(SLEEP)
        sub = cell_dir / "m"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "samples_kick_ppl_heldout_x.jsonl").write_text(json.dumps({"doc_id": 0, "cell": cell.cell_id}) + "\\n")
        path = sub / "results_x.json"
        path.write_text(json.dumps({"results": {t: {"word_perplexity,none": 1.0} for t in cell.tasks}}))
        return path

    if os.environ.get("KICK_TEST_RAY_ADDRESS"):  # join the test module's running instance
        import ray
        ray.init(address=os.environ["KICK_TEST_RAY_ADDRESS"], runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    elif os.environ.get("KICK_TEST_RAY_CPUS"):
        import ray
        ray.init(num_cpus=int(os.environ["KICK_TEST_RAY_CPUS"]), include_dashboard=False)
    sys.exit(sweep.main(sys.argv[3:], runner=sleepy))
''')


def start_driver(tmp_path: Path, out: Path, sleep_s: float, cpus: int | None = 2, address: str | None = None) -> subprocess.Popen:
    """The driver joins the Ray instance at ``address``, else starts one with ``cpus`` (None: the launcher starts it)."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("KICK_TEST_RAY_CPUS", None)
    env.pop("KICK_TEST_RAY_ADDRESS", None)
    if address:
        env["KICK_TEST_RAY_ADDRESS"] = address
    elif cpus:
        env["KICK_TEST_RAY_CPUS"] = str(cpus)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "calls.txt"), str(sleep_s), *GRID_ARGS,
                             "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_index(out: Path) -> dict | None:
    """The index as a reader sees it mid-sweep: absent at first, then always complete JSON."""
    path = out / sweep_index.INDEX_FILE
    if not path.is_file():
        return None
    index = json.loads(path.read_text())  # a torn write would raise here
    for entry in index["cells"].values():
        assert entry["status"] in ("pending", "ok", "failed"), entry
        if entry["status"] == "ok":
            assert (out / entry["results_file"]).is_file()
    return index


def watch(proc: subprocess.Popen, out: Path, on_poll, timeout_s: float = 240) -> tuple[int, str, int]:
    """Read the index every 20 ms while the driver runs; ``on_poll(index)`` may act on the driver."""
    reads, deadline = 0, time.monotonic() + timeout_s
    while proc.poll() is None:
        assert time.monotonic() < deadline, "driver did not finish"
        index = read_index(out)
        reads += index is not None
        on_poll(index)
        time.sleep(0.02)
    return proc.returncode, proc.stdout.read(), reads


def cell_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and cmdline[0].startswith(f"ray::{TASK_NAME}"):
            found.append(proc)
    return found


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().split() if path.is_file() else []


@pytest.fixture(scope="module", autouse=True)
def _stop_ray_after_the_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def local_ray() -> str:
    """Address of this module's one local Ray instance (2 CPUs), started on first use and kept for the next
    test: starting Ray is most of what these tests cost. Tests of how kick-sweep starts Ray do not use it."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    return ray.get_runtime_context().gcs_address


@pytest.fixture
def no_local_ray() -> None:
    """For a test of kick's own Ray start and stop in this process: no instance left by another test."""
    if ray.is_initialized():
        ray.shutdown()


def test_killed_worker_fails_its_cell_and_the_rerun_completes_only_it(tmp_path, local_ray):
    out, killed = tmp_path / "out", []

    def kill_one(index):
        if not killed:
            for worker in cell_workers():
                worker.kill()  # SIGKILL mid-cell, as the OOM killer would
                killed.append(worker.pid)
                break

    code, log, reads = watch(start_driver(tmp_path, out, sleep_s=4, address=local_ray), out, kill_one)
    assert killed, log
    index = read_index(out)
    failed = [e for e in index["cells"].values() if e["status"] == "failed"]
    assert code == 1 and len(failed) == 1 and len(index["cells"]) == 4, log
    assert failed[0]["error"].startswith("worker lost (") and reads > 10
    ok = [e for e in index["cells"].values() if e["status"] == "ok"]
    for entry in ok:  # the samples file came back into the cell folder beside the results file
        assert (out / entry["results_file"]).parent.joinpath("samples_kick_ppl_heldout_x.jsonl").is_file()
        assert entry["worker"]["threads"] == 1 and entry["worker"]["pid"] not in killed

    first_calls = calls(tmp_path)
    code, log, _ = watch(start_driver(tmp_path, out, sleep_s=0, address=local_ray), out, lambda index: None)
    assert code == 0, log
    assert calls(tmp_path)[len(first_calls):] == [failed[0]["cell_id"]]
    assert all(e["status"] == "ok" for e in read_index(out)["cells"].values())


def test_ctrl_c_cancels_outstanding_cells_and_leaves_a_consistent_index(tmp_path, local_ray):
    out, sent = tmp_path / "out", []
    proc = start_driver(tmp_path, out, sleep_s=3, cpus=None)  # the driver starts (and stops) its own Ray

    def interrupt_after_first(index):
        if not sent and index and any(e["status"] == "ok" for e in index["cells"].values()):
            proc.send_signal(signal.SIGINT)
            sent.append(time.monotonic())

    code, log, _ = watch(proc, out, interrupt_after_first)
    assert sent and code == 130, log
    assert "rerun the same command" in log
    index = read_index(out)
    statuses = sorted(e["status"] for e in index["cells"].values())
    assert "ok" in statuses and "pending" in statuses and "failed" not in statuses, statuses
    deadline = time.monotonic() + 20
    while cell_workers() and time.monotonic() < deadline:  # cancelled tasks' workers go away
        time.sleep(0.2)
    assert not cell_workers()

    done = {cid for cid, e in index["cells"].items() if e["status"] == "ok"}
    before = len(calls(tmp_path))
    code, log, _ = watch(start_driver(tmp_path, out, sleep_s=0, address=local_ray), out, lambda index: None)
    assert code == 0, log
    rerun = calls(tmp_path)[before:]
    assert set(rerun) == set(index["cells"]) - done and len(rerun) == len(set(rerun))


def test_cache_lock_holds_across_ray_workers(tmp_path, local_ray):
    """Two workers ask for the same compressed model at the same moment: one compresses, one loads."""
    @ray.remote(num_cpus=1, max_retries=0)
    def load(cache_dir: str, rendezvous: str, log_path: str):
        import torch
        from torch import nn

        from kick_models.cache import open_slot

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))

        def compress():
            with open(log_path, "a") as log:
                log.write(f"{os.getpid()}\n")
            time.sleep(2)  # long enough that the other worker reaches the lock meanwhile
            with torch.no_grad():
                for layer in model:
                    layer.weight[:, ::2] = 0
            return {"achieved_sparsity": 0.5}

        Path(rendezvous, str(os.getpid())).touch()
        while len(list(Path(rendezvous).iterdir())) < 2:  # both workers call at the same moment
            time.sleep(0.01)
        with open_slot(model, {"schema": 1, "test": "shared"}, cache_dir=cache_dir) as slot:
            hit = slot.load() is not None
            if not hit:
                slot.store(compress())
        return hit, os.getpid(), [layer.weight.detach().clone() for layer in model]

    (tmp_path / "meet").mkdir()
    args = (str(tmp_path / "cache"), str(tmp_path / "meet"), str(tmp_path / "compress.log"))
    results = ray.get([load.remote(*args), load.remote(*args)])
    assert sorted(hit for hit, _, _ in results) == [False, True]
    assert results[0][1] != results[1][1]  # two worker processes
    assert len((tmp_path / "compress.log").read_text().split()) == 1
    for a, b in zip(results[0][2], results[1][2]):
        assert (a == b).all() and (a[:, ::2] == 0).all()


# --------------------------------------------------------------------------- the embedded model, end to end
def metrics(out: Path) -> dict[str, dict]:
    index = json.loads((out / sweep_index.INDEX_FILE).read_text())
    found = {}
    for cell_id, entry in index["cells"].items():
        assert entry["status"] == "ok", entry
        found[cell_id] = json.loads((out / entry["results_file"]).read_text())["results"]
    return found


def max_concurrency(entries) -> int:
    spans = [(e["started"], e["ended"]) for e in entries]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


@pytest.mark.slow
def test_four_cells_run_two_at_a_time_with_the_serial_runners_scores(tmp_path, fresh_kick_cache, no_local_ray):
    from kick_models.registration import task_manager
    from kick_study import runners
    from kick_study.settings import SweepSettings

    settings = SweepSettings.from_mapping({"models": ["embedded"], "methods": ["magnitude"], "sparsities": [0.3, 0.5],
                                           "patterns": ["unstructured", "2:4"], "tasks": [grid.PPL_TASK], "limit": 2,
                                           "wikitext": "false",
                                           # the scores are compared; the KL pass (2 x 2048 tokens a cell) is not
                                           "model_args": {"fidelity": False}})
    cells = grid.plan_cells(settings, [grid.PPL_TASK])
    assert len(cells) == 4

    launcher = RayLauncher(cpus_per_cell=1, init_kwargs={"num_cpus": 2})
    outcome = sweep_index.run_sweep(cells, tmp_path / "ray", launcher=launcher, progress=False)
    assert len(outcome.ran) == 4 and not ray.is_initialized()  # the local instance is stopped again
    serial = runners.inprocess_runner(manager=task_manager(include_defaults=False))
    sweep_index.run_sweep(cells, tmp_path / "serial", serial, progress=False)

    assert metrics(tmp_path / "ray") == metrics(tmp_path / "serial")
    entries = list(json.loads((tmp_path / "ray" / sweep_index.INDEX_FILE).read_text())["cells"].values())
    assert max_concurrency(entries) == 2  # from the start/end times each worker recorded
    assert all(e["worker"]["threads"] == 1 and e["worker"]["torch_threads"] == 1 for e in entries)
    for a in entries:  # cells that overlapped ran in two worker processes
        for b in entries:
            if a is not b and a["started"] < b["ended"] and b["started"] < a["ended"]:
                assert a["worker"]["pid"] != b["worker"]["pid"]
