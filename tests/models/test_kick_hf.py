"""kick-hf end to end on the embedded SmolLM2: stock lm_eval CLI, Python API, exact sparsity."""

import json
import subprocess

import pytest
import torch

pytestmark = pytest.mark.slow


def _run_lm_eval(args, env, out_dir):
    cmd = ["lm_eval", *args, "--tasks", "kick_freebase", "--limit", "3", "--log_samples", "--output_path", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = out_dir.rglob("results_*.json")
    (samples,) = out_dir.rglob("samples_kick_freebase_*.jsonl")
    responses = [json.loads(line)["resps"] for line in samples.read_text().splitlines()]
    return json.loads(results.read_text()), responses, proc.stdout


def _first_line(text):
    """The scored part of a reply: its first non-empty line."""
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def test_stock_cli_kick_hf_and_hf(tmp_path, subprocess_env, smol_path):
    """`lm_eval --model kick-hf` compresses and records it; `--model hf` is unchanged by the package."""
    pruned, _, table = _run_lm_eval(
        ["--model", "kick-hf", "--model_args", "method=magnitude,sparsity=0.3"], subprocess_env, tmp_path / "pruned"
    )
    assert "kick_freebase" in table and "exact_match" in table
    kick = pruned["config"]["kick"]
    assert kick["model"] == "embedded:SmolLM2-135M-Instruct"
    assert kick["compression"]["method"] == "magnitude" and kick["compression"]["sparsity"] == 0.3
    assert abs(kick["result"]["achieved_sparsity"] - 0.3) <= 1e-3
    assert set(pruned["results"]["kick_freebase"]) >= {"exact_match,none", "contains,none"}

    dense_kick, kick_resps, _ = _run_lm_eval(["--model", "kick-hf"], subprocess_env, tmp_path / "kick_dense")
    stock, hf_resps, _ = _run_lm_eval(
        ["--model", "hf", "--model_args", f"pretrained={smol_path}"], subprocess_env, tmp_path / "hf"
    )
    assert "kick" not in stock["config"]
    assert dense_kick["config"]["kick"]["result"]["applied"] is False
    # method=none is the stock model token for token; kick-hf only stops once the scored first line is complete
    assert len(kick_resps) == len(hf_resps)
    for (kick_resp,), (hf_resp,) in zip([r[0] for r in kick_resps], [r[0] for r in hf_resps]):
        assert hf_resp.startswith(kick_resp)
        assert _first_line(kick_resp) == _first_line(hf_resp)
    assert dense_kick["results"]["kick_freebase"] == stock["results"]["kick_freebase"]


def test_exact_sparsity_and_untouched_embeddings(smol_path):
    from safetensors.torch import load_file

    from kick_models.lm import KickHFLM

    lm = KickHFLM(pretrained=str(smol_path), method="magnitude", sparsity=0.3, dtype="float32")
    model = lm.model
    for block in model.model.layers:
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                frac = (module.weight == 0).float().mean().item()
                assert abs(frac - 0.3) <= 1e-3, (name, frac)
    original = load_file(str(smol_path / "model.safetensors"))
    assert torch.equal(model.model.embed_tokens.weight, original["model.embed_tokens.weight"])
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)  # tied, untouched
    assert torch.equal(model.model.norm.weight, original["model.norm.weight"])
    info = lm.get_model_info()["kick"]
    assert info["compression"]["target_sparsity"] == 0.3 and info["result"]["applied"] is True


def test_python_api(smol_path):
    import lm_eval

    import kick_models

    out = lm_eval.simple_evaluate(
        model="kick-hf",
        model_args={"pretrained": str(smol_path), "method": "magnitude", "sparsity": 0.1},
        tasks=["kick_freebase"],
        limit=2,
        task_manager=kick_models.task_manager(),
    )
    assert 0.0 <= out["results"]["kick_freebase"]["exact_match,none"] <= 1.0
    assert out["config"]["kick"]["compression"]["sparsity"] == 0.1
