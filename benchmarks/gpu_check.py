"""One offline command for the first minutes kick gets on a GPU: compression of 1B- and 8B-shaped models,
CPU/GPU agreement, kick-hf end to end, and generation throughput, written as a small JSON + Markdown summary.

Parts (each one a function below; a failing part is recorded and the others still run):
  compression  a randomly initialised Llama-3 shape (1B, then 8B), bf16, 128 × 2048 random calibration tokens:
               Wanda 50%, SparseGPT 2:4 and GPTQ W4 g128 through kick's own loop (``compress_model``): seconds
               in total and per block, peak device memory, the share of time inside block forwards (which
               includes the statistics hooks) vs the rest (the method's algebra), and the floor of layer-wise
               calibration measured on the same model: two plain forward passes over the calibration tokens;
  agreement    a tiny random Llama compressed on the CPU and on the device: identical masks for magnitude and
               Wanda; SparseGPT and GPTQ weights within the tolerances in AGREEMENT_TOL;
  end_to_end   kick-hf on the embedded SmolLM2 (dense, Wanda 50%) on kick_icrqa_mini_open, with fidelity;
  generation   the same requests answered by lm-eval's batches and by continuous batching: tokens/s, and how
               many greedy answers differ.

    python benchmarks/gpu_check.py --out gpu_check_out                 # the GPU run (≤ 8 min on one 80 GB GPU)
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc   # the same code paths, tiny, on a CPU

``--budget-s`` stops starting new parts once that many seconds have passed (what finished is kept).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_generation, beside this script
from bench_generation import compare, task_requests  # noqa: E402

# Llama-3 shapes (random weights: timings and memory depend on the shape only).
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
}
METHODS = {
    "wanda 50%": {"method": "wanda", "sparsity": 0.5},
    "sparsegpt 2:4": {"method": "sparsegpt", "pattern": "2:4"},
    "gptq w4 g128": {"method": "gptq", "wbits": 4, "group_size": 128},
}
# CPU vs device on the tiny model: masks of the two score-only methods must match exactly; SparseGPT's and
# GPTQ's column sweeps carry rounding differences forward, so their weights are compared within these bounds.
AGREEMENT_TOL = {"mask_agreement_min": 0.995, "relative_frobenius_max": 1e-2}
TASK = "kick_icrqa_mini_open"


# ----------------------------------------------------------------------------------------- device helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak device memory since the last reset; on a CPU the process's peak RSS so far."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def random_llama(shape: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, tie_word_embeddings=False)
    with torch.device(device):
        return LlamaForCausalLM._from_config(config, dtype=dtype).eval()


def calibration(shape: str, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, SHAPES[shape]["vocab_size"], (nsamples, seqlen), generator=generator)


# ----------------------------------------------------------------------------------------- compression
class BlockClock:
    """Times every call of each decoder block's forward (statistics hooks run inside it) and when each block
    was first entered, so a block's span is first entry to the next block's first entry."""

    def __init__(self, blocks: nn.ModuleList, device: torch.device, clock=time.perf_counter):
        self.blocks, self.device, self.clock = blocks, device, clock  # time.process_time: CPU seconds
        self.forward_s = [0.0] * len(blocks)
        self.first = [math.nan] * len(blocks)

    def __enter__(self) -> "BlockClock":
        self.saved = [block.__dict__.get("forward") for block in self.blocks]  # accelerate keeps its wrapper there
        for index, block in enumerate(self.blocks):
            block.forward = self._timed(index, block.forward)
        return self

    def __exit__(self, *exc) -> None:
        for block, forward in zip(self.blocks, self.saved, strict=True):
            if forward is None:
                del block.forward
            else:
                block.forward = forward

    def _timed(self, index: int, forward):
        def timed(*args, **kwargs):
            sync(self.device)
            start = self.clock()
            if math.isnan(self.first[index]):
                self.first[index] = start
            try:
                return forward(*args, **kwargs)
            finally:  # the loop stops partial passes by raising out of a block
                sync(self.device)
                self.forward_s[index] += self.clock() - start

        return timed

    def spans(self, end: float) -> list[float]:
        edges = [*self.first, end]
        return [edges[i + 1] - edges[i] for i in range(len(self.first))]


def two_forward_floor(model: nn.Module, ids: torch.Tensor, device: torch.device, batch: int) -> float:
    """Seconds of two plain passes of the decoder (no lm_head) over the calibration tokens: what any
    layer-wise method that propagates compressed outputs must at least spend."""
    decoder = model.get_decoder()
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(2):
            for chunk in ids.split(batch):
                decoder(chunk.to(device), use_cache=False)
    sync(device)
    return time.perf_counter() - start


def compress_timed(model: nn.Module, ids: torch.Tensor, args: dict, device: torch.device) -> dict[str, Any]:
    """One method through kick's loop, with per-block spans and forward time."""
    from kick_models.compression import compress_model
    from kick_models.compression.blocks import find_decoder_blocks
    from kick_models.config import build_config

    config = build_config({**args, "nsamples": ids.shape[0], "seqlen": ids.shape[1]})
    reset_peak(device)
    with BlockClock(find_decoder_blocks(model), device) as clock:
        sync(device)
        start = time.perf_counter()
        summary = compress_model(model, config, ids, device=device)
        sync(device)
        end = time.perf_counter()
    spans = clock.spans(end)
    forward = sum(clock.forward_s)
    total = end - start
    return {"total_s": round(total, 2), "per_block_s": round(total / len(spans), 3), "max_block_s": round(max(spans), 3),
            "forward_s": round(forward, 2), "algebra_s": round(total - forward, 2),
            "forward_share": round(forward / total, 3), "peak_gib": peak_memory_gib(device),
            "achieved_sparsity": round(summary.get("achieved_sparsity", float("nan")), 4)}


