"""A stand-in cell runner for the pool launcher's tests: importable by spawned workers, records where,
when and with how many torch threads each cell ran, fails or kills its worker on request."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def record_runner(pause: float = 0.4):
    """A runner that writes ``results_<id>.json`` with pid, threads and the start/end times of the cell."""

    def run(cell, cell_dir: Path) -> Path:
        import torch

        from kick_study.runners import torch_threads

        if cell.method == "boom":
            raise RuntimeError("this cell fails")
        if cell.method == "die":
            os._exit(3)  # the worker process dies mid-cell (out of memory, killed)
        started = time.time()
        with torch_threads(cell.threads):
            time.sleep(pause)
            threads = torch.get_num_threads()
        out = Path(cell_dir) / f"results_{cell.cell_id}.json"
        out.write_text(json.dumps({"pid": os.getpid(), "threads": threads, "started": started, "ended": time.time(),
                                   "omp": os.environ.get("OMP_NUM_THREADS")}))
        return out

    return run
