"""``kick-sweep --launcher ray``: every cell a Ray task, placed by Ray on free CPUs / GPUs across nodes.

A task runs its cell in-process in a Ray worker — a fresh one for each GPU cell (``max_calls=1``:
CUDA memory goes back with the process), reused between CPU-only cells as the in-process runner
reuses its process — writing into a scratch folder on its own node, and returns every file it wrote
(lm-eval's results JSON and samples files) to the driver, which copies them into the cell's
folder and records the cell in ``index.json`` — the driver is the only writer of the results
folder, so it need not be shared between nodes. Ray does not retry a task (``max_retries=0``): a
worker that dies (killed, out of memory, node lost) makes its cell ``failed`` with the reason,
and the next run of the same command retries it, as with the serial launcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from kick_common.atomic import write_bytes
from kick_study.grid import Cell
from kick_study.launchers import CellRun, compression_groups, error_text
from kick_study.runners import Runner
from kick_study.settings import SweepError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "kick[ray]"'
# What a worker on another node needs to see as the driver does: the shared cache, offline mode.
FORWARDED_ENV = ("KICK_CACHE_DIR", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
TASK_NAME = "kick-cell"


def require_ray():
    """The ``ray`` module, or a :class:`SweepError` naming the install command (raised before any work)."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            f"kick-sweep: --launcher ray needs Ray, which is not installed; install it with {INSTALL_HINT} "
            '(or pip install "ray[default]"), or use the serial launcher'
        ) from None
    return ray


# --------------------------------------------------------------------------- worker side
def _cell_runner(cell: Cell, include_path: tuple[str, ...] | None) -> Runner:
    """The in-process runner over this cell's task index."""
    from kick_common.args import parse_kv
    from kick_study.grid import task_index
    from kick_study.runners import inprocess_runner

    pretrained = parse_kv(cell.model_args).get("pretrained")
    manager = task_index(pretrained if isinstance(pretrained, str) else None, include_path, tuple(cell.tasks))
    return inprocess_runner(include_path, manager)


def _collect(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cell(cell: Cell, threads: int, include_path: tuple[str, ...] | None = None,
             runner: Runner | None = None) -> dict[str, Any]:
    """Ray task body: run one cell in a scratch folder and return its files, timing and outcome."""
    started = time.time()
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "threads": threads}
    with contextlib.suppress(Exception):
        import ray

        worker["node"] = ray.get_runtime_context().get_node_id()
        worker["gpus"] = [str(g) for g in ray.get_gpu_ids()]
    payload: dict[str, Any] = {"worker": worker, "results_file": None, "error": None}
    with tempfile.TemporaryDirectory(prefix="kick-cell-") as scratch:
        root = Path(scratch) / cell.cell_id  # named as on the driver: lm-eval derives names from the path
        root.mkdir()
        try:
            if runner is None:
                import torch

                torch.set_num_threads(threads)
                worker["torch_threads"] = torch.get_num_threads()
                runner = _cell_runner(cell, include_path)
            payload["results_file"] = Path(runner(cell, root)).resolve().relative_to(root.resolve()).as_posix()
        except Exception as err:  # noqa: BLE001 — reported to the driver, which records the cell as failed
            payload["error"] = error_text(err)
        payload["files"] = _collect(root)
    payload["started"], payload["ended"] = started, time.time()
    return payload


