"""The sweep's ``index.json``: every cell's settings, status, results file or error, written after each
cell by the driver alone (whatever the launcher), so a rerun skips what is done and retries what failed."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kick_common.atomic import write_json
from kick_study.grid import Cell
from kick_study.launchers import CellRun, Launcher, launch_order, serial_launcher
from kick_study.runners import Runner
from kick_study.settings import SweepError

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
LOCK_FILE = ".index.lock"

def _write_index(out_dir: Path, index: Mapping[str, Any]) -> None:
    write_json(out_dir / INDEX_FILE, index, indent=2)


def load_index(out_dir: Path) -> dict[str, Any]:
    path = out_dir / INDEX_FILE
    if not path.is_file():
        return {"version": 1, "cells": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise SweepError(f"kick-sweep: {path} is not valid JSON ({err}); move it away to start over") from None
    if not isinstance(index, dict) or not isinstance(index.setdefault("cells", {}), dict):
        what = type(index).__name__ if not isinstance(index, dict) else f"'cells' {type(index['cells']).__name__}"
        raise SweepError(f"kick-sweep: {path} holds a JSON {what}, not kick-sweep's index (an object whose 'cells' "
                         "is an object); accepted: an index written by kick-sweep, or move it away to start over")
    return index


def is_done(entry: Mapping[str, Any] | None, out_dir: Path) -> bool:
    """Finished with its results file and the per-item samples beside it (a cell from a sweep that did
    not log samples runs again, so the report can pair it with dense)."""
    from kick_study.samples import samples_files

    if not entry or entry.get("status") != "ok":
        return False
    results = out_dir / entry.get("results_file", "")
    return results.is_file() and bool(samples_files(results))


@dataclass
class SweepOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _stamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def _entry(run: CellRun, out_dir: Path) -> dict[str, Any]:
    """The index entry of a finished cell: ok with its results file, or failed with the reason."""
    entry: dict[str, Any] = {**run.cell.describe(), "started": _stamp(run.started), "ended": _stamp(run.ended)}
    results_file = None
    if run.error is None and run.results_file is not None:
        try:
            results_file = run.results_file.resolve().relative_to(out_dir.resolve()).as_posix()
        except ValueError:
            run.error = f"the results file {run.results_file} is outside the results folder {out_dir}"
    if results_file is not None:
        entry.update(status="ok", results_file=results_file)
    else:
        entry.update(status="failed", error=run.error or "the launcher reported no results file")
    if run.started is not None and run.ended is not None:
        entry["seconds"] = round(run.ended - run.started, 2)
    if run.cpu_seconds is not None:
        entry["cpu_seconds"] = run.cpu_seconds
    if run.worker:
        entry["worker"] = dict(run.worker)
    return entry


@contextlib.contextmanager
def sole_writer(out_dir: Path) -> Iterator[None]:
    """Hold ``<out>/.index.lock`` while a sweep writes: a second kick-sweep on the same folder is refused."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SweepError(f"kick-sweep: another kick-sweep is writing {out_dir} (lock {lock.lock_file}); "
                         "wait for it to finish or use another --out") from None
    try:
        yield
    finally:
        lock.release()


def run_sweep(cells: Sequence[Cell], out_dir: Path, runner: Runner | None = None,
              settings: Mapping[str, Any] | None = None, progress: bool = True,
              launcher: Launcher | None = None) -> SweepOutcome:
    """Run the cells not yet done, recording each one in ``index.json`` as soon as it ends.

    ``launcher`` decides where cells run (default: :func:`serial_launcher` over ``runner``). This
    function alone writes the index, atomically, so an interrupted sweep leaves every finished cell
    recorded and every other one ``pending`` (retried by the next run, like a failed one).
    """
    from tqdm.auto import tqdm

    if launcher is None:
        if runner is None:
            raise TypeError("run_sweep needs a runner or a launcher")
        launcher = serial_launcher(runner)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sole_writer(out_dir):
        index = load_index(out_dir)
        if settings is not None:
            index["settings"] = dict(settings)
        outcome = SweepOutcome()
        todo = []
        for cell in cells:
            entry = index["cells"].get(cell.cell_id)
            if is_done(entry, out_dir):
                outcome.skipped.append(cell.cell_id)
            else:
                todo.append(cell)
                index["cells"][cell.cell_id] = {**cell.describe(), "status": "pending"}
        _write_index(out_dir, index)
        log.info("kick-sweep: %d cells, %d already done, %d to run", len(cells), len(outcome.skipped), len(todo))
        bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc="kick-sweep cells", unit="cell",
                   disable=not progress, smoothing=0)
        runs = launcher(launch_order(todo), out_dir)
        try:
            for run in runs:
                entry = _entry(run, out_dir)
                (outcome.ran if entry["status"] == "ok" else outcome.failed).append(run.cell.cell_id)
                if entry["status"] != "ok":
                    log.error("kick-sweep: cell %s failed: %s", run.cell.cell_id, entry["error"])
                index["cells"][run.cell.cell_id] = entry
                _write_index(out_dir, index)
                bar.set_postfix_str(run.cell.cell_id[:48])
                bar.update(1)
        finally:
            close = getattr(runs, "close", None)
            if close is not None:
                close()  # the launcher's clean-up: cancel what is still running
            bar.close()
    return outcome
