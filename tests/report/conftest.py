"""Hand-made lm-eval 0.4.13 results files (same keys, nesting and file naming as EvaluationTracker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LOWER_IS_BETTER = ("word_perplexity", "byte_perplexity", "bits_per_byte")

MMLU_GROUPS = {
    "kick_mmlu": ["kick_mmlu_stem", "kick_mmlu_humanities"],
    "kick_mmlu_stem": ["kick_mmlu_physics"],
    "kick_mmlu_humanities": ["kick_mmlu_history"],
}


def results_file(out_dir: Path, model_args, scores: dict[str, dict[str, float]], *, kick: dict | None = None,
                 groups: dict[str, list[str]] | None = None, date: float = 1.7e9, stamp: str = "2026-01-01T00-00-00.000001",
                 model: str = "kick-hf") -> Path:
    """One ``<out_dir>/<sanitized model>/results_<date>.json`` in lm-eval's layout."""
    results, hib, versions = {}, {}, {}
    for task, metrics in scores.items():
        entry = {"name": task, "alias": task, "sample_len": 10}
        for metric, value in metrics.items():
            entry[f"{metric},none"] = value
            entry[f"{metric}_stderr,none"] = "N/A" if metric in LOWER_IS_BETTER else 0.01
        results[task] = entry
        hib[task] = {m: m not in LOWER_IS_BETTER for m in metrics}
        versions[task] = 1.0
    config = {"model": model, "model_args": model_args, "model_num_parameters": 107072,
              "model_dtype": "torch.float32", "batch_size": 1, "batch_sizes": [], "device": "cpu",
              "limit": 10.0, "bootstrap_iters": 100000, "gen_kwargs": {}, "random_seed": 0}
    if kick is not None:
        config["kick"] = kick
    data = {"results": results, "group_subtasks": groups or {}, "configs": {}, "versions": versions,
            "n-shot": {t: 0 for t in scores}, "higher_is_better": hib,
            "n-samples": {t: {"original": 40, "effective": 10} for t in scores},
            "config": config, "git_hash": None, "date": date, "task_hashes": {},
            "model_source": model, "model_name": "x", "model_name_sanitized": "x",
            "total_evaluation_time_seconds": "1.0"}
    sub = out_dir / "x"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / f"results_{stamp}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


# (method, sparsity, pattern, wbits) → (freebase exact_match, word_perplexity, mmlu stem acc, mmlu humanities acc)
GRID = {
    ("none", 0.0, "unstructured", 16): (0.400, 20.0, 0.50, 0.60),
    ("magnitude", 0.2, "unstructured", 16): (0.395, 20.5, 0.49, 0.58),  # -0.5 pt: matches
    ("magnitude", 0.5, "unstructured", 16): (0.300, 40.0, 0.30, 0.35),  # -10 pt: fails
    ("wanda", 0.2, "unstructured", 16): (0.398, 20.1, 0.50, 0.60),
    ("wanda", 0.5, "unstructured", 16): (0.392, 21.0, 0.48, 0.59),      # -0.8 pt: matches
    ("wanda", 0.7, "unstructured", 16): (0.100, 90.0, 0.25, 0.25),
    ("wanda", 0.5, "2:4", 16): (0.350, 25.0, 0.40, 0.45),
    ("gptq", 0.0, "unstructured", 4): (0.390, 20.4, 0.50, 0.60),        # -1.0 pt: matches (band edge)
}


def write_grid(root: Path) -> Path:
    for i, ((method, sparsity, pattern, wbits), (em, ppl, stem, hum)) in enumerate(GRID.items()):
        args = {"pretrained": "org/tiny", "method": method}
        if pattern != "unstructured":
            args["pattern"] = pattern
        elif sparsity:
            args["sparsity"] = sparsity
        if wbits < 16:
            args["wbits"] = wbits
        scores = {
            "kick_freebaseqa": {"exact_match": em},
            "kick_ppl_heldout": {"word_perplexity": ppl, "byte_perplexity": 1.5, "bits_per_byte": 0.6},
            "kick_mmlu": {"acc": (stem + hum) / 2},
            "kick_mmlu_stem": {"acc": stem},
            "kick_mmlu_humanities": {"acc": hum},
            "kick_mmlu_physics": {"acc": stem},
            "kick_mmlu_history": {"acc": hum},
        }
        # half the files carry kick-hf's model info, half only model_args (a string in one of them)
        kick = None
        if i % 2 == 0 and method != "none":
            from kick_models.config import build_config

            compression = build_config({k: v for k, v in args.items() if k != "pretrained"}).to_dict()
            kick = {"model": "org/tiny", "compression": compression,
                    "result": {"achieved_sparsity": sparsity}}
        model_args = args if i != 3 else ",".join(f"{k}={v}" for k, v in args.items())
        results_file(root / f"cell{i}", model_args, scores, kick=kick, groups=MMLU_GROUPS)
    return root


@pytest.fixture
def grid_dir(tmp_path):
    return write_grid(tmp_path / "results")


@pytest.fixture
def results_writer():
    """The :func:`results_file` writer (tests run with --import-mode=importlib, so no sibling imports)."""
    return results_file
