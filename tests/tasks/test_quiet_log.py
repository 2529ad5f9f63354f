"""Loading kick's tasks makes lm-eval warn about nothing in kick's own task files."""

import logging

import pytest

# one task of each family and template (the MMLU subjects share their template)
TASKS = ["kick_freebase", "kick_freebase_chat", "kick_freebase_reference", "kick_mmlu_anatomy",
         "kick_mmlu_gen_virology", "kick_icrqa_mini_open", "kick_icrqa_mini_closed", "kick_summarization_small",
         "kick_instruct", "kick_mtbench", "kick_ppl_heldout"]


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    import kick_tasks

    # only kick's folder is indexed: indexing all of lm-eval's tasks costs half a minute
    return TaskManager(include_path=str(kick_tasks.task_yamls_dir()), include_defaults=False)


def test_no_lm_eval_warning_about_kick_tasks(task_manager, caplog):
    with caplog.at_level(logging.WARNING, logger="lm_eval"):
        loaded = task_manager.load(TASKS)
    assert set(TASKS) <= set(loaded["tasks"])
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("lm_eval") and r.levelno >= logging.WARNING]
    assert warnings == []
