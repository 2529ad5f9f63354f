"""Benchmark: evaluation wall time of ``kick-hf method=none`` against stock ``hf`` (target ratio ≤ 1.03).

Both run in this process on the same task, model and limit, interleaved (hf, kick-hf, hf, ...) so
drift in machine load hits both alike; the table reports the median of each.

    python benchmarks/bench_overhead.py [--limit 20] [--repeats 3] [--task kick_freebase]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_once(model: str, model_args: dict, task: str, limit: int, task_manager) -> float:
    import lm_eval

    start = time.perf_counter()
    lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=[task], limit=limit, task_manager=task_manager, device="cpu"
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default="kick_freebase")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    import kick_models
    from kick_models.embedded import embedded_model_path

    torch.set_num_threads(args.threads)
    path = str(embedded_model_path())
    tm = kick_models.task_manager()
    peers = {"hf": ("hf", {"pretrained": path}), "kick-hf method=none": ("kick-hf", {"pretrained": path})}
    run_once("hf", {"pretrained": path}, args.task, 2, tm)  # warm-up: file cache, lazy imports
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.repeats):
        for name, (model, model_args) in peers.items():
            times[name].append(run_once(model, model_args, args.task, args.limit, tm))

    base = statistics.median(times["hf"])
    print(f"\n{args.task}, limit {args.limit}, {args.repeats} interleaved repeats, {args.threads} thread(s)")
    print(f"{'model':<22}{'median s':>10}{'min s':>10}{'ratio':>8}")
    for name, values in times.items():
        print(f"{name:<22}{statistics.median(values):>10.2f}{min(values):>10.2f}{statistics.median(values) / base:>8.3f}")


if __name__ == "__main__":
    main()
