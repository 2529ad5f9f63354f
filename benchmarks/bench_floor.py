"""How far numerics alone move kick's results on this machine: the noise floor's ingredients, measured directly.

On the embedded SmolLM2-135M: the dense held-out reference under lm-eval-like batch sizes 1 and 2,
and Wanda 50% (the demo's floor cell) compressed under 1 and 2 torch threads — how many mask
entries differ, and KL(compressed@1 ‖ compressed@2) and top-1 agreement on kick's held-out windows.
``kick-sweep --noise_floor true`` measures the same on the grid's tasks; this isolates the pieces.
Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_floor.py --threads 1,2

Measured 2026-12-06 on a shared 2-core x86 VM (load 10–13 from other jobs), torch 2.13 CPU: dense
batch 1 vs 2 gave identical top-256 log-probabilities; Wanda 50% under 1 and 2 threads gave
identical masks (0 of 106,168,320 entries differ), KL(dense ‖ compressed) 0.766276 both ways and
KL between the two compressed models 0. Compression took 69.7 s (1 thread) and 234.7 s (2 threads,
oversubscribed by the load).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="two torch thread counts to compare")
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    first, second = (int(t) for t in args.threads.split(","))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_models.embedded import embedded_model_path

    torch.set_num_threads(first)
    path = embedded_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    windows = fidelity.fidelity_windows(tok)
    one, two = fidelity.dense_reference(dense, windows, batch_size=1), fidelity.dense_reference(dense, windows, batch_size=2)
    print(f"dense, batch 1 vs 2: same top-k ids {torch.equal(one.top_ids, two.top_ids)}, "
          f"max |Δ log p| {(one.top_logp - two.top_logp).abs().max().item():.3g}")
    config = build_config({"method": "wanda", "sparsity": args.sparsity, "nsamples": 16, "seqlen": 256, "calib": "bundled"})
    ids, _ = calibration_ids(tok, config, embedded_model=True, max_length=None)
    models = {}
    for threads in (first, second):
        torch.set_num_threads(threads)
        models[threads] = copy.deepcopy(dense)
        start = time.perf_counter()
        compress_model(models[threads], config, ids)
        print(f"wanda {args.sparsity:.0%}, {threads} thread(s): compressed in {time.perf_counter() - start:.1f} s")
    torch.set_num_threads(first)
    pairs = zip(models[first].named_parameters(), models[second].named_parameters())
    changed = sum(((a == 0) != (b == 0)).sum().item() for (name, a), (_, b) in pairs if a.dim() == 2 and "layers" in name)
    print(f"mask entries that differ: {changed}")
    for threads, model in models.items():
        out = fidelity.compare(model, one, windows)
        print(f"{threads} thread(s): KL(dense ‖ compressed) {out['kl_mean']:.6f}, top-1 {out['top1_agreement']:.4f}")
    out = fidelity.compare(models[second], fidelity.dense_reference(models[first], windows), windows)
    print(f"KL(compressed@{first} ‖ compressed@{second}) {out['kl_mean']:.3g}, top-1 {out['top1_agreement']:.4f}")


if __name__ == "__main__":
    main()
