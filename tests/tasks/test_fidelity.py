"""Fidelity to LLM-KICK's protocol and the groups' reporting: prompts as the reference wrote them,
closed/open book side by side, unparsed answers in the MMLU groups."""

import pytest
from lm_eval.api.model import LM
from lm_eval.evaluator import simple_evaluate
from lm_eval.tasks import TaskManager

from kick_tasks import task_yamls_dir


class ConstantLM(LM):
    """Answers every prompt with ``reply`` and keeps the prompts."""

    def __init__(self, reply):
        super().__init__()
        self.reply = reply
        self.prompts = []

    def generate_until(self, requests, disable_tqdm=False):
        self.prompts += [r.args[0] for r in requests]
        return [self.reply for _ in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


@pytest.fixture(scope="module")
def tm():
    return TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)


def test_icrqa_group_reports_closed_and_open_side_by_side_without_a_mean(tm):
    out = simple_evaluate(model=ConstantLM("Paris"), tasks=["kick_icrqa_mini"], task_manager=tm,
                          limit=2, bootstrap_iters=0)
    results = out["results"]
    assert "exact_match,none" in results["kick_icrqa_mini_closed"]
    assert "exact_match,none" in results["kick_icrqa_mini_open"]
    group = {**results.get("kick_icrqa_mini", {}), **out.get("groups", {}).get("kick_icrqa_mini", {})}
    assert not any(key.startswith(("exact_match", "f1", "contains_paper")) for key in group)


def test_mmlu_gen_groups_report_unparsed(tm):
    out = simple_evaluate(model=ConstantLM(" none of these"), tasks=["kick_mmlu_gen_stem"],
                          task_manager=tm, limit=1, bootstrap_iters=0)
    group = out["groups"]["kick_mmlu_gen_stem"]
    assert group["unparsed,none"] == 1.0 and group["acc,none"] == 0.0


def test_mmlu_question_is_used_as_written(tm):
    # the reference formats ``question + "\nA. ..."`` without stripping; 963 test questions
    # carry leading or trailing whitespace
    task = tm.load(["kick_mmlu_gen_nutrition"])["tasks"]["kick_mmlu_gen_nutrition"]
    docs = [d for d in task.test_docs() if d["question"] != d["question"].strip()]
    assert docs
    for doc in docs[:5]:
        assert task.doc_to_text(doc).startswith(doc["question"] + "\nA. ")
    assert task.VERSION == 2.0
