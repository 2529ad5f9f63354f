"""The example plug-in under examples/ pip-installed, then run through stock `lm_eval --model kick-hf`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kick-channel-prune"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """Environment whose Python sees the installed plug-in (its entry point included)."""
    site = tmp_path_factory.mktemp("plugin") / "site"
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(EXAMPLE)]
    # the environment's own setuptools first (no download); an isolated build where it is too old to build a wheel
    for extra in (["--no-build-isolation"], []):
        proc = subprocess.run(base + extra, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)})
    return env


def _lm_eval(model_args, env, out_dir):
    cmd = ["lm_eval", "--model", "kick-hf", "--model_args", model_args, "--tasks", "kick_freebase",
           "--limit", "2", "--output_path", str(out_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)


def test_installed_plugin_runs_end_to_end_through_stock_lm_eval(plugin_env, tmp_path):
    proc = _lm_eval("method=channel,sparsity=0.25,channel_power=0.5,nsamples=4,seqlen=64", plugin_env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = tmp_path.rglob("results_*.json")
    kick = json.loads(results.read_text())["config"]["kick"]
    assert kick["compression"]["method"] == "channel"
    assert kick["compression"]["method_args"] == {"channel_power": 0.5}
    assert kick["compression"]["method_version"] == "0.1.0"
    # whole input channels: ⌊0.25 · in⌋ columns of every Linear (576 and 1536 both divide by 4), plus
    # the few weights that are exactly zero in the dense model already
    assert 0.25 <= kick["result"]["achieved_sparsity"] < 0.2505


def test_installed_plugin_is_listed_and_checked_before_loading(plugin_env, tmp_path):
    unknown = _lm_eval("method=nope", plugin_env, tmp_path / "a")
    assert unknown.returncode != 0
    assert "method='nope'; accepted: none | magnitude" in unknown.stderr and "channel" in unknown.stderr
    refused = _lm_eval("method=channel,pattern=2:4", plugin_env, tmp_path / "b")
    assert refused.returncode != 0
    assert "pattern='2:4'; accepted: unstructured with method=channel" in refused.stderr
    assert "Loading weights" not in refused.stderr
