"""kick_icrqa_mini end to end on the embedded SmolLM2: the evidence must help (open book beats
closed book), the retrieval effect LLM-KICK's in-context QA relies on."""

import lm_eval
import pytest
from lm_eval.tasks import TaskManager

import kick_tasks

LIMIT = 26
# answers are short: 16 new tokens hold the first line; the tasks themselves generate 32
GEN_KWARGS = "max_gen_toks=16"


def run_mini(smol_path, limit=LIMIT, gen_kwargs=GEN_KWARGS) -> dict:
    tm = TaskManager(include_path=str(kick_tasks.task_yamls_dir()), include_defaults=False)
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={smol_path},dtype=float32,device=cpu",
        tasks=["kick_icrqa_mini_closed", "kick_icrqa_mini_open"],
        limit=limit,
        gen_kwargs=gen_kwargs,
        batch_size=LIMIT,
        task_manager=tm,
        log_samples=True,
    )


@pytest.mark.slow
def test_open_book_beats_closed_book(smol_path):
    result = run_mini(smol_path)
    closed, open_book = result["results"]["kick_icrqa_mini_closed"], result["results"]["kick_icrqa_mini_open"]
    assert len(result["samples"]["kick_icrqa_mini_open"]) == LIMIT
    assert open_book["f1,none"] > closed["f1,none"]
    assert open_book["contains_paper,none"] > closed["contains_paper,none"]
