"""Benchmark kick's GPTQ against gptqmodel and llm-compressor on the embedded SmolLM2-135M:
same calibration token ids, same held-out text, wall time and perplexity, one table.

The peers run in their own virtual environments (their pins clash with kick's), given on the
command line; a peer whose interpreter is not given is skipped. Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_gptq.py \\
        --gptqmodel-python <venv>/bin/python --llmcompressor-python <venv>/bin/python

gptqmodel JIT-compiles an extension on its first quantization, so it is run twice in one process
and both calls are reported (first, warm).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # kick_testlib: test helpers, not in the wheel

# Runs inside a peer's virtualenv: no kick imports. argv: kind model ids.pt heldout.pt bits group runs
PEER_SCRIPT = r'''
import json, math, sys, time, torch
torch.set_num_threads(1)
kind, model_path, ids_path, held_path, bits, group, runs = sys.argv[1:8]
bits, group, runs = int(bits), int(group), int(runs)
ids, held = torch.load(ids_path), torch.load(held_path)
seqlen = int(sys.argv[8])

times = []
for _ in range(runs):
    start = time.perf_counter()
    if kind == "gptqmodel":
        from gptqmodel import GPTQModel, QuantizeConfig
        cfg = QuantizeConfig(bits=bits, group_size=group, sym=False, desc_act=False, damp_percent=0.01)
        model = GPTQModel.load(model_path, cfg, device="cpu")
        calib = [{"input_ids": row.tolist(), "attention_mask": [1] * row.numel()} for row in ids]
        model.quantize(calib, batch_size=1, calibration_sort=None)
        seconds = time.perf_counter() - start
        model.save("quantized")  # evaluate what a user loads back (packed GPTQ checkpoint)
        from gptqmodel.utils.backend import BACKEND
        # the pure-torch kernel: the CPU int4 kernel rejects in_features 576 with 128-wide groups
        lm = GPTQModel.load("quantized", device="cpu", backend=BACKEND.TORCH).model
    else:
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
        from transformers import AutoModelForCausalLM
        lm = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=False, strategy="group", group_size=group)
        recipe = GPTQModifier(config_groups={"g": QuantizationScheme(targets=["Linear"], weights=args)},
                              ignore=["lm_head"], block_size=128, dampening_frac=0.01, actorder=None)
        data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
        oneshot(model=lm, dataset=data, recipe=recipe, num_calibration_samples=ids.shape[0],
                max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
        seconds = time.perf_counter() - start
    times.append(seconds)
lm.eval()
try:
    ppl = perplexity(lm, held, seqlen)
except Exception as exc:  # report the timing even when the quantized model cannot run here
    ppl = None
    print(f"evaluation failed: {exc!r}", file=sys.stderr)
print("RESULT " + json.dumps({"times": times, "ppl": ppl}), flush=True)
'''

def _worker_source(body: str) -> str:
    """The peer's script: kick's own perplexity function (torch-only, so it runs in the peer's
    virtualenv without kick installed) followed by ``body``; both sides measure alike."""
    from kick_testlib import perplexity as module

    return Path(module.__file__).read_text(encoding="utf-8") + "\n" + body



def _ours(model, tokenizer, ids, held, eval_seqlen, bits, group, true_sequential=False, act_order=False):
    from kick_models.compression import compress_model
    from kick_models.config import build_config
    from kick_testlib.perplexity import perplexity

    config = build_config({"method": "gptq", "wbits": bits, "group_size": group, "true_sequential": true_sequential,
                           "act_order": act_order, "nsamples": ids.shape[0], "seqlen": ids.shape[1]})
    work = copy.deepcopy(model)
    start = time.perf_counter()
    compress_model(work, config, ids)
    seconds = time.perf_counter() - start
    return {"times": [seconds], "ppl": perplexity(work, held, eval_seqlen)}


def _peer(python, kind, model_path, ids_path, held_path, bits, group, runs, eval_seqlen, workdir):
    script = Path(workdir) / "peer.py"
    script.write_text(_worker_source(PEER_SCRIPT))
    env = dict(os.environ, OMP_NUM_THREADS="1", GPTQMODEL_CPU_WORKERS="2", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [python, str(script), kind, str(model_path), str(ids_path), str(held_path),
           str(bits), str(group), str(runs), str(eval_seqlen)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--gptqmodel-python", help="interpreter of a virtualenv with gptqmodel 7.6")
    parser.add_argument("--llmcompressor-python", help="interpreter of a virtualenv with llmcompressor")
    parser.add_argument("--kick", default="4:128,4:128:act,4:128:seq,4:64,8:128,8:64",
                        help="kick runs as bits:group[:act][:seq] (act_order, true_sequential), comma separated")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kick_common.bundled import heldout_text
    from kick_models.compression.calibration import calibration_ids
    from kick_models.config import build_config
    from kick_models.embedded import embedded_model_path
    from kick_testlib.perplexity import perplexity

    torch.set_num_threads(1)
    model_path = embedded_model_path()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    config = build_config({"method": "gptq", "calib": "bundled", "nsamples": args.nsamples, "seqlen": args.seqlen})
    ids, info = calibration_ids(tokenizer, config, embedded_model=True, max_length=None)
    held = torch.tensor(tokenizer(heldout_text())["input_ids"])[: args.eval_tokens]

    rows = [("dense", "-", {"times": [0.0], "ppl": perplexity(model, held, args.eval_seqlen)})]
    for item in filter(None, args.kick.split(",")):
        bits, group, *flags = item.split(":")
        unknown = set(flags) - {"act", "seq"}
        if unknown:
            parser.error(f"--kick {item!r}: unknown flag(s) {sorted(unknown)}; accepted: act, seq")
        result = _ours(model, tokenizer, ids, held, args.eval_seqlen, int(bits), int(group),
                       true_sequential="seq" in flags, act_order="act" in flags)
        rows.append((" ".join([f"kick W{bits} g{group}", *flags]), "", result))
        print(rows[-1], file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        ids_path, held_path = Path(tmp) / "ids.pt", Path(tmp) / "held.pt"
        torch.save(ids, ids_path)
        torch.save(held, held_path)
        peers = []
        if args.gptqmodel_python:
            peers += [(args.gptqmodel_python, "gptqmodel", 4, 128, 2)]
        if args.llmcompressor_python:
            peers += [(args.llmcompressor_python, "llmcompressor", 4, 64, 1),
                      (args.llmcompressor_python, "llmcompressor", 8, 64, 1)]
        for python, kind, bits, group, runs in peers:
            result = _peer(python, kind, model_path, ids_path, held_path, bits, group, runs, args.eval_seqlen, tmp)
            rows.append((f"{kind} W{bits} g{group}", "", result))
            print(rows[-1], file=sys.stderr, flush=True)

    dense = rows[0][2]["ppl"]
    print(f"calibration: {info['dataset']} {info['nsamples']} x {info['seqlen']} (sha256 {info['token_sha256'][:12]}); "
          f"held-out: {held.numel()} tokens in {args.eval_seqlen}-token windows; torch threads 1")
    print(f"{'run':<24} {'first s':>9} {'warm s':>9} {'ppl':>10} {'ppl/dense':>10} {'kick time ratio':>16}")
    # peers are compared with kick's plain run (no act / seq flags) at the same bits and group size
    ours = {name.split(" ", 1)[1]: r["times"][0] for name, _, r in rows
            if name.startswith("kick") and len(name.split()) == 3}
    for name, _, r in rows:
        if "error" in r:
            print(f"{name:<24} failed: {' | '.join(r['error'])}")
            continue
        first, warm = r["times"][0], r["times"][-1]
        key = name.split(" ", 1)[1] if " " in name else ""
        ratio = f"{ours[key] / warm:.2f}x" if key in ours and not name.startswith("kick") else ""
        warm_text = f"{warm:9.1f}" if len(r["times"]) > 1 else f"{'':>9}"
        ppl_text = f"{r['ppl']:10.3f} {r['ppl'] / dense:10.4f}" if r["ppl"] is not None else f"{'n/a':>10} {'':>10}"
        print(f"{name:<24} {first:9.1f} {warm_text} {ppl_text} {ratio:>16}")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
