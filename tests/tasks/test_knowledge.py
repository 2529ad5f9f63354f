"""kick_knowledge groups FreebaseQA, MMLU and TriviaQA; every knowledge task is found by stock lm-eval."""

import subprocess

from lm_eval.tasks import TaskManager

import kick_tasks

KNOWLEDGE_TASKS = [
    "kick_knowledge",
    "kick_mmlu",
    "kick_mmlu_gen",
    "kick_mmlu_stem",
    "kick_mmlu_gen_humanities",
    "kick_mmlu_world_religions",
    "kick_mmlu_gen_world_religions",
    "kick_icrqa",
    "kick_icrqa_closed",
    "kick_icrqa_open",
    "kick_icrqa_mini",
    "kick_icrqa_mini_closed",
    "kick_icrqa_mini_open",
]


def test_knowledge_group_builds_all_three_families(monkeypatch):
    monkeypatch.setenv("KICK_ICRQA_SOURCE", "mini")  # the Hub is unreachable in tests
    tm = TaskManager(include_path=str(kick_tasks.task_yamls_dir()), include_defaults=False)
    tasks = tm.load(["kick_knowledge"])["tasks"]
    assert "kick_freebase" in tasks
    assert sum(name.startswith("kick_mmlu_") for name in tasks) == 57
    assert {"kick_icrqa_closed", "kick_icrqa_open"} <= set(tasks)
    assert "kick_icrqa_mini_open" not in tasks


def test_stock_lm_eval_validate_finds_every_knowledge_task(subprocess_env):
    result = subprocess.run(
        ["lm-eval", "validate", "--tasks", ",".join(KNOWLEDGE_TASKS)],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All tasks found and valid" in result.stdout
