"""kick-hf's two ways to answer ``generate_until`` requests on the same loaded model: lm-eval's padded batches
and continuous batching (``continuous_batching=true``), on real task prompts: wall time, answer tokens/s,
and how many greedy answers differ (with the first few differences shown).

The judge is not called: only the generation requests of the tasks are built. Example (the embedded model):

    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --tasks kick_icrqa_mini_open --limit 10
    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --tasks kick_instruct --limit 4 --max-gen-toks 128
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any


def task_requests(tasks: list[str], limit: int | None, max_gen_toks: int | None = None) -> list[Any]:
    """The ``generate_until`` instances lm-eval would send for ``tasks`` (first ``limit`` docs each)."""
    from lm_eval.tasks import get_task_dict

    from kick_models.registration import task_manager

    requests = []
    for task in get_task_dict(tasks, task_manager()).values():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        for instance in task.instances:
            if instance.request_type != "generate_until":
                continue
            if max_gen_toks is not None:  # a shorter answer budget, for a CPU measurement of a long-answer task
                context, gen_kwargs = instance.arguments
                instance.arguments = (context, {**gen_kwargs, "max_gen_toks": max_gen_toks})
            requests.append(instance)
    return requests


def timed(fn, *args) -> tuple[Any, float, float]:
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def compare(lm: Any, requests: list[Any]) -> dict[str, Any]:
    """Both paths on ``requests`` with ``lm`` (a loaded kick-hf): timings, throughput, differing answers."""
    from lm_eval.models.huggingface import HFLM

    from kick_models import generation

    batched, batched_s, batched_cpu = timed(lambda r: HFLM.generate_until(lm, r, disable_tqdm=True), requests)
    continuous, cont_s, cont_cpu = timed(lambda r: generation.generate_until(lm, r, disable_tqdm=True), requests)
    if continuous is None:
        return {"requests": len(requests), "continuous": "not supported here (see the log line)"}
    tokens = sum(len(lm.tok_encode(a)) for a in batched)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(batched, continuous, strict=True)) if a != b]
    return {
        "requests": len(requests), "answer_tokens": tokens, "batch_size": lm.batch_size,
        "lm_eval_s": round(batched_s, 2), "lm_eval_cpu_s": round(batched_cpu, 2),
        "continuous_s": round(cont_s, 2), "continuous_cpu_s": round(cont_cpu, 2),
        "lm_eval_tok_s": round(tokens / batched_s, 1), "continuous_tok_s": round(tokens / cont_s, 1),
        "wall_ratio": round(cont_s / batched_s, 3), "differ": len(differ),
        "examples": [{"index": i, "lm_eval": a[:160], "continuous": b[:160]} for i, a, b in differ[:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="kick_icrqa_mini_open")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--max-gen-toks", type=int, default=None, help="override the tasks' answer budget")
    parser.add_argument("--model-args", default="", help="kick-hf model_args (default: the embedded model)")
    parser.add_argument("--batch-size", default="8", help="lm-eval's batch size for its own path")
    args = parser.parse_args()
    import torch

    from kick_common.args import parse_kv
    from kick_models.lm import KickHFLM

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # comparable with the other CPU benchmarks
    lm = KickHFLM(**{"dtype": "float32", "fidelity": "false", **parse_kv(args.model_args)}, batch_size=args.batch_size)
    requests = task_requests(args.tasks.split(","), args.limit, args.max_gen_toks)
    result = {"tasks": args.tasks, "device": str(lm.device), **compare(lm, requests),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
