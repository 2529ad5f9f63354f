"""Benchmark kick's GPTQ against gptqmodel and llm-compressor on the embedded SmolLM2-135M:
same calibration token ids, same held-out text, wall and CPU time and perplexity, one table.

Every run is its own process (single-threaded, offline). The peers run in their own virtual
environments (their pins clash with kick's), given on the command line; a peer whose interpreter is
not given is skipped. Each run records the wall and CPU seconds (user + sys) of its quantization and
the load average meanwhile; on a shared machine compare CPU seconds. Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_gptq.py \\
        --gptqmodel-python <venv>/bin/python --llmcompressor-python <venv>/bin/python

gptqmodel warms up on its first quantization, so its plain run quantizes twice in one process and both
calls are reported (first, warm; the ratio is against the warm call); its run with its default
group-aware column order (compared with kick's ``act_order``) quantizes once, a first call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from peer import calibration_and_heldout, load_text, ratio, run_worker, worker_source  # beside this script

# argv: kind spec model ids.pt held.pt eval_seqlen; spec = {"bits", "group", "act", "seq", "runs"}
WORKER = r'''
import json, os, sys, torch
torch.set_num_threads(1)
kind, spec, model_path, ids_path, held_path, eval_seqlen = sys.argv[1:7]
spec, eval_seqlen = json.loads(spec), int(eval_seqlen)
ids, held = torch.load(ids_path), torch.load(held_path)
bits, group = spec.get("bits", 4), spec.get("group", 128)

def load():
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

runs = []
if kind in ("dense", "kick"):  # kick's side also reports the time inside block forwards, the dense run the floor
    sys.path.insert(0, os.environ["KICK_BENCHMARKS_DIR"])
    from peer import compress_with_phases, two_forward_floor
    lm = load()
if kind == "dense":
    floor = two_forward_floor(lm, ids)
elif kind == "kick":
    from kick_models.config import build_config
    config = build_config({"method": "gptq", "wbits": bits, "group_size": group, "act_order": spec["act"],
                           "true_sequential": spec["seq"], "nsamples": ids.shape[0], "seqlen": ids.shape[1]})
    runs.append(compress_with_phases(lm, config, ids))
elif kind == "gptqmodel":
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.utils.backend import BACKEND
    calib = [{"input_ids": row.tolist(), "attention_mask": [1] * row.numel()} for row in ids]
    for _ in range(spec["runs"]):
        # a fresh config per load: loading records the device in it, and a second load then refuses it;
        # act_group_aware (its default): columns in decreasing Hessian-diagonal order inside each group
        cfg = QuantizeConfig(bits=bits, group_size=group, sym=False, desc_act=False, damp_percent=0.01,
                             act_group_aware=spec["act"])
        model = GPTQModel.load(model_path, cfg, device="cpu")
        with Span() as span:
            model.quantize(calib, batch_size=1, calibration_sort=None)
        runs.append(span.record())
    model.save("quantized")  # evaluate what a user loads back (packed GPTQ checkpoint)
    # the pure-torch kernel: the CPU int4 kernel rejects in_features 576 with 128-wide groups
    lm = GPTQModel.load("quantized", device="cpu", backend=BACKEND.TORCH).model
else:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    lm = load()
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=False, strategy="group", group_size=group)
    recipe = GPTQModifier(config_groups={"g": QuantizationScheme(targets=["Linear"], weights=args)},
                          ignore=["lm_head"], block_size=128, dampening_frac=0.01, actorder=None)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    with Span() as span:  # oneshot's whole call: its data preparation and its calibration loop
        oneshot(model=lm, dataset=data, recipe=recipe, num_calibration_samples=ids.shape[0],
                max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    runs.append(span.record())
lm.eval()
try:
    ppl = perplexity(lm, held, eval_seqlen)
except Exception as exc:  # report the timing even when the quantized model cannot run here
    ppl = None
    print(f"evaluation failed: {exc!r}", file=sys.stderr)
print("RESULT " + json.dumps({"runs": runs, "ppl": ppl, **({"floor": floor} if kind == "dense" else {})}), flush=True)
'''


def _kick_specs(text: str, parser) -> list[tuple[str, dict]]:
    """--kick bits:group[:act][:seq],... as (label, spec) pairs."""
    specs = []
    for item in filter(None, text.split(",")):
        bits, group, *flags = item.split(":")
        unknown = set(flags) - {"act", "seq"}
        if unknown:
            parser.error(f"--kick {item!r}: unknown flag(s) {sorted(unknown)}; accepted: act, seq")
        specs.append((" ".join([f"kick W{bits} g{group}", *flags]),
                      {"bits": int(bits), "group": int(group), "act": "act" in flags, "seq": "seq" in flags, "runs": 1}))
    return specs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--gptqmodel-python", help="interpreter of a virtualenv with gptqmodel")
    parser.add_argument("--llmcompressor-python", help="interpreter of a virtualenv with llmcompressor")
    parser.add_argument("--kick", default="4:128,4:128:act,4:128:seq,4:64,8:128,8:64",
                        help="kick runs as bits:group[:act][:seq] (act_order, true_sequential), comma separated")
    parser.add_argument("--llmcompressor-bits", default="4,8", help="llm-compressor runs (g64) at these bit widths")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    model_path, tokenizer, ids, info, held = calibration_and_heldout(
        {"method": "gptq", "nsamples": args.nsamples, "seqlen": args.seqlen}, args.eval_tokens)
    plan = [(sys.executable, "dense", "dense", {}), *((sys.executable, "kick", label, spec)
                                                      for label, spec in _kick_specs(args.kick, parser))]
    # each peer run is compared with the kick run of the same bits, group size and column order ("vs")
    if args.gptqmodel_python:
        plan += [(args.gptqmodel_python, "gptqmodel", f"gptqmodel W4 g128{' act' * act}",
                  {"bits": 4, "group": 128, "act": act, "runs": 1 + (not act), "vs": f"kick W4 g128{' act' * act}"})
                 for act in (False, True)]
    if args.llmcompressor_python:
        plan += [(args.llmcompressor_python, "llmcompressor", f"llmcompressor W{b} g64",
                  {"bits": int(b), "group": 64, "vs": f"kick W{b} g64"}) for b in args.llmcompressor_bits.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kick-bench-") as workdir:
        paths = (model_path, Path(workdir) / "ids.pt", Path(workdir) / "held.pt")
        torch.save(ids, paths[1])
        torch.save(held, paths[2])
        for python, kind, label, spec in plan:
            result = run_worker(python, worker_source(WORKER), [kind, json.dumps(spec), *paths, args.eval_seqlen],
                                workdir, env={"GPTQMODEL_CPU_WORKERS": "2"})  # its model-loader pool needs 2 (7.7)
            rows.append({"label": label, "vs": spec.get("vs"), **result})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    _table(rows, info, held.numel(), args.eval_seqlen)
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration": info, "rows": rows}, indent=2))
    return 0


def _table(rows: list[dict], info: dict, held_tokens: int, eval_seqlen: int) -> None:
    """A peer is compared on its warm (last) call with the kick run named in its "vs"; "fwd" is the
    share of kick's CPU time inside decoder-block forwards (statistics hooks included)."""
    print(f"calibration: {info['dataset']} {info['nsamples']} x {info['seqlen']} (sha256 {info['token_sha256'][:12]}); "
          f"held-out: {held_tokens} tokens in {eval_seqlen}-token windows; torch threads 1")
    ok = [r for r in rows if "error" not in r]
    dense = next((r for r in ok if r["label"] == "dense"), None)
    if dense:
        floor = dense["floor"]
        print(f"two-forward floor: {floor['cpu_s']:.1f} CPU s, {floor['wall_s']:.1f} wall s (load {load_text(floor)})")
    print(f"{'run':<24} {'CPU s':>7} {'wall s':>7} {'load':>9} {'first CPU s':>11} {'ppl':>9} {'ppl/dense':>9} {'fwd':>5} "
          f"{'kick/peer CPU':>13} {'kick/peer wall':>14}")
    ours = {r["label"]: r["runs"][0] for r in ok if r["runs"]}
    for r in rows:
        if "error" in r:
            print(f"{r['label']:<24} failed: {' | '.join(r['error'])}")
            continue
        ppl = f"{r['ppl']:9.3f} {r['ppl'] / dense['ppl']:9.4f}" if r["ppl"] is not None and dense else f"{'n/a':>9} {'':>9}"
        if not r["runs"]:
            print(f"{r['label']:<24} {'':>7} {'':>7} {'':>9} {'':>11} {ppl}")
            continue
        warm, first = r["runs"][-1], r["runs"][0]
        kick = ours.get(r["vs"]) if r["vs"] else None
        share = f"{warm['forward_cpu_s'] / warm['cpu_s']:.2f}" if warm.get("forward_cpu_s") else ""
        first_text = f"{first['cpu_s']:11.1f}" if len(r["runs"]) > 1 else f"{'':>11}"
        print(f"{r['label']:<24} {warm['cpu_s']:7.1f} {warm['wall_s']:7.1f} {load_text(warm):>9} {first_text} {ppl} "
              f"{share:>5} {ratio(kick, warm, 'cpu_s') if kick else '':>13} {ratio(kick, warm, 'wall_s') if kick else '':>14}")


if __name__ == "__main__":
    raise SystemExit(main())
