"""lm-eval renders one document while it builds a task, before any model runs: kick warns about prompts it
cannot fit only when they are the evaluated ones, not for that format check."""

import logging

from lm_eval.tasks import get_task_dict

from kick_models.registration import task_manager
from kick_tasks import budget


def test_building_a_fitting_task_without_a_tokenizer_is_quiet_but_an_unfitted_prompt_warns(caplog):
    budget._warn_unfitted.cache_clear()
    with caplog.at_level(logging.WARNING, logger="kick_tasks.budget"):
        tasks = get_task_dict(["kick_icrqa_mini_open"], task_manager(include_defaults=False))
    assert tasks and "not fitted" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="kick_tasks.budget"):
        assert budget.metadata_tokenizer({}) is None
    assert "prompts are not fitted to the context" in caplog.text
    budget._warn_unfitted.cache_clear()
