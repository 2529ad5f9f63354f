"""Cells side by side on one machine's CPU cores: ``jobs: N`` runs up to N cells at once, each in its own
worker process with its share of the cores.

On a CPU, one torch process per core is far more efficient than one process over all cores: on a
2-core machine the demo's cells run ~1.2x faster with 2 threads than with 1, but two 1-thread cells
side by side run ~1.9x faster than one after the other. So the serial launcher's single process gives
way to a pool of worker processes (spawned, so no worker inherits the parent's torch threads), each
running the sweep's own runner. Cells that load the same compressed model still run one after the
other (the first compresses into the cache, the next loads it). A cell that asks for more threads
than a worker has (a noise-floor cell, planned with another thread count) runs after the pool's cells,
alone, in this process: sharing cores with another cell would change its timing and, for torch's
spinning thread pool, collapse it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from kick_study.grid import Cell
from kick_study.launchers import CellRun, Launcher, compression_groups, error_text, run_here, serial_launcher
from kick_study.runners import THREAD_ENV, Runner

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _init_worker(make_runner: Callable[[], Runner], threads: int, log_level: int) -> None:
    """Each worker: its thread count (before torch starts its pool), logging like the sweep's, its own runner."""
    for key in THREAD_ENV:
        os.environ[key] = str(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(threads)
    _WORKER["runner"] = make_runner()


def _run_in_worker(cell: Cell, out_dir: str) -> CellRun:
    return run_here(_WORKER["runner"], cell, Path(out_dir))


# --------------------------------------------------------------------------- sweep side
def split_by_threads(groups: Sequence[Sequence[Cell]], threads: int) -> tuple[list[list[Cell]], list[Cell]]:
    """The groups that fit a worker's threads, and the cells (in order) that need more and so run alone after."""
    pooled: list[list[Cell]] = []
    alone: list[Cell] = []
    for group in groups:
        fits = [c for c in group if c.threads is None or c.threads <= threads]
        alone += [c for c in group if c not in fits]
        if fits:
            pooled.append(fits)
    return pooled, alone


def pool_launcher(jobs: int, threads: int, make_runner: Callable[[], Runner], runner: Runner) -> Launcher:
    """Up to ``jobs`` cells at once in spawned workers with ``threads`` torch threads each, each running the
    runner ``make_runner`` builds there (a picklable factory, e.g. ``partial(inprocess_runner, include)``), then
    the cells that need more threads than a worker has, one by one here through ``runner``."""

    def launch(cells: Sequence[Cell], out_dir: Path) -> Iterator[CellRun]:
        pooled, alone = split_by_threads(compression_groups(cells), threads)
        if pooled:
            yield from _pooled(pooled, out_dir, jobs, make_runner, threads)
        yield from serial_launcher(runner)(alone, out_dir)

    return launch


def _pooled(groups: list[list[Cell]], out_dir: Path, jobs: int, make_runner: Callable[[], Runner],
            threads: int) -> Iterator[CellRun]:
    queues = [deque(group) for group in groups]
    workers = min(jobs, len(queues))
    log.info("kick-sweep: %d cells at once, %d torch thread(s) each", workers, threads)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(make_runner, threads, logging.getLogger().getEffectiveLevel()))
    running: dict[Future, tuple[Cell, int]] = {}

    broken: list[CellRun] = []

    def submit(i: int) -> None:
        cell = queues[i].popleft()
        try:
            running[pool.submit(_run_in_worker, cell, str(out_dir))] = (cell, i)
        except BrokenProcessPool as err:  # a worker died: this cell and its group's rest fail, the sweep goes on
            for lost in (cell, *queues[i]):
                broken.append(CellRun(lost, error=f"the worker process failed: {error_text(err)}", ended=time.time()))
            queues[i].clear()

    try:
        for i in range(len(queues)):  # the pool queues them in launch order: dense first
            submit(i)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                cell, i = running.pop(future)
                try:
                    run = future.result()
                except Exception as err:  # noqa: BLE001 — a worker that died (out of memory, killed) fails its cell
                    run = CellRun(cell, error=f"the worker process failed: {error_text(err)}", ended=time.time())
                if queues[i]:
                    submit(i)  # the group's next cell loads what this one compressed
                yield run
            yield from broken
            broken.clear()
        yield from broken
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