# --------------------------------------------------------------------------- driver side
def _safe_relative(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SweepError(f"kick-sweep: a worker returned the file name {name!r}, which leaves its cell folder")
    return rel


def land(payload: Mapping[str, Any], cell: Cell, out_dir: Path) -> CellRun:
    """Copy a finished task's files into ``<out>/cells/<id>/`` and turn its payload into a :class:`CellRun`."""
    cell_dir = out_dir / "cells" / cell.cell_id
    run = CellRun(cell, error=payload.get("error"), started=payload.get("started"), ended=payload.get("ended"),
                  worker=dict(payload.get("worker") or {}))
    try:
        for name, data in (payload.get("files") or {}).items():
            write_bytes(cell_dir.joinpath(*_safe_relative(name).parts), data)
    except (OSError, SweepError) as err:
        run.error = run.error or f"copying the cell's files into {cell_dir} failed: {error_text(err)}"
        return run
    if run.error is None:
        if payload.get("results_file"):
            run.results_file = cell_dir.joinpath(*_safe_relative(payload["results_file"]).parts)
        else:
            run.error = "the worker returned no results file"
    return run


@contextlib.contextmanager
def ctrl_c_between_waits() -> Iterator[list]:
    """Ctrl-C while Ray waits: Ray's wait checks for signals itself and can swallow the KeyboardInterrupt, so
    in the main thread a SIGINT only sets a flag here, which the driver loop checks between short waits."""
    interrupted: list = []
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def lost_worker_reason(err: BaseException) -> str:
    """One line on why a cell's worker never returned (killed, out of memory, node lost, cancelled)."""
    text = str(err).strip().splitlines()
    detail = next((line.strip() for line in text if line.strip()), "")
    return f"worker lost ({type(err).__name__}): {detail[:500]}"


class RayLauncher:
    """Launch sweep cells as Ray tasks asking ``gpus_per_cell`` GPUs and ``cpus_per_cell`` CPUs each.

    Without ``address`` (and no ``RAY_ADDRESS``) a local Ray instance is started for the sweep and
    stopped after it; ``init_kwargs`` go to ``ray.init`` (e.g. ``num_cpus=2``). If Ray is already
    initialised in this process it is used as it is and left running. ``runner`` replaces the
    in-process lm-eval runner inside the workers (it must pickle).
    """

    def __init__(self, address: str | None = None, gpus_per_cell: float | None = None, cpus_per_cell: int = 1,
                 include_path: tuple[str, ...] | None = None, runner: Runner | None = None,
                 init_kwargs: Mapping[str, Any] | None = None):
        self.address, self.gpus_per_cell, self.cpus_per_cell = address, gpus_per_cell, int(cpus_per_cell)
        self.include_path, self.runner = include_path, runner
        self.init_kwargs = dict(init_kwargs or {})

    def __call__(self, cells: Sequence[Cell], out_dir: Path) -> Iterator[CellRun]:
        ray = require_ray()
        if not cells:
            return
        owned = not ray.is_initialized()
        if owned:
            self._connect(ray)
        try:
            yield from self._drive(ray, cells, out_dir)
        finally:
            if owned:
                ray.shutdown()

    def _connect(self, ray) -> None:
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, **self.init_kwargs}
        if self.address:
            kwargs["address"] = self.address
        log.info("kick-sweep: %s", f"joining Ray at {self.address}" if self.address else "starting a local Ray instance")
        ray.init(**kwargs)

    def _gpus(self, ray, cell: Cell) -> float:
        if self.gpus_per_cell is not None:
            return float(self.gpus_per_cell)
        if cell.device and str(cell.device).startswith("cpu"):
            return 0.0
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def _options(self, ray, cell: Cell) -> dict[str, Any]:
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        env.update({name: str(self.cpus_per_cell) for name in THREAD_ENV})
        return {"num_cpus": self.cpus_per_cell, "num_gpus": self._gpus(ray, cell), "max_retries": 0,
                "name": TASK_NAME, "runtime_env": {"env_vars": env}}

    def _check_fits(self, ray, options: Mapping[str, Any]) -> None:
        have = ray.cluster_resources()
        for resource, want in (("CPU", options["num_cpus"]), ("GPU", options["num_gpus"])):
            if want and have.get(resource, 0) < want:
                log.warning("kick-sweep: each cell asks for %s %s but the Ray cluster has %s now; cells wait until "
                            "it grows", want, resource, have.get(resource, 0))

    def _drive(self, ray, cells: Sequence[Cell], out_dir: Path) -> Iterator[CellRun]:
        # a GPU cell gets a fresh worker (its CUDA memory goes back with the process); CPU-only cells
        # reuse workers, as the in-process runner reuses this process, and skip a start-up each
        tasks = {True: ray.remote(max_calls=1)(run_cell), False: ray.remote(run_cell)}
        queues = [list(group) for group in compression_groups(cells)]
        pending: dict[Any, tuple[Cell, int]] = {}

        def submit(g: int) -> None:
            if queues[g]:
                cell = queues[g].pop(0)
                options = self._options(ray, cell)
                task = tasks[options["num_gpus"] > 0]
                ref = task.options(**options).remote(cell, self.cpus_per_cell, self.include_path, self.runner)
                pending[ref] = (cell, g)

        self._check_fits(ray, self._options(ray, cells[0]))
        for g in range(len(queues)):  # dense cells first: their heads are submitted first
            submit(g)
        log.info("kick-sweep: %d cells submitted to Ray in %d groups", len(cells), len(queues))
        try:
            with ctrl_c_between_waits() as interrupted:
                yield from self._collect_runs(ray, pending, submit, out_dir, interrupted)
        finally:
            if pending:
                log.warning("kick-sweep: cancelling %d unfinished cell(s); they stay pending for the next run",
                            len(pending))
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    @staticmethod
    def _collect_runs(ray, pending: dict, submit, out_dir: Path, interrupted: list) -> Iterator[CellRun]:
        """Each cell's run as it lands, its group's next cell submitted; a Ctrl-C seen between waits stops here."""
        while pending:
            if interrupted:
                raise KeyboardInterrupt
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if not ready:
                continue
            cell, g = pending.pop(ready[0])
            try:
                run = land(ray.get(ready[0]), cell, out_dir)
            except ray.exceptions.RayTaskError as err:  # the task body itself raised (it catches cell errors)
                run = CellRun(cell, error=error_text(getattr(err, "cause", None) or err), ended=time.time())
            except ray.exceptions.RayError as err:  # worker crashed, OOM-killed, node died, cancelled
                run = CellRun(cell, error=lost_worker_reason(err), ended=time.time())
            submit(g)  # the group's next cell now finds the compressed model in the cache
            yield run
