"""Benchmark: a second evaluation of the same config must spend ≤ 5% of the first's compression time.

Runs what ``kick-hf`` runs at load time — calibration windows, cache key, the cache's slot — twice on
the embedded SmolLM2 with a fresh cache folder: the first load compresses (miss) and measures the
fidelity on every held-out window; the second loads the stored tensors into a freshly loaded model
(hit) and re-measures one window, as kick-hf does before it reports a hit's fidelity. Prints one
JSON line (``recheck_s``: that one-window re-measurement).

    python benchmarks/bench_cache.py --method wanda --nsamples 16 --seqlen 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def one_load(path, config, cache_dir, reference=None):
    """(seconds, hit, summary, model, reference, recheck seconds) of one kick-hf style load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_models import cache, fidelity
    from kick_models.compression import compress_model
    from kick_models.compression.calibration import calibration_ids

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    windows = fidelity.fidelity_windows(tokenizer, max_length=2048)
    reference = reference or fidelity.dense_reference(model, windows)
    start = time.perf_counter()
    ids, info = calibration_ids(tokenizer, config, embedded_model=True, max_length=2048)
    parts = cache.key_parts(pretrained=str(path), config=config, calib_info=info, model=model, cache_dir=cache_dir)
    recheck_s = None
    with cache.open_slot(model, parts, cache_dir=cache_dir, expect_sparsity=config.target_sparsity) as slot:
        summary = slot.load()
        if summary is not None:
            check = fidelity.recheck(model, reference, windows, summary["fidelity"])
            assert check["problem"] is None, check
            recheck_s = check["seconds"]
        else:
            summary = dict(compress_model(model, config, ids))
            summary["fidelity"] = fidelity.compare(model, reference, windows)
            summary = slot.store(summary)
    return time.perf_counter() - start, summary["cache"]["hit"], summary, model, reference, recheck_s


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
        first_s, first_hit, summary, first, reference, _ = one_load(path, config, cache_dir)
        second_s, second_hit, _, second, _, recheck_s = one_load(path, config, cache_dir, reference)
        same = all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    result = {
        "model": "SmolLM2-135M-Instruct (embedded)", "config": f"{args.method} s={args.sparsity} "
        f"nsamples={args.nsamples} seqlen={args.seqlen}", "first_s": round(first_s, 2), "first_hit": first_hit,
        "second_s": round(second_s, 3), "second_hit": second_hit, "ratio": round(second_s / first_s, 4), "recheck_s": recheck_s,
        "achieved_sparsity": summary.get("achieved_sparsity"), "identical_weights": same,
        "threads": torch.get_num_threads(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if (not first_hit and second_hit and same and result["ratio"] <= 0.05) else 1


if __name__ == "__main__":
    raise SystemExit(main())
