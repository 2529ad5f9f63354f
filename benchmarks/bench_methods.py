"""Benchmark the registry's newer methods on the embedded SmolLM2-135M: RTN and AWQ (W4 g128)
against kick's GPTQ and llm-compressor's AWQ and RTN (QuantizationModifier, min-max, no data);
RIA and DSnoT against Wanda and SparseGPT at 50% unstructured and 2:4.

Every run is its own process (peak RSS per run), single-threaded, fed the same calibration token
ids (a .pt file the peer reads) and scored on the same bundled held-out text; each records the
wall and CPU seconds (user + sys) of its compression and the load average meanwhile (on a shared
machine compare CPU seconds), kick's runs the share spent in block forwards. llm-compressor pins
its own transformers, so it runs from its own virtualenv; without ``--llmcompressor-python`` only
kick's side runs. Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py --llmcompressor-python <venv>/bin/python
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from peer import calibration_and_heldout, load_text, print_floor_header, ratio, run_worker, worker_source  # beside this script

# (side, label, kick model_args or the peer's scheme)
# llm-compressor refuses group_size=128 on SmolLM2 (576 input columns are not a multiple of 128; kick's
# last group is shorter), so the peer comparison is at g64, where every width divides
QUANT = [
    ("kick", f"{m} W4 g{g}", {"method": m, "wbits": 4, "group_size": g})
    for g in (128, 64) for m in ("rtn", "awq", "gptq")
] + [("llm-compressor", f"{m} W4 g64", {"peer": m, "group_size": 64}) for m in ("rtn", "awq")]
PRUNE = [
    ("kick", f"{m}{tag} {s}", {"method": m, **({"pattern": s} if ":" in s else {"sparsity": s}), **extra})
    for s in ("0.5", "2:4")
    for m, tag, extra in (("wanda", "", {}), ("sparsegpt", "", {}), ("ria", "", {}),
                          ("ria", "+perm", {"ria_permute": True}),
                          ("dsnot", "(wanda)", {}), ("dsnot", "(sparsegpt)", {"dsnot_init": "sparsegpt"}))
    if not (tag == "+perm" and ":" not in s)
]

WORKER = r'''
import json, os, resource, sys, torch
torch.set_num_threads(1)
side, spec, model_path, ids_path, held_path, eval_seqlen = sys.argv[1:7]
spec, eval_seqlen = json.loads(spec), int(eval_seqlen)
ids, held = torch.load(ids_path), torch.load(held_path)
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

if side in ("dense", "kick"):  # kick's side also reports the time inside block forwards, the dense run the floor
    sys.path.insert(0, os.environ["KICK_BENCHMARKS_DIR"])
    from peer import compress_with_phases, two_forward_floor
if side == "dense":
    timing = {"wall_s": 0.0, "cpu_s": 0.0, "load": list(os.getloadavg()[:1]) * 2, "floor": two_forward_floor(model, ids)}
elif side == "kick":
    from kick_models.config import build_config
    config = build_config({**spec, "nsamples": ids.shape[0], "seqlen": ids.shape[1]})
    timing = compress_with_phases(model, config, ids if config.needs_calibration else None)
else:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    args = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=spec["group_size"])
    groups = {"g": QuantizationScheme(targets=["Linear"], weights=args)}
    if spec["peer"] == "awq":
        # pinning is a host-to-accelerator transfer aid; on a CPU-only machine it raises instead
        from llmcompressor.pipelines.cache import IntermediatesCache
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
        recipe = AWQModifier(config_groups=groups, ignore=["lm_head"])
    else:
        recipe = QuantizationModifier(config_groups=groups, ignore=["lm_head"])
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


def _run(python: str, side: str, spec: dict, paths, eval_seqlen: int, workdir) -> dict:
    return run_worker(python, worker_source(WORKER), [side, json.dumps(spec), *paths, eval_seqlen], workdir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llmcompressor-python", help="interpreter of a virtualenv with llmcompressor")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--only", nargs="*", help="substrings of run labels to keep, e.g. awq dsnot")
    parser.add_argument("--json", help="write all results here")
    args = parser.parse_args(argv)

    model_path, tokenizer, ids, info, held = calibration_and_heldout(
        {"method": "rtn", "nsamples": args.nsamples, "seqlen": args.seqlen}, args.eval_tokens)
    plan = [r for r in QUANT + PRUNE if not args.only or any(o in r[1] for o in args.only)]
    plan = [r for r in plan if r[0] == "kick" or args.llmcompressor_python]
    results = []
    with tempfile.TemporaryDirectory(prefix="kick-bench-") as workdir:
        paths = (model_path, Path(workdir) / "ids.pt", Path(workdir) / "held.pt")
        torch.save(ids, paths[1])
        torch.save(held, paths[2])
        results.append({"side": "dense", "label": "dense", **_run(sys.executable, "dense", {}, paths, args.eval_seqlen, workdir)})
        for side, label, spec in plan:
            python = sys.executable if side == "kick" else args.llmcompressor_python
            results.append({"side": side, "label": label, **_run(python, side, spec, paths, args.eval_seqlen, workdir)})
            _table(results, info)
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration": info, "results": results}, indent=2))
    return 0


def _table(results: list[dict], info: dict) -> None:
    """Ratios are against kick's reference in the same row family: GPTQ for quantizers (and the
    peer for the same label), Wanda for the pruners at the same sparsity; "fwd" is the share of
    kick's CPU time spent inside decoder-block forwards (statistics hooks included)."""
    print_floor_header(results, info)
    print(f"{'run':<24} {'side':<15} {'zeros':>6} {'CPU s':>7} {'wall s':>7} {'load':>9} {'ppl':>9} {'RSS MiB':>8} "
          f"{'fwd':>5} {'ppl/ref':>8} {'CPU/ref':>7} {'wall/ref':>8} {'ref':<22}")
    ok = {(r["side"], r["label"]): r for r in results if "error" not in r}
    for r in results:
        if "error" in r:
            print(f"{r['label']:<24} {r['side']:<15} ERROR {r['error']}")
            continue
        ref_label = _reference(r["label"])
        ref_side = "llm-compressor" if r["side"] == "kick" and ("kick", r["label"]) in ok and (
            "llm-compressor", r["label"]) in ok else "kick"
        ref = ok.get((ref_side, r["label"] if ref_side == "llm-compressor" else ref_label))
        ref = ref if ref is not r else None
        ppl_ratio = f"{r['ppl'] / ref['ppl']:.3f}" if ref else ""
        shown = f"{ref_side}:{r['label'] if ref_side == 'llm-compressor' else ref_label}" if ref else ""
        share = f"{r['forward_cpu_s'] / r['cpu_s']:.2f}" if r.get("forward_cpu_s") else ""
        print(f"{r['label']:<24} {r['side']:<15} {r['sparsity']:>6.3f} {r['cpu_s']:>7.1f} {r['wall_s']:>7.1f} "
              f"{load_text(r):>9} {r['ppl']:>9.2f} {r['rss_mib']:>8.0f} {share:>5} {ppl_ratio:>8} "
              f"{ratio(r, ref, 'cpu_s'):>7} {ratio(r, ref, 'wall_s'):>8} {shown:<22}")
    sys.stdout.flush()


def _reference(label: str) -> str:
    if label == "dense":
        return "dense"
    if " W4" in label:
        return f"gptq W4 {label.split()[-1]}"
    return f"wanda {label.split()[-1]}"


if __name__ == "__main__":
    sys.exit(main())
