"""How a sweep cell runs: ``python -m lm_eval`` in a subprocess (isolated memory, crashes confined to
the cell) or ``lm_eval.simple_evaluate`` in this process; both log every item's samples beside the
results file (the report pairs them with dense) and return the cell's results file."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from kick_common.args import parse_kv
from kick_study.grid import Cell, task_index

log = logging.getLogger(__name__)

class CellFailed(RuntimeError):
    """One cell's lm-eval run failed; the sweep records it and goes on."""


Runner = Callable[[Cell, Path], Path]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run a cell with ``threads`` torch threads (a noise-floor cell), the process's own count restored after."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _newest_results(cell_dir: Path) -> Path:
    found = sorted(cell_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CellFailed(f"lm-eval finished but wrote no results_*.json under {cell_dir}")
    return found[-1]


def subprocess_runner(include_path: str | None = None, timeout_s: float | None = None) -> Runner:
    """Run each cell as ``python -m lm_eval ...``: isolated memory, crashes confined to the cell."""

    def run(cell: Cell, cell_dir: Path) -> Path:
        cmd = [sys.executable, "-m", "lm_eval", "--model", "kick-hf", "--model_args", cell.model_args,
               "--tasks", ",".join(cell.tasks), "--output_path", str(cell_dir),
               "--batch_size", str(cell.batch_size), "--log_samples"]
        if cell.limit is not None:
            cmd += ["--limit", str(cell.limit)]
        if cell.device:
            cmd += ["--device", cell.device]
        if include_path:
            cmd += ["--include_path", include_path]
        log_path = cell_dir / "lm_eval.log"
        with open(log_path, "w", encoding="utf-8") as out:
            out.write(shlex.join(cmd) + "\n")
            out.flush()
            try:
                env = None if cell.threads is None else {**os.environ, **{k: str(cell.threads) for k in THREAD_ENV}}
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False, env=env)
            except subprocess.TimeoutExpired:
                raise CellFailed(f"lm_eval timed out after {timeout_s}s (log: {log_path})") from None
        if proc.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            raise CellFailed(f"lm_eval exited with {proc.returncode} (log: {log_path}):\n" + "\n".join(tail))
        return _newest_results(cell_dir)

    return run


def inprocess_runner(include_path: Sequence[str] | None = None, manager=None) -> Runner:
    """Run each cell with ``lm_eval.simple_evaluate`` in this process (no start-up cost per cell), over
    ``manager`` or else the :func:`task_index` of the cell's model and tasks."""

    def run(cell: Cell, cell_dir: Path) -> Path:
        import lm_eval
        from lm_eval.loggers import EvaluationTracker

        if manager is not None:
            cell_manager = manager
        else:
            args = cell.model_args if isinstance(cell.model_args, dict) else parse_kv(cell.model_args)
            pretrained = args.get("pretrained")
            cell_manager = task_index(pretrained if isinstance(pretrained, str) else None,
                                      include_path, tuple(cell.tasks))
        tracker = EvaluationTracker(output_path=str(cell_dir))
        with torch_threads(cell.threads):
            results = lm_eval.simple_evaluate(
                model="kick-hf", model_args=cell.model_args, tasks=list(cell.tasks), limit=cell.limit,
                batch_size=cell.batch_size, device=cell.device, task_manager=cell_manager,
                evaluation_tracker=tracker, log_samples=True,
            )
        if results is None:
            raise CellFailed("lm_eval.simple_evaluate returned no results")
        samples = results.pop("samples", None) or {}
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results.get("configs", {}):  # per-item records: what the report pairs with dense
            if task_name in samples:
                tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        return _newest_results(cell_dir)

    return run
