"""Where a sweep's cells run: a launcher takes the cells still to do and reports each one as it ends.

The index writer (:func:`kick_study.index.run_sweep`) only consumes :class:`CellRun` reports, so it
is the same for every launcher: the serial one here (one cell after another through a runner) or
the Ray one (:mod:`kick_study.ray_launcher`, cells in parallel across GPUs and nodes).
"""

from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kick_study.grid import Cell
from kick_study.runners import Runner


@dataclass
class CellRun:
    """One finished attempt at a cell: its results file or its error, and when and where it ran."""

    cell: Cell
    results_file: Path | None = None
    error: str | None = None
    started: float | None = None  # epoch seconds, measured where the cell ran
    ended: float | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float | None = None  # user + system CPU of the process and its children while the cell ran


Launcher = Callable[[Sequence[Cell], Path], Iterator[CellRun]]


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def launch_order(cells: Sequence[Cell]) -> list[Cell]:
    """Dense cells first (each base model's reference for the paired statistics), then the rest in grid order."""
    return [c for c in cells if c.method == "none"] + [c for c in cells if c.method != "none"]


def compression_groups(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Cells that load the same compressed model (same model and model_args; other tasks or limit), in launch order.

    A launcher runs one group's cells one after another: the first compresses into the cache, the
    others load from it instead of each holding a slot while waiting on the cache lock. Dense
    cells compress nothing and stand alone.
    """
    groups: OrderedDict[Any, list[Cell]] = OrderedDict()
    for cell in launch_order(cells):
        key = cell.cell_id if cell.method == "none" else (cell.model, cell.model_args)
        groups.setdefault(key, []).append(cell)
    return list(groups.values())


def cpu_time() -> float:
    """CPU seconds (user + system) used so far by this process and its waited-for children: a cell's share
    is the difference, whether it ran here (``inprocess``) or in a ``python -m lm_eval`` child."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_here(runner: Runner, cell: Cell, out_dir: Path) -> CellRun:
    """One cell through ``runner`` in this process, into its own folder: its results file or error, when it ran,
    where and its CPU seconds (this process runs one cell at a time, so its CPU clock's difference is the cell's)."""
    cell_dir = out_dir / "cells" / cell.cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    run = CellRun(cell, started=time.time(), worker={"host": socket.gethostname(), "pid": os.getpid()})
    cpu = cpu_time()
    try:
        run.results_file = Path(runner(cell, cell_dir))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 — any cell failure is recorded, the sweep goes on
        run.error = error_text(err)
    run.ended = time.time()
    run.cpu_seconds = round(cpu_time() - cpu, 2)
    return run


def serial_launcher(runner: Runner) -> Launcher:
    """Run the cells one after another in this process through ``runner``, each writing its own folder."""

    def launch(cells: Sequence[Cell], out_dir: Path) -> Iterator[CellRun]:
        for group in compression_groups(cells):
            for cell in group:
                yield run_here(runner, cell, out_dir)

    return launch
