"""The base class of kick's tasks: loads the task's ``custom_dataset`` as lm-eval does, minus lm-eval's generic
"Custom kwargs can be passed to --metadata" warning, which every kick task would print on every run (each task's
README names the ``--metadata`` keys it reads)."""

from __future__ import annotations

from typing import Any

from lm_eval.api.task import ConfigurableTask

from kick_tasks.construction import constructing_task


class KickTask(ConfigurableTask):
    """A ``ConfigurableTask`` whose ``custom_dataset`` loader is kick's own."""

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        config = dict(config or {})
        config.pop("class", None)  # lm-eval's task factory hands the ``class:`` key on; TaskConfig refuses it
        with constructing_task():  # lm-eval renders a document as a format check here, before any model runs
            super().__init__(config=config, **kwargs)

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not callable(self.config.custom_dataset):
            super().download(dataset_kwargs, **kwargs)
            return
        # the call lm-eval makes for a custom_dataset: task metadata (with --metadata merged in) as keywords
        self.dataset = self.config.custom_dataset(**(self.config.metadata or {}), **(self.config.dataset_kwargs or {}))
