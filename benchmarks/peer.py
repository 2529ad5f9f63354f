"""Shared by the benchmarks that compare kick with a peer library: each run is one fresh worker
process (single-threaded, offline) that prints one ``RESULT {json}`` line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Sequence


def run_worker(python: str, source: str, args: Sequence[str], workdir) -> dict:
    """Run ``source`` as a script under ``python`` in ``workdir``; its RESULT line, or the error's last lines."""
    script = Path(workdir) / "worker.py"
    script.write_text(source)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([python, str(script), *map(str, args)], capture_output=True, text=True, env=env, cwd=workdir)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:]}


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
