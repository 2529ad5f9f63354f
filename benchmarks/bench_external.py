"""Other libraries' quantizers on the embedded SmolLM2-135M: KL to dense, top-1 agreement, perplexities, seconds and
peak memory, and what the dense reference of a separately loaded parent costs (cold, then cached).

Each setting runs in its own process (so its peak resident memory is its own), single-threaded, with a fresh
fidelity cache for the run: the first setting that needs the dense reference computes it, the others read it.

    OMP_NUM_THREADS=1 python benchmarks/bench_external.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = [  # bnb8 first: it loads the dense model separately for the reference, which the next run reads cached
    ("bnb8 (cold reference)", {"method": "bnb8"}),
    ("bnb8 (cached reference)", {"method": "bnb8"}),
    ("dense", {}),
    ("bnb4 nf4", {"method": "bnb4", "quant_type": "nf4"}),
    ("torchao int8", {"method": "torchao", "wbits": 8}),
    ("torchao intx int4 g64", {"method": "torchao", "wbits": 4, "group_size": 64}),
    ("hqq 8 g64", {"method": "hqq", "wbits": 8, "group_size": 64}),
    ("hqq 4 g64", {"method": "hqq", "wbits": 4, "group_size": 64}),
    ("quanto qint8", {"method": "quanto", "wbits": 8}),
    ("quanto qint4", {"method": "quanto", "wbits": 4}),
    # pre-compressed checkpoints of the embedded model, written by the libraries' own writers (kick_testlib)
    ("compressed-tensors W4 g64 sym", {"pretrained": "{ct}", "parent": "embedded"}),
    ("GGUF Q8_0", {"pretrained": "{gguf}", "gguf_file": "smol-Q8_0.gguf", "parent": "embedded"}),
    ("GGUF Q4_0", {"pretrained": "{gguf}", "gguf_file": "smol-Q4_0.gguf", "parent": "embedded"}),
]

CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from kick_models.lm import KickHFLM
start, cpu = time.perf_counter(), time.process_time()
lm = KickHFLM(device="cpu", batch_size=1, **json.loads(sys.argv[1]))
info = lm.get_model_info()["kick"]
fid = info["result"].get("fidelity") or {}
print("RESULT " + json.dumps({"kl": fid.get("kl_mean"), "top1": fid.get("top1_agreement"), "ppl_dense": fid.get("ppl_dense"),
      "ppl": fid.get("ppl_compressed"), "tokens": fid.get("tokens"), "reference": fid.get("reference"),
      "measured": (info.get("source") or {}).get("measured"), "version": (info.get("source") or {}).get("version"),
      "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def checkpoints(folder: Path, labels: list[str]) -> dict[str, str]:
    """Write the checkpoints the chosen settings evaluate: {"ct": folder, "gguf": folder}."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from kick_models.embedded import embedded_gguf_path, embedded_model_path
    from kick_testlib.ct_files import write_compressed_tensors
    from kick_testlib.gguf_files import requantize_gguf

    out = {"ct": str(folder / "ct"), "gguf": str(folder / "gguf")}
    if any(label.startswith("compressed-tensors") for label in labels):
        write_compressed_tensors(embedded_model_path(), folder / "ct", bits=4, group_size=64)
    (folder / "gguf").mkdir()
    for qtype in ("Q8_0", "Q4_0"):
        if f"GGUF {qtype}" in labels:
            requantize_gguf(embedded_gguf_path(), folder / "gguf" / f"smol-{qtype}.gguf", qtype)
    return out


def run(args: dict, cache: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**args, "cache_dir": cache})],
                          capture_output=True, text=True, env=env, check=True)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = parser.parse_args()
    print("| setting | library version | KL (nats/token) | top-1 agreement | perplexity | bits measured "
          "| reference (s, cached?) | wall (s) | CPU (s) | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    chosen = [(label, setting) for label, setting in SETTINGS if not args.only or label in args.only]
    with tempfile.TemporaryDirectory(prefix="kick-bench-external-") as cache:
        paths = checkpoints(Path(cache), [label for label, _ in chosen])
        for label, setting in chosen:
            r = run({k: str(v).format(**paths) if isinstance(v, str) else v for k, v in setting.items()}, cache)
            ref = r.get("reference") or {}
            bits = (r.get("measured") or {}).get("bits_effective")
            print(f"| {label} | {r.get('version') or '—'} | {fmt(r['kl'], '.4g')} | {fmt(r['top1'], '.3f')} "
                  f"| {fmt(r['ppl_dense'], '.2f')} → {fmt(r['ppl'], '.2f')} | {bits or '—'} "
                  f"| {fmt(ref.get('seconds'), '.1f')} {'(cached)' if ref.get('cached') else ''} "
                  f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