def part_compression(shape: str, device: torch.device, nsamples: int, seqlen: int) -> dict[str, Any]:
    """All METHODS on one random model of ``shape`` (the same weights are compressed again by the next
    method: timings depend on shapes, not values), against the floor measured first."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    model = random_llama(shape, dtype, device)
    ids = calibration(shape, nsamples, seqlen)
    out: dict[str, Any] = {"shape": shape, "dtype": str(dtype).removeprefix("torch."), "calibration": [nsamples, seqlen],
                           "init_s": round(time.perf_counter() - start, 1)}
    out["floor_s"] = round(two_forward_floor(model, ids, device, batch=max(1, 4096 // seqlen)), 2)
    for label, args in METHODS.items():
        row = compress_timed(model, ids, args, device)
        row["vs_floor"] = round(row["total_s"] / out["floor_s"], 2)
        out[label] = row
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------- agreement
def compressed_weights(args: dict, device: torch.device, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    from kick_models.compression import compress_model
    from kick_models.config import build_config

    model = random_llama("tiny", torch.float32, device)
    compress_model(model, build_config({**args, "nsamples": ids.shape[0], "seqlen": ids.shape[1]}), ids, device=device)
    return {n: m.weight.detach().cpu() for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n}


def agreement(cpu: dict[str, torch.Tensor], dev: dict[str, torch.Tensor]) -> dict[str, float]:
    masks = [((a == 0) == (b == 0)).float().mean().item() for a, b in zip(cpu.values(), dev.values(), strict=True)]
    rel = [((a - b).norm() / a.norm()).item() for a, b in zip(cpu.values(), dev.values(), strict=True)]
    return {"mask_agreement": round(min(masks), 6), "relative_frobenius": float(f"{max(rel):.3g}")}


def part_agreement(device: torch.device) -> dict[str, Any]:
    ids = calibration("tiny", 16, 128)
    out: dict[str, Any] = {"devices": f"cpu vs {device}", "tolerance": AGREEMENT_TOL}
    cases = {"magnitude 50%": {"method": "magnitude", "sparsity": 0.5}, **METHODS}
    for label, args in cases.items():
        row = agreement(compressed_weights(args, torch.device("cpu"), ids), compressed_weights(args, device, ids))
        exact = args["method"] in ("magnitude", "wanda")
        row["ok"] = (row["mask_agreement"] == 1.0 if exact else
                     row["mask_agreement"] >= AGREEMENT_TOL["mask_agreement_min"]
                     and row["relative_frobenius"] <= AGREEMENT_TOL["relative_frobenius_max"])
        out[label] = row
    return out


# ----------------------------------------------------------------------------------------- kick-hf end to end
def kick_hf(device: torch.device, tiny: bool, fidelity: bool = True, **compression) -> Any:
    from kick_models.lm import KickHFLM

    calib = {"nsamples": 8, "seqlen": 256} if tiny and compression else {}
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    return KickHFLM(device=str(device), dtype=dtype, batch_size=2 if tiny else 16, no_cache="true",
                    fidelity=str(fidelity).lower(), continuous_batching="false", **compression, **calib)


def evaluate(lm: Any, limit: int | None) -> dict[str, Any]:
    import lm_eval

    from kick_models.registration import task_manager

    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], limit=limit, task_manager=task_manager())
    scores = {k.split(",")[0]: round(v, 4) for k, v in out["results"][TASK].items()
              if isinstance(v, float) and "stderr" not in k}
    fidelity = lm._kick_summary.get("fidelity") or {}
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in fidelity.items()}
    return {"eval_s": round(time.perf_counter() - start, 1), "scores": scores,
            "kl_mean": rounded.get("kl_mean"), "top1_agreement": rounded.get("top1_agreement"),
            "ppl": [rounded.get("ppl_dense"), rounded.get("ppl_compressed")],
            "compress_s": lm._kick_summary.get("seconds")}


def part_end_to_end(device: torch.device, tiny: bool, limit: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"task": TASK, "limit": limit}
    for label, compression in (("dense", {}), ("wanda 50%", {"method": "wanda", "sparsity": "0.5"})):
        start = time.perf_counter()
        lm = kick_hf(device, tiny, **compression)
        row = {"load_s": round(time.perf_counter() - start, 1), **evaluate(lm, limit)}
        out[label] = row
        del lm
    return out


def part_generation(device: torch.device, tiny: bool, limit: int | None, max_gen_toks: int | None) -> dict[str, Any]:
    lm = kick_hf(device, tiny, fidelity=False)
    requests = task_requests([TASK], limit, max_gen_toks)
    return {"task": TASK, "max_gen_toks": max_gen_toks or "task's", **compare(lm, requests)}


# ----------------------------------------------------------------------------------------- summary
def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"## gpu_check — {env['device_name']} ({env['date']})", "",
             f"torch {env['torch']}, transformers {env['transformers']}, CUDA {env['cuda']}; "
             f"total {results['total_s']} s", ""]
    lines += ["| shape | method | total s | s/block | max block s | forward share | vs 2-forward floor | peak GiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for part in (v for k, v in results.items() if k.startswith("compression ") and "error" not in v):
        lines.append(f"| {part['shape']} | 2-forward floor | {part['floor_s']} | | | | 1.0 | |")
        for label in METHODS:
            r = part.get(label, {})
            lines.append(f"| {part['shape']} | {label} | {r.get('total_s')} | {r.get('per_block_s')} | "
                         f"{r.get('max_block_s')} | {r.get('forward_share')} | {r.get('vs_floor')} | {r.get('peak_gib')} |")
    agree = results.get("agreement", {})
    lines += ["", f"Agreement ({agree.get('devices')}): "
              + "; ".join(f"{k} mask {v['mask_agreement']} rel {v['relative_frobenius']} {'ok' if v['ok'] else 'FAIL'}"
                          for k, v in agree.items() if isinstance(v, dict) and "ok" in v)]
    e2e = results.get("end_to_end", {})
    for label in ("dense", "wanda 50%"):
        if label in e2e:
            r = e2e[label]
            lines.append(f"kick-hf {label}: {r['scores']} KL {r['kl_mean']} top-1 {r['top1_agreement']} "
                         f"(load {r['load_s']} s, eval {r['eval_s']} s)")
    gen = results.get("generation", {})
    if "lm_eval_tok_s" in gen:
        lines.append(f"generation ({gen['requests']} requests): lm-eval {gen['lm_eval_tok_s']} tok/s, continuous "
                     f"{gen['continuous_tok_s']} tok/s (wall ratio {gen['wall_ratio']}), {gen['differ']} answers differ")
    lines += [f"{k}: {v['error']}" for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return "\n".join(lines) + "\n"


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run_parts(parts: list[tuple[str, Any]], out_dir: Path, results: dict[str, Any], budget_s: float) -> None:
    """Run each part, writing the summary after each, so an interrupted run still brings back what finished."""
    start = time.perf_counter()
    for name, part in parts:
        if time.perf_counter() - start > budget_s:
            results[name] = {"error": f"skipped: the {budget_s:.0f} s budget was spent"}
            continue
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = part()
        except Exception as err:  # a part's failure is a result: record it and go on
            results[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
        results["total_s"] = round(time.perf_counter() - start, 1)
        (out_dir / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
        (out_dir / "gpu_check.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and few requests (a CPU rehearsal)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--shapes", default=None, help="comma list of 1b,8b (default: both; tiny with --tiny)")
    parser.add_argument("--budget-s", type=float, default=460.0, help="start no new part after this many seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    shapes = (args.shapes or ("tiny" if args.tiny else "1b,8b")).split(",")
    nsamples, seqlen = (8, 128) if args.tiny else (128, 2048)
    limit = 2 if args.tiny else None
    parts = [(f"compression {s}", lambda s=s: part_compression(s, device, nsamples, seqlen)) for s in shapes]
    parts += [("agreement", lambda: part_agreement(device)),
              ("end_to_end", lambda: part_end_to_end(device, args.tiny, limit)),
              ("generation", lambda: part_generation(device, args.tiny, limit, 8 if args.tiny else None))]
    results: dict[str, Any] = {"environment": environment(device), "tiny": args.tiny}
    run_parts(parts, args.out, results, args.budget_s)
    print(markdown(results))
    disagree = [k for k, v in results.get("agreement", {}).items() if isinstance(v, dict) and v.get("ok") is False]
    return 1 if disagree or any(isinstance(v, dict) and "error" in v for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
