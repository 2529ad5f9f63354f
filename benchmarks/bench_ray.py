"""Benchmark: a 4-cell sweep on the embedded SmolLM2, serial vs Ray with 2 single-threaded workers.

Target: Ray's wall time ≤ 0.6 × the serial launcher's on a 2-core machine. Both run the same grid
(dense, magnitude 50%, Wanda 50%, magnitude 2:4) in this one process, single-threaded, each with a
fresh compressed-model cache: serial through the in-process runner (no start-up cost per cell, the
fastest serial path), Ray on a local instance of ``--cpus`` CPUs (start-up and shutdown counted).
The cells' scores must be identical. Prints a table and one JSON line.

    python benchmarks/bench_ray.py --limit 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def grid_cells(args):
    from kick_study import grid
    from kick_study.settings import SweepSettings

    settings = SweepSettings.from_mapping({
        "models": ["embedded"], "methods": ["magnitude", "wanda"], "sparsities": [0.5],
        "patterns": ["unstructured", "2:4"], "tasks": args.tasks.split(","), "limit": args.limit,
        "wikitext": "false", "model_args": {"nsamples": args.nsamples, "seqlen": args.seqlen}})
    cells = grid.plan_cells(settings, settings.tasks)
    cells = [c for c in cells if not (c.method == "wanda" and c.pattern != "unstructured")]
    assert len(cells) == 4, [c.cell_id for c in cells]
    return cells


def scores(out: Path) -> dict:
    from kick_study.index import INDEX_FILE

    index = json.loads((out / INDEX_FILE).read_text())  # keyed by setting: cell ids hash the cache folder too
    return {(e["method"], e["pattern"], e["sparsity"], e["wbits"]): json.loads((out / e["results_file"]).read_text())["results"]
            for e in index["cells"].values()}


def cell_seconds(out: Path) -> float:
    """Mean seconds a cell took where it ran (start-up of the sweep itself not included)."""
    from kick_study.index import INDEX_FILE

    entries = json.loads((out / INDEX_FILE).read_text())["cells"].values()
    return round(sum(e["seconds"] for e in entries) / len(entries), 1)


def timed_sweep(cells, out: Path, cache: Path, launcher=None) -> float:
    import dataclasses

    from kick_models.registration import task_manager
    from kick_study import index, runners

    cells = [dataclasses.replace(c, model_args=f"{c.model_args},cache_dir={cache}") for c in cells]
    start = time.perf_counter()
    if launcher is None:
        runner = runners.inprocess_runner(manager=task_manager(include_defaults=False))
        outcome = index.run_sweep(cells, out, runner, progress=False)
    else:
        outcome = index.run_sweep(cells, out, launcher=launcher, progress=False)
    seconds = time.perf_counter() - start
    if outcome.failed:
        raise SystemExit(f"bench_ray: cells failed: {outcome.failed}")
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="kick_ppl_heldout")
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (one single-threaded cell each)")
    args = p.parse_args(argv)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from kick_models.embedded import embedded_model_path
    from kick_study.ray_launcher import RayLauncher

    torch.set_num_threads(1)
    embedded_model_path()  # converted once beforehand, outside both timings
    cells = grid_cells(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kick-bench-ray-") as tmp:
        root = Path(tmp)
        serial_s = timed_sweep(cells, root / "serial", root / "cache-serial")
        ray_s = timed_sweep(cells, root / "ray", root / "cache-ray",
                            RayLauncher(cpus_per_cell=1, init_kwargs={"num_cpus": args.cpus}))
        same = scores(root / "serial") == scores(root / "ray")
        per_cell = {"serial": cell_seconds(root / "serial"), "ray": cell_seconds(root / "ray")}
    result = {"grid": "embedded SmolLM2: dense, magnitude 0.5, wanda 0.5, magnitude 2:4", "tasks": args.tasks,
              "limit": args.limit, "cells": len(cells), "serial_s": round(serial_s, 1), "ray_s": round(ray_s, 1),
              "ratio": round(ray_s / serial_s, 3), "ray_workers": args.cpus, "threads_per_cell": 1,
              "identical_scores": same, "mean_cell_s": per_cell, "cpu_count": os.cpu_count(),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    sys.stdout.write(f"| launcher | wall s |\n|---|---|\n| serial (in-process) | {result['serial_s']} |\n"
                     f"| ray, {args.cpus} workers | {result['ray_s']} |\n| ratio ray/serial | {result['ratio']} |\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if same and result["ratio"] <= 0.6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
