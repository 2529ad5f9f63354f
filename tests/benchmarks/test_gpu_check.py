"""benchmarks/gpu_check.py rehearsed on the CPU (``--device cpu --tiny``): every part runs through the same code
the GPU run will, and the JSON and Markdown summaries carry every measurement."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # loads the embedded model and runs lm-eval end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_tiny_cpu_rehearsal_fills_every_part(tmp_path, subprocess_env, smol_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=subprocess_env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    compression = results["compression tiny"]
    assert compression["floor_s"] > 0
    for method in ("wanda 50%", "sparsegpt 2:4", "gptq w4 g128"):
        row = compression[method]
        assert 0 < row["forward_share"] < 1 and row["total_s"] >= row["forward_s"] and row["peak_gib"] > 0
    assert compression["wanda 50%"]["achieved_sparsity"] > 0.3  # the loop really pruned
    assert all(v["ok"] for k, v in results["agreement"].items() if isinstance(v, dict) and "ok" in v)
    e2e = results["end_to_end"]
    assert e2e["dense"]["kl_mean"] == 0 and e2e["wanda 50%"]["kl_mean"] > 0
    assert set(e2e["dense"]["scores"]) >= {"exact_match", "f1"}
    generation = results["generation"]
    assert generation["requests"] == 2 and generation["differ"] == 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.strip() == proc.stdout.strip() and table.count("| tiny |") == 4 and "answers differ" in table
