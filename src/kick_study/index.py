"""The sweep's ``index.json``: every cell's settings, status, results file or error, written after each
cell, so a rerun skips what is done and retries what failed."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from kick_common.atomic import write_json
from kick_study.grid import Cell, SweepError
from kick_study.runners import Runner

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"

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
    index.setdefault("cells", {})
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


def run_sweep(cells: Sequence[Cell], out_dir: Path, runner: Runner, settings: Mapping[str, Any] | None = None,
              progress: bool = True) -> SweepOutcome:
    """Run the cells not yet done, recording each one in ``index.json`` as soon as it ends."""
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
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
    try:
        for cell in todo:
            bar.set_postfix_str(cell.cell_id[:48])
            cell_dir = out_dir / "cells" / cell.cell_id
            cell_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            entry = {**cell.describe(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            try:
                results_file = runner(cell, cell_dir)
                entry.update(status="ok", results_file=Path(results_file).resolve().relative_to(out_dir.resolve()).as_posix())
                outcome.ran.append(cell.cell_id)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # noqa: BLE001 — any cell failure is recorded, the sweep goes on
                entry.update(status="failed", error=f"{type(err).__name__}: {err}")
                outcome.failed.append(cell.cell_id)
                log.error("kick-sweep: cell %s failed: %s", cell.cell_id, err)
            entry["seconds"] = round(time.perf_counter() - start, 2)
            index["cells"][cell.cell_id] = entry
            _write_index(out_dir, index)
            bar.update(1)
    finally:
        bar.close()
    return outcome
