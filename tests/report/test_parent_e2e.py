"""End to end: stock `lm_eval --model hf --log_samples` on a dense tiny Llama and on a checkpoint pruned outside
kick, paired by `kick-report --parent`; and the GGUF checkpoint kick-make-checkpoint writes from the embedded model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kick_study import paired
from kick_study import report as cli

TASK = "kick_mmlu_conceptual_physics"
LIMIT = 8


def _prune_copy(source, out):
    """A checkpoint compressed by hand (half of every Linear's weights zeroed by magnitude), as another tool would."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w[w.abs() <= w.abs().flatten().median()] = 0.0
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))


def _stock_run(model_dir, out, env):
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
           "--tasks", TASK, "--limit", str(LIMIT), "--device", "cpu", "--batch_size", "4", "--log_samples",
           "--output_path", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _paired_row(text: str, label: str) -> dict[str, str]:
    """The paired-statistics row of ``label``, keyed by the start of each column's header."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| setting | sparsity | seeds | n |"))
    names = [c.strip() for c in lines[head].split("|")[1:-1]]
    keys = {"flips": next(n for n in names if n.startswith("flips")), "p": next(n for n in names if n.endswith(" p"))}
    for line in lines[head + 2:]:
        cells = dict(zip(names, (c.strip() for c in line.split("|")[1:-1])))
        if cells.get("setting") == label:
            return {**cells, "flips": cells[keys["flips"]], "p": cells[keys["p"]]}
    raise AssertionError(f"no paired row for {label!r}")


def test_a_stock_hf_run_of_a_checkpoint_pairs_with_dense_through_parent(tmp_path, tiny_llama_dir, subprocess_env):
    ckpt = tmp_path / "pruned-elsewhere"
    _prune_copy(tiny_llama_dir, ckpt)
    results = tmp_path / "results"
    _stock_run(tiny_llama_dir, results / "dense", subprocess_env)
    _stock_run(ckpt, results / "pruned", subprocess_env)

    unpaired = cli.build_report(results, tmp_path / "unpaired.md", plots=False).read_text()
    assert f"## {ckpt}" in unpaired and "### Unpaired" in unpaired and f"--parent {ckpt}=DENSE" in unpaired

    assert cli.main([str(results), "--out", str(tmp_path / "paired.md"), "--no_plots",
                     "--parent", f"{results / 'pruned'}={results / 'dense'}"]) == 0
    text = (tmp_path / "paired.md").read_text()
    assert f"## {ckpt}" not in text and f"## {tiny_llama_dir}" in text
    row = _paired_row(text, "pruned-elsewhere · lm_eval --model hf")
    assert row["n"] == str(LIMIT)  # the same 8 items on both sides
    assert LIMIT < paired.MIN_ITEMS and row["verdict"] == paired.TOO_FEW  # kept tiny: a verdict needs more items
    right_to_wrong, wrong_to_right = (int(x) for x in row["flips"].split(" / "))
    assert 0 <= right_to_wrong + wrong_to_right <= LIMIT and row["p"] != "—"  # the paired test on those flips
    assert float(row["choice KL"]) > 0  # from both runs' option log-likelihoods: the pruned model did move
    assert "no KL to dense" in text


@pytest.mark.slow
def test_make_checkpoint_writes_a_gguf_whose_block_weights_are_q8_0(tmp_path):
    import gguf
    import numpy as np

    from kick_models.embedded import embedded_gguf_path
    from kick_study.checkpoints import CheckpointError, main, write_gguf

    assert main([str(tmp_path / "bad"), "--type", "q3_k"]) == 2 and not (tmp_path / "bad").exists()
    with pytest.raises(CheckpointError, match="invalid --type 'q3_k'; accepted: q8_0 | q4_0"):
        write_gguf(embedded_gguf_path(), tmp_path / "bad", "q3_k")
    path = write_gguf(embedded_gguf_path(), tmp_path / "out", "q8_0")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [path.name]  # no partial file left beside it
    source, made = gguf.GGUFReader(str(embedded_gguf_path())), gguf.GGUFReader(str(path))
    assert made.fields["tokenizer.ggml.tokens"].contents() == source.fields["tokenizer.ggml.tokens"].contents()
    old = {t.name: t for t in source.tensors}
    for tensor in made.tensors:
        before = old[tensor.name]
        if tensor.name.startswith("blk.") and len(tensor.shape) == 2:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
            a = gguf.quants.dequantize(before.data, before.tensor_type)
            b = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            # Q8_0: one scale d = max|w| / 127 per 32 weights, stored in fp16: |error| <= d / 2 + 127 · d · 2^-11
            assert np.abs(a - b).max() <= np.abs(a).max() / 127 * (0.5 + 127 * 2**-11)
            assert np.abs(a - b).max() > 0  # re-quantized, not copied
        else:
            assert tensor.tensor_type == before.tensor_type
