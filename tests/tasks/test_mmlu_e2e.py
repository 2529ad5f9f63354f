"""kick_mmlu end to end on the embedded SmolLM2: same requests and answers as lm-eval's own MMLU
template run on the bundled data, and an accuracy that is a plausible fraction."""

from pathlib import Path

import lm_eval
import pytest
import yaml
from lm_eval.tasks import TaskManager

import kick_tasks

# one short-prompt subject per category, so the 5-shot prompts stay near 300 tokens
SUBJECTS = ("conceptual_physics", "world_religions", "human_sexuality", "management")
LIMIT = 3  # 12 questions, 24 five-shot prompts: enough to see a different prompt or scoring


def write_lm_eval_mmlu_copy(folder: Path, subjects) -> list[str]:
    """lm-eval's own `mmlu` default template, unchanged except that it reads the bundled data."""
    source = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    template = (source / "_default_template_yaml").read_text()
    assert "dataset_path: cais/mmlu" in template
    template = template.replace("dataset_path: cais/mmlu", "custom_dataset: !function kick_tasks.mmlu.load_mmlu")
    (folder / "_ref_template_yaml").write_text(template)
    names = []
    for subject in subjects:
        leaf = yaml.safe_load((source / f"mmlu_{subject}.yaml").read_text())
        name = f"ref_mmlu_{subject}"
        leaf.update(task=name, include="_ref_template_yaml", dataset_kwargs={"subject": subject})
        leaf.pop("dataset_name")
        leaf.pop("tag", None)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(leaf))
        names.append(name)
    return names


def run_side_by_side(smol_path, folder: Path, subjects, limit: int) -> dict:
    ref_tasks = write_lm_eval_mmlu_copy(folder, subjects)
    tm = TaskManager(include_path=[str(kick_tasks.task_yamls_dir()), str(folder)], include_defaults=False)
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={smol_path},dtype=float32,device=cpu",
        tasks=[f"kick_mmlu_{s}" for s in subjects] + ref_tasks,
        num_fewshot=5,
        limit=limit,
        batch_size=8,
        task_manager=tm,
        log_samples=True,
    )


def predictions(samples) -> list[tuple[str, int]]:
    out = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [resp[0][0] for resp in s["resps"]]
        out.append((s["arguments"][0][0], lls.index(max(lls))))
    return out


@pytest.mark.slow
def test_kick_mmlu_matches_lm_eval_mmlu_on_bundled_data(smol_path, tmp_path):
    result = run_side_by_side(smol_path, tmp_path, SUBJECTS, LIMIT)
    for subject in SUBJECTS:
        ours, ref = result["samples"][f"kick_mmlu_{subject}"], result["samples"][f"ref_mmlu_{subject}"]
        assert len(ours) == LIMIT
        # identical prompts (5-shot, same header) and the same chosen letter for every question
        assert predictions(ours) == predictions(ref)
        acc = result["results"][f"kick_mmlu_{subject}"]["acc,none"]
        assert acc == result["results"][f"ref_mmlu_{subject}"]["acc,none"]
        assert 0.0 <= acc <= 1.0
