"""A stand-in cell runner for the pool launcher's tests: importable by spawned workers, records where,
when and with how many torch threads each cell ran, fails or kills its worker on request."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def record_runner(pause: float = 0.4, rendezvous: int = 0, wait_s: float = 120.0):
    """A runner that writes ``results_<id>.json`` with pid, threads and the start/end times of the cell.

    With ``rendezvous=k``, a cell planned without its own thread count waits (up to ``wait_s``) until k such
    cells have started, and records whether they did: cells run one after another never meet.
    """

    def run(cell, cell_dir: Path) -> Path:
        import torch

        from kick_study.runners import torch_threads

        if cell.method == "boom":
            raise RuntimeError("this cell fails")
        if cell.method == "die":
            os._exit(3)  # the worker process dies mid-cell (out of memory, killed)
        started = time.time()
        met = None
        if rendezvous and cell.threads is None:
            marks = Path(cell_dir).parent
            (marks / f"{cell.cell_id}.started").touch()
            deadline = time.time() + wait_s
            while len(list(marks.glob("*.started"))) < rendezvous and time.time() < deadline:
                time.sleep(0.05)
            met = len(list(marks.glob("*.started"))) >= rendezvous
        with torch_threads(cell.threads):
            time.sleep(pause)
            threads = torch.get_num_threads()
        out = Path(cell_dir) / f"results_{cell.cell_id}.json"
        out.write_text(json.dumps({"pid": os.getpid(), "threads": threads, "started": started, "ended": time.time(),
                                   "omp": os.environ.get("OMP_NUM_THREADS"), "met": met}))
        return out

    return run
