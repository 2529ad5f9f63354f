"""Every KICK task's prompt lives in one place: no YAML key that the task's class silently overrides."""

import pytest
from lm_eval.api.task import ConfigurableTask

from kick_models.registration import task_manager

TASKS = ["kick_instruct", "kick_mtbench", "kick_summarization_small", "kick_icrqa_mini_closed",
         "kick_icrqa_mini_open", "kick_freebase", "kick_mmlu_anatomy", "kick_ppl_heldout"]


@pytest.fixture(scope="module")
def tasks():
    from lm_eval.tasks import get_task_dict

    return get_task_dict(TASKS, task_manager(include_defaults=False))


@pytest.mark.parametrize("name", TASKS)
def test_no_yaml_prompt_that_the_class_overrides(tasks, name):
    task = tasks[name]
    overrides = type(task).doc_to_text is not ConfigurableTask.doc_to_text
    if overrides:
        assert task.config.doc_to_text is None, f"{name}: YAML doc_to_text is ignored by {type(task).__name__}"
    else:
        assert task.config.doc_to_text is not None
