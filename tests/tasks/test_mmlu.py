"""kick_mmlu / kick_mmlu_gen: bundled data, generated task files, prompts, shot dropping, parsing."""

import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

import kick_tasks
from kick_tasks import mmlu
from kick_testlib.reference import reference_parse_choice

REPO = Path(__file__).resolve().parents[2]  # the source checkout: the generator is a maintainer script

ABSTRACT_ALGEBRA_5_SHOT = (
    "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
    "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K "
    "are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\n"
    "D. False, True\nAnswer: B\n\n"
    "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The "
    "symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\n"
    "Answer: C\n\n"
    "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every "
    "subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\n"
    "Answer: A\n\n"
    "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
    "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
)


@pytest.fixture(scope="module")
def task_manager():
    # only kick's folder is indexed: indexing all of lm-eval's tasks costs half a minute
    return TaskManager(include_path=str(kick_tasks.task_yamls_dir()), include_defaults=False)


def _task(task_manager, name):
    return task_manager.load([name])["tasks"][name]


def test_bundle_has_all_subjects_and_questions():
    subjects = mmlu.subjects()
    assert len(subjects) == 57
    splits = [mmlu.load_mmlu(subject=s) for s in ("abstract_algebra", "world_religions")]
    assert [len(d["dev"]) for d in splits] == [5, 5]
    table = mmlu._archive()["subjects"]
    assert sum(len(table[s]["test"]) for s in subjects) == 14042
    assert sum(len(table[s]["dev"]) for s in subjects) == 285
    counts = {}
    for s in subjects:
        counts[mmlu.subject_category(s)] = counts.get(mmlu.subject_category(s), 0) + 1
    assert counts == {"STEM": 18, "humanities": 13, "social sciences": 12, "other (business, health, misc.)": 14}


def test_unknown_subject_is_named():
    with pytest.raises(ValueError, match="'astrology'"):
        mmlu.load_mmlu(subject="astrology")


def test_generated_task_files_are_current():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_mmlu_tasks.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("family", ["kick_mmlu", "kick_mmlu_gen"])
def test_group_reports_categories_and_subjects(task_manager, family):
    loaded = task_manager.load([family])
    tasks = loaded["tasks"]
    assert len(tasks) == 57
    assert all(name.startswith(f"{family}_") for name in tasks)
    groups = {g.group_name if hasattr(g, "group_name") else str(g) for g in loaded["groups"]}
    for category in ("stem", "humanities", "social_sciences", "other"):
        assert any(g.endswith(f"{family}_{category}") for g in groups), groups


@pytest.mark.parametrize("name", ["kick_mmlu_abstract_algebra", "kick_mmlu_gen_abstract_algebra"])
def test_five_shot_prompt_snapshot(task_manager, name):
    task = _task(task_manager, name)
    doc = task.eval_docs[0]
    assert task.config.num_fewshot == 5
    assert task.fewshot_context(doc, 5) == ABSTRACT_ALGEBRA_5_SHOT
    assert doc["answer"] == 1


def test_loglikelihood_requests_score_the_four_letters(task_manager):
    task = _task(task_manager, "kick_mmlu_abstract_algebra")
    doc = task.eval_docs[0]
    requests = task.construct_requests(doc, "CTX", metadata=("t", 0, 1))
    assert [r.arguments for r in requests] == [("CTX", f" {letter}") for letter in "ABCD"]


def test_shots_are_dropped_last_first_to_fit(task_manager, smol_path):
    task = _task(task_manager, "kick_mmlu_abstract_algebra")
    # what lm-eval puts there from --model_args pretrained=...,max_length=200
    task.config.metadata = {**task.config.metadata, "pretrained": str(smol_path), "max_length": 200}
    context = task.fewshot_context(task.eval_docs[0], 5)
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(smol_path)(context)["input_ids"]) <= 199
    kept = context.count("\nAnswer: ")
    assert 0 < kept < 5
    # the kept shots are the first dev rows, in order; the test question still ends the prompt
    assert context.startswith(ABSTRACT_ALGEBRA_5_SHOT[:300])
    assert context.endswith("D. 6\nAnswer:")
    assert task.shots_dropped == 5 - kept


def test_without_a_known_context_the_prompt_is_left_whole(task_manager):
    task = _task(task_manager, "kick_mmlu_abstract_algebra")
    assert task.fewshot_context(task.eval_docs[0], 5) == ABSTRACT_ALGEBRA_5_SHOT


@pytest.mark.parametrize(
    "continuation, letter",
    [
        (" B", "B"),
        ("B", "B"),
        (" C.", "C"),
        ("(D)", "D"),
        ("", None),  # EOS: nothing generated
        ("\n", None),
        (" Both", None),  # the B of a word is not an answer
        (" a", None),
    ],
)
def test_parse_choice(continuation, letter):
    assert mmlu.parse_choice(continuation) == letter


def test_reference_parser_bug_eos_after_answer():
    prompt = "Q\nA. x\nB. y\nC. z\nD. w\nAnswer:"
    # the reference took the last character of prompt + output: an EOS leaves ":" as "the answer"
    assert reference_parse_choice(prompt, "") == ":"
    assert mmlu.parse_choice("") is None
    # and a token like " B\n" (or "B." followed by nothing) was scored wrong by the reference
    assert reference_parse_choice(prompt, " B\n") == "\n"
    assert mmlu.parse_choice(" B\n") == "B"


def test_process_results_gen_counts_unparsed():
    doc = {"answer": 2}
    assert mmlu.process_results_gen(doc, [" C"]) == {"acc": 1.0, "unparsed": 0.0}
    assert mmlu.process_results_gen(doc, [" A"]) == {"acc": 0.0, "unparsed": 0.0}
    assert mmlu.process_results_gen(doc, [""]) == {"acc": 0.0, "unparsed": 1.0}
