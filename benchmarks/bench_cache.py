"""Benchmark: a second evaluation of the same config must spend ≤ 5% of the first's compression time.

Runs what ``kick-hf`` runs at load time — calibration windows, cache key, ``load_or_compress`` —
twice on the embedded SmolLM2 (through ``compress_with_cache``, the call kick-hf makes) with a fresh
cache folder: the first call compresses (miss), the
second loads the stored weights into a freshly loaded model (hit). Prints one JSON line.

    python benchmarks/bench_cache.py --method wanda --nsamples 16 --seqlen 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def one_load(path, config, cache_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_models.cache import compress_with_cache
    from kick_models.compression import compress_model
    from kick_models.compression.calibration import calibration_ids

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    start = time.perf_counter()
    summary, hit, _ = compress_with_cache(
        model, pretrained=str(path), config=config,
        calibrate=lambda: calibration_ids(tokenizer, config, embedded_model=True, max_length=2048),
        compress=lambda ids: compress_model(model, config, ids),
        calib_spec={"embedded": True, "max_length": 2048, "resolved_calib": config.resolved_calib(True)},
        cache_dir=cache_dir)
    return time.perf_counter() - start, hit, summary, model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="wanda")
    p.add_argument("--sparsity", default="0.5")
    p.add_argument("--nsamples", default="16")
    p.add_argument("--seqlen", default="256")
    args = p.parse_args(argv)

    import torch

    from kick_models.config import build_config
    from kick_models.embedded import embedded_model_path

    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = build_config({"method": args.method, "sparsity": args.sparsity, "nsamples": args.nsamples,
                           "seqlen": args.seqlen})
    path = embedded_model_path()
    with tempfile.TemporaryDirectory(prefix="kick-bench-cache-") as cache_dir:
        first_s, first_hit, summary, first = one_load(path, config, cache_dir)
        second_s, second_hit, _, second = one_load(path, config, cache_dir)
        same = all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    result = {
        "model": "SmolLM2-135M-Instruct (embedded)", "config": f"{args.method} s={args.sparsity} "
        f"nsamples={args.nsamples} seqlen={args.seqlen}", "first_s": round(first_s, 2), "first_hit": first_hit,
        "second_s": round(second_s, 3), "second_hit": second_hit, "ratio": round(second_s / first_s, 4),
        "achieved_sparsity": summary.get("achieved_sparsity"), "identical_weights": same,
        "threads": torch.get_num_threads(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if (not first_hit and second_hit and same and result["ratio"] <= 0.05) else 1


if __name__ == "__main__":
    raise SystemExit(main())
