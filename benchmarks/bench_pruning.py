"""Benchmark kick's Wanda and SparseGPT (50% unstructured and 2:4) against llm-compressor's
oneshot WandaPruningModifier / SparseGPTModifier on the embedded SmolLM2-135M.

Every run is its own process (so peak RSS is per run), single-threaded, fed the same calibration
token ids (saved to a .pt file the peer reads) and scored on the same bundled held-out text.
Each run records the wall and CPU seconds (user + sys) of its compression and the load average
meanwhile; on a shared machine compare CPU seconds. kick's rows add the CPU share spent inside
decoder-block forwards, and the dense row the two-forward floor.
llm-compressor pins an older transformers, so it runs from its own virtualenv; without
``--llmcompressor-python`` only kick's side runs. Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_pruning.py --llmcompressor-python <venv>/bin/python
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from peer import calibration_and_heldout, load_text, print_floor_header, ratio, run_worker, worker_source  # beside this script

SETTINGS = [("wanda", "0.5"), ("wanda", "2:4"), ("sparsegpt", "0.5"), ("sparsegpt", "2:4")]

# Shared by both sides (the peer side has no kick installed): argv = side method setting model ids.pt held.pt eval_seqlen
WORKER = r'''
import json, os, resource, sys, torch
torch.set_num_threads(1)
side, method, setting, model_path, ids_path, held_path, eval_seqlen = sys.argv[1:8]
eval_seqlen = int(eval_seqlen)
ids, held = torch.load(ids_path), torch.load(held_path)
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

if side == "kick":  # kick's side also reports the time inside block forwards, and the dense run the floor
    sys.path.insert(0, os.environ["KICK_BENCHMARKS_DIR"])
    from peer import compress_with_phases, two_forward_floor
if method == "dense":
    timing = {"wall_s": 0.0, "cpu_s": 0.0, "load": list(os.getloadavg()[:1]) * 2, "floor": two_forward_floor(model, ids)}
elif side == "kick":
    from kick_models.config import build_config
    key = "pattern" if ":" in setting else "sparsity"
    config = build_config({"method": method, key: setting, "nsamples": ids.shape[0], "seqlen": ids.shape[1]})
    timing = compress_with_phases(model, config, ids)
else:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    structure = setting if ":" in setting else "0:0"
    cls = WandaPruningModifier if method == "wanda" else SparseGPTModifier
    extra = {} if method == "wanda" else {"block_size": 128, "dampening_frac": 0.01}
    recipe = cls(sparsity=0.5, mask_structure=structure, targets=["Linear"], ignore=["lm_head"], **extra)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    with Span() as span:  # oneshot's whole call: its data preparation and its calibration loop
        oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=ids.shape[0],
                max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    timing = span.record()
linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
zeros = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
model.eval()
ppl = perplexity(model, held, eval_seqlen)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
print("RESULT " + json.dumps({**timing, "ppl": ppl, "sparsity": zeros, "rss_mib": rss}), flush=True)
'''


def _run(python: str, side: str, method: str, setting: str, model_path, ids_path, held_path, eval_seqlen, workdir) -> dict:
    return run_worker(python, worker_source(WORKER), [side, method, setting, model_path, ids_path, held_path, eval_seqlen],
                      workdir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llmcompressor-python", help="interpreter of a virtualenv with llmcompressor")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--only", nargs="*", help="method@setting filters, e.g. wanda@0.5")
    parser.add_argument("--json", help="write all results here")
    args = parser.parse_args(argv)

    model_path, tokenizer, ids, info, held = calibration_and_heldout(
        {"method": "wanda", "sparsity": 0.5, "nsamples": args.nsamples, "seqlen": args.seqlen}, args.eval_tokens)
    settings = [s for s in SETTINGS if not args.only or f"{s[0]}@{s[1]}" in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="kick-bench-") as workdir:
        ids_path, held_path = Path(workdir) / "ids.pt", Path(workdir) / "held.pt"
        torch.save(ids, ids_path)
        torch.save(held, held_path)
        run = lambda python, side, m, s: _run(python, side, m, s, model_path, ids_path, held_path, args.eval_seqlen, workdir)  # noqa: E731
        results.append({"side": "dense", "method": "dense", "setting": "", **run(sys.executable, "kick", "dense", "")})
        for method, setting in settings:
            results.append({"side": "kick", "method": method, "setting": setting, **run(sys.executable, "kick", method, setting)})
            if args.llmcompressor_python:
                results.append({"side": "llm-compressor", "method": method, "setting": setting,
                                **run(args.llmcompressor_python, "llmc", method, setting)})
            _table(results, info)
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration": info, "results": results}, indent=2))
    return 0


# "+dense" is peak RSS above the dense run's (load + perplexity only): the compression's own memory;
# "fwd" is the share of kick's CPU time spent inside decoder-block forwards (statistics hooks included).
def _table(results: list[dict], info: dict) -> None:
    dense = print_floor_header(results, info)
    print(f"{'method':<10} {'setting':<8} {'side':<15} {'sparsity':>8} {'CPU s':>7} {'wall s':>7} {'load':>9} {'ppl':>9} "
          f"{'RSS MiB':>8} {'+dense':>7} {'fwd':>5} {'CPU ratio':>9} {'wall ratio':>10} {'RSS ratio':>9}")
    peers = {(r["method"], r["setting"]): r for r in results if r["side"] == "llm-compressor" and "error" not in r}
    for r in results:
        if "error" in r:
            print(f"{r['method']:<10} {r['setting']:<8} {r['side']:<15} ERROR {r['error']}")
            continue
        peer = peers.get((r["method"], r["setting"])) if r["side"] == "kick" else None
        share = f"{r['forward_cpu_s'] / r['cpu_s']:.2f}" if r.get("forward_cpu_s") else ""
        extra = r["rss_mib"] - dense["rss_mib"] if dense else 0.0
        print(f"{r['method']:<10} {r['setting']:<8} {r['side']:<15} {r['sparsity']:>8.4f} {r['cpu_s']:>7.1f} "
              f"{r['wall_s']:>7.1f} {load_text(r):>9} {r['ppl']:>9.2f} {r['rss_mib']:>8.0f} {extra:>7.0f} {share:>5} "
              f"{ratio(r, peer, 'cpu_s'):>9} {ratio(r, peer, 'wall_s'):>10} {ratio(r, peer, 'rss_mib'):>9}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
