"""Judge throughput: 80 items against a loopback OpenAI-compatible endpoint with 200 ms latency,
sequential (concurrency 1) vs the default bounded pool. Target: >= 6x faster.

    python benchmarks/bench_judge.py [--items 80] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kick_tasks.judge.client import JudgeClient, JudgeConfig, JudgeRequest
from kick_tasks.judge.grading import grade_single

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the loopback server is a test helper
from kick_tasks.judge.prompts import single_messages
from kick_testlib.loopback import LoopbackJudgeServer  # noqa: E402


def timed_run(base_url: str, items: int, concurrency: int) -> tuple[float, int]:
    config = JudgeConfig(model="bench-judge", base_url=base_url, concurrency=concurrency, cache_dir=None)
    requests = [JudgeRequest(single_messages(f"question {i}", f"answer {i}"), "score", (f"answer {i}",))
                for i in range(items)]
    start = time.perf_counter()
    records = grade_single(JudgeClient(config), requests)
    elapsed = time.perf_counter() - start
    return elapsed, sum(r["status"] == "ok" for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=80)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    default = JudgeConfig(model="x").concurrency
    with LoopbackJudgeServer(lambda body: "Fine. [[7]]", latency=args.latency) as server:
        seq, seq_ok = timed_run(server.base_url, args.items, 1)
        par, par_ok = timed_run(server.base_url, args.items, default)
    print(f"judge benchmark: {args.items} items, {args.latency * 1000:.0f} ms endpoint latency")
    print(f"{'mode':<22}{'concurrency':>12}{'wall s':>10}{'ok':>6}")
    print(f"{'sequential':<22}{1:>12}{seq:>10.2f}{seq_ok:>6}")
    print(f"{'default pool':<22}{default:>12}{par:>10.2f}{par_ok:>6}")
    print(f"speed-up: {seq / par:.2f}x (target >= 6x)")


if __name__ == "__main__":
    main()
