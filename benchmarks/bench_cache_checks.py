"""Benchmark: what the cache's checks cost on the embedded SmolLM2 — a hit's one-window fidelity re-check,
the dense snapshot a miss takes, and re-reading the weights file that the content-hash memo avoids.
Prints one JSON line of (wall s, CPU s) per repeat.

    python benchmarks/bench_cache_checks.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def timed(fn, repeats: int) -> list[tuple[float, float]]:
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)))
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_models import cache, fidelity
    from kick_models.embedded import embedded_model_path

    torch.set_num_threads(1)
    path = embedded_model_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    windows = fidelity.fidelity_windows(AutoTokenizer.from_pretrained(path), max_length=2048)
    reference = fidelity.dense_reference(model, windows[:1])
    stored = fidelity.compare(model, reference, windows[:1])
    result = {
        "model": "SmolLM2-135M-Instruct (embedded), float32, 1 thread",
        "recheck": timed(lambda: fidelity.recheck(model, reference, windows, stored), args.repeats),
        "state_digests": timed(lambda: cache.state_digests(model), args.repeats),
        "sha256_weights_file": timed(lambda: cache._sha256_file(path / "model.safetensors"), args.repeats),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
