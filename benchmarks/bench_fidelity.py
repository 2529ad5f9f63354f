"""What kick-hf's fidelity measurement costs, and how close its top-k KL comes to the full-vocabulary KL.

On the embedded SmolLM2-135M (single-threaded): for dense, Wanda 30%, Wanda 50% and Wanda 2:4,
the KL(dense ‖ compressed) over kick's fixed held-out windows is computed over the whole
vocabulary and with the top-k + rest bucket kick stores (k = 8, 16, 64, 256), next to the
seconds the measurement takes (dense reference pass + comparison pass). Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_fidelity.py
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from kick_models import fidelity
from kick_models.compression import compress_model
from kick_models.compression.calibration import calibration_ids
from kick_models.config import build_config

SETTINGS = [("dense", {}), ("wanda 30%", {"sparsity": 0.3}), ("wanda 50%", {"sparsity": 0.5}), ("wanda 2:4", {"pattern": "2:4"})]
KS = (8, 16, 64, 256)


def full_kl(dense, model, windows) -> float:
    """Mean KL(dense ‖ model) over every predicted position, summed over the whole vocabulary."""
    total, count = 0.0, 0
    for (p, _), (q, _) in zip(fidelity._log_probs(dense, windows, fidelity.BATCH_SIZE),
                              fidelity._log_probs(model, windows, fidelity.BATCH_SIZE)):
        total += (p.double().exp() * (p.double() - q.double())).sum().item()
        count += p.shape[0]
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=fidelity.FIDELITY_TOKENS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_models.embedded import embedded_model_path

    path = embedded_model_path()
    dense = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    windows = fidelity.fidelity_windows(tok, tokens=args.tokens)
    start = time.perf_counter()
    references = {k: fidelity.dense_reference(dense, windows, k=k) for k in KS}
    ids, _ = calibration_ids(tok, build_config({"method": "wanda", "sparsity": 0.5, "nsamples": 16, "seqlen": 256}),
                             embedded_model=True, max_length=None)
    print(f"{windows.numel()} tokens in {windows.shape[0]} windows; dense reference pass "
          f"{references[64].seconds:.2f}s (all k: {time.perf_counter() - start:.1f}s)\n")
    print("| setting | full-vocab KL | " + " | ".join(f"top-{k} KL (% of full)" for k in KS)
          + " | top-1 agreement | compare pass (s) | compress (s) |")
    print("|---|---:|" + "---:|" * len(KS) + "---:|---:|---:|")
    for label, extra in SETTINGS:
        model = dense
        compress_s = 0.0
        if extra:
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            compress_model(model, build_config({"method": "wanda", "nsamples": 16, "seqlen": 256, **extra}), ids)
            compress_s = time.perf_counter() - t0
        full = full_kl(dense, model, windows)
        cells, top1, compare_s = [], None, 0.0
        for k in KS:
            t0 = time.perf_counter()
            out = fidelity.compare(model, references[k], windows)
            if k == fidelity.TOP_K:
                compare_s, top1 = time.perf_counter() - t0, out["top1_agreement"]
            share = f"{100 * out['kl_mean'] / full:.1f}%" if full > 0 else "—"
            cells.append(f"{out['kl_mean']:.4f} ({share})")
        print(f"| {label} | {full:.4f} | " + " | ".join(cells) + f" | {top1:.3f} | {compare_s:.2f} | {compress_s:.1f} |")


if __name__ == "__main__":
    main()
