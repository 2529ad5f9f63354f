"""Shared by the benchmarks that compare kick with a peer library: each run is one fresh worker
process (single-threaded, offline) that prints one ``RESULT {json}`` line with the wall and CPU
seconds of its compression and the machine's load meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

BENCHMARKS = Path(__file__).resolve().parent
TESTS = BENCHMARKS.parent / "tests"


def worker_source(body: str) -> str:
    """A worker script: kick's own perplexity function and ``Span`` (torch / standard library only, so
    it runs in a peer's virtualenv without kick installed) followed by ``body``; every side measures alike."""
    parts = [TESTS / "kick_testlib" / "perplexity.py", BENCHMARKS / "span.py"]
    return "\n".join(p.read_text(encoding="utf-8") for p in parts) + "\n" + body


def run_worker(python: str, source: str, args: Sequence[str], workdir, env: dict | None = None) -> dict:
    """Run ``source`` as a script under ``python`` in ``workdir``; its RESULT line, or the error's last lines.
    A kick worker finds this folder (``compress_with_phases``) through KICK_BENCHMARKS_DIR."""
    script = Path(workdir) / "worker.py"
    script.write_text(source)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               KICK_BENCHMARKS_DIR=str(BENCHMARKS), **(env or {}))
    proc = subprocess.run([python, str(script), *map(str, args)], capture_output=True, text=True, env=env, cwd=workdir)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:]}


def compress_with_phases(model, config, ids) -> dict:
    """kick's ``compress_model`` on the CPU, with the seconds spent inside decoder-block forwards (the
    statistics hooks run inside them) apart from the rest (the method's algebra), in wall and CPU time."""
    from gpu_check import BlockClock
    from span import Span

    from kick_models.compression import compress_model
    from kick_models.compression.blocks import find_decoder_blocks

    blocks, cpu = find_decoder_blocks(model), model.device
    with BlockClock(blocks, cpu) as wall, BlockClock(blocks, cpu, clock=time.process_time) as busy, Span() as span:
        compress_model(model, config, ids)
    record = span.record()
    return {**record, "forward_wall_s": round(sum(wall.forward_s), 3), "forward_cpu_s": round(sum(busy.forward_s), 3)}


def two_forward_floor(model, ids) -> dict:
    """Wall and CPU seconds of two plain decoder passes over the calibration tokens, in kick's loop's
    batches: the least any layer-wise method that propagates compressed outputs spends."""
    from gpu_check import two_forward_floor as floor
    from span import Span

    with Span() as span:
        floor(model, ids, model.device, batch=max(1, 4096 // ids.shape[1]))
    return span.record()


def calibration_and_heldout(method_config: dict, eval_tokens: int):
    """(embedded model folder, tokenizer, calibration ids, their info, held-out token ids) with the
    same bundled calibration draw for every run of a benchmark."""
    import torch
    from transformers import AutoTokenizer

    from kick_common.bundled import heldout_text
    from kick_models.compression.calibration import calibration_ids
    from kick_models.config import build_config
    from kick_models.embedded import embedded_model_path

    model_path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids, info = calibration_ids(tokenizer, build_config({**method_config, "calib": "bundled"}), embedded_model=True,
                                max_length=None)
    held = torch.tensor(tokenizer(heldout_text())["input_ids"])[:eval_tokens]
    return model_path, tokenizer, ids, info, held


def ratio(ours: dict, peer: dict | None, key: str) -> str:
    """kick / peer for ``key`` (wall_s or cpu_s) as text, empty without a peer."""
    if not peer or not peer.get(key):
        return ""
    return f"{ours[key] / peer[key]:.2f}"


def load_text(row: dict) -> str:
    """The 1-minute load average at the start and the end of the measured span."""
    start, end = row["load"]
    return f"{start:.1f}-{end:.1f}"


def print_floor_header(results: list[dict], info: dict) -> dict | None:
    """The table's first lines: the calibration used and, from the dense run, the two-forward floor; the dense row."""
    print(f"\nSmolLM2-135M fp32, {info['nsamples']} x {info['seqlen']} bundled calibration tokens, one thread")
    dense = next((r for r in results if r["side"] == "dense" and "error" not in r), None)
    if dense:
        floor = dense["floor"]
        print(f"two-forward floor: {floor['cpu_s']:.1f} CPU s, {floor['wall_s']:.1f} wall s (load {load_text(floor)})")
    return dense
