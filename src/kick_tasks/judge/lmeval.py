"""Glue between lm-eval's task life cycle and the judge: judge a whole task's outputs in one batch.

lm-eval calls ``process_results`` once per document with no access to the model or to other
documents, so a judge call there would block once per item. `JudgedTask` instead hooks
``apply_filters`` (called once per task, after all generation): it runs the optional
`after_generation` step (MT-Bench's second turn), then sends every judge request of the task
to `JudgeClient.run` at once (bounded concurrency, cache, retries), and hands each document
``{"text": ..., "judge": <record or None>, ...}`` as its filtered response (a dict that prints
as JSON, so lm-eval's samples files hold JSON, not a Python repr). Without a judge configured it
logs that judge scores are skipped and the automatic metrics still run.

With a judge configured, ``build_all_requests`` (before any generation) checks the endpoint once
per process (`check_endpoint`) and stops the run with a clear error if it refuses us. A refusal
later on does not raise: the remaining items are counted as ``judge_failed`` and lm-eval still
writes results and samples. Which judge answered (model, endpoint host, prompt version) and the
request / retry / cache-hit / unparsed / failed counts go into the task's ``metadata.kick_judge``,
which lm-eval writes into the results file under ``configs``.

**The running model (MT-Bench turn 2).** lm-eval 0.4.13 gives a task no handle on the model: its
hooks (``build_all_requests``, ``apply_filters``, ``process_results``) receive requests, documents
and, with ``--apply_chat_template``, the model's template function, never the model itself. kick
therefore keeps its own registry, :func:`current_lm`, a context variable set by
:func:`running_model`. :func:`install_evaluate_hook` (called when a task that needs it is built,
which lm-eval does inside ``simple_evaluate`` before it evaluates) wraps
``lm_eval.evaluator.evaluate`` so that every evaluation runs inside ``running_model(lm)`` — for any
model type (``hf``, ``kick-hf``, ``vllm``, a custom ``LM``), from the ``lm_eval`` CLI, ``kick-eval``
or ``simple_evaluate``. Limit: code that bound ``evaluate`` before the task was built (``from
lm_eval.evaluator import evaluate`` and then calling it on a ready task dict) bypasses the wrapper;
wrap that call in ``with running_model(lm):``. Nothing walks the call stack.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from kick_tasks.base_task import KickTask
from kick_tasks.judge.client import (
    JudgeClient,
    JudgeConfig,
    JudgeConfigError,
    check_endpoint,
)

log = logging.getLogger(__name__)


_RUNNING_LM: ContextVar[Any] = ContextVar("kick_running_lm", default=None)


def current_lm():
    """The model of the evaluation now running (see :func:`running_model`), or None outside one."""
    return _RUNNING_LM.get()


@contextlib.contextmanager
def running_model(lm) -> Iterator[Any]:
    """Make ``lm`` the :func:`current_lm` for the duration of the block (nested blocks restore)."""
    token = _RUNNING_LM.set(lm)
    try:
        yield lm
    finally:
        _RUNNING_LM.reset(token)


def install_evaluate_hook() -> None:
    """Wrap ``lm_eval.evaluator.evaluate`` (once) so that it runs inside ``running_model(lm)``."""
    from lm_eval import evaluator

    original = evaluator.evaluate
    if getattr(original, "_kick_running_model", False):
        return

    @functools.wraps(original)
    def evaluate(*args: Any, **kwargs: Any):
        lm = kwargs["lm"] if "lm" in kwargs else (args[0] if args else None)
        with running_model(lm):
            return original(*args, **kwargs)

    evaluate._kick_running_model = True  # type: ignore[attr-defined]
    evaluator.evaluate = evaluate


class JudgedTask(KickTask):
    """A generate_until task whose outputs are judged as one batch after generation.

    Subclasses implement `judge_batch(client, docs, outputs) -> list[record]` and, if they need
    more model calls first, `after_generation(instances, outputs) -> outputs`.
    """

    def __init__(self, config: dict | None = None, **kwargs: Any):
        self.judge_stats: dict | None = None
        self._chat: dict = {}
        super().__init__(config=config, **kwargs)

    # lm-eval passes the chat settings here; MT-Bench's second turn must be formatted the same way.
    # It is also the last hook before generation: the judge endpoint is checked here.
    def build_all_requests(self, *args, **kwargs):
        self._chat = {k: kwargs.get(k) for k in ("apply_chat_template", "chat_template",
                                                  "system_instruction")}
        self.preflight()
        return super().build_all_requests(*args, **kwargs)

    def preflight(self) -> None:
        """Check the configured judge before any generation; raise `JudgeConfigError` if it refuses us."""
        config = self.judge_config()
        if config is None:
            return
        try:
            how = check_endpoint(config)
        except JudgeConfigError as err:
            log.error("%s: %s", self.config.task, err)
            raise
        log.info("%s: judge %s at %s accepted the credentials (checked by %s)", self.config.task,
                 config.model, config.host, how)

    def judge_config(self) -> JudgeConfig | None:
        return JudgeConfig.from_env(self.config.metadata or {})

    def after_generation(self, instances: list, outputs: list[dict]) -> list[dict]:
        return outputs

    def judge_batch(self, client: JudgeClient, docs: list[dict], outputs: list[dict]) -> list[dict]:
        raise NotImplementedError

    def apply_filters(self):
        super().apply_filters()
        instances = [i for i in self.instances if i.idx == 0]
        if not instances:
            return
        for key in list(instances[0].filtered_resps):
            outputs = [{"text": _as_text(i.filtered_resps[key])} for i in instances]
            outputs = self.after_generation(instances, outputs)
            config = self.judge_config()
            if config is None:
                log.warning("%s: no judge configured (set KICK_JUDGE_MODEL, and KICK_JUDGE_BASE_URL "
                            "/ KICK_JUDGE_API_KEY as needed); judge scores skipped, automatic "
                            "metrics only", self.config.task)
                records = [None] * len(outputs)
            else:
                client = JudgeClient(config, fail_soft=True)
                records = self.judge_batch(client, [i.doc for i in instances], outputs)
                self._record_judge(config, client)
            for inst, out, rec in zip(instances, outputs, records, strict=True):
                inst.filtered_resps[key] = JudgedResponse({**out, "judge": rec})

    def _record_judge(self, config: JudgeConfig, client: JudgeClient) -> None:
        """Judge identity and counters into ``metadata.kick_judge`` (lands in the results file)."""
        self.judge_stats = {**config.to_dict(), **client.stats.as_dict(), "refused": client.fatal}
        if self.config.metadata is None:
            self.config.metadata = {}
        self.config.metadata["kick_judge"] = self.judge_stats
        log.info("%s: judge %s", self.config.task, self.judge_stats)
        if client.stats.unparsed or client.stats.failed:
            log.warning("%s: %d judge replies unparsed and %d requests failed; they are "
                        "reported as judge_unparsed / judge_failed, not dropped",
                        self.config.task, client.stats.unparsed, client.stats.failed)


class JudgedResponse(dict):
    """A task's filtered response; ``str()`` is JSON because lm-eval writes samples with ``str()``."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False, default=str)


def _as_text(resp: Any) -> str:
    if isinstance(resp, dict):
        return str(resp.get("text", ""))
    if isinstance(resp, (list, tuple)):
        return str(resp[0]) if resp else ""
    return "" if resp is None else str(resp)


def judge_metrics(record: dict | None, value_key: str = "score") -> dict:
    """Per-document judge metrics: the value (None when unread) and unparsed/failed flags."""
    if record is None:
        return {}
    return {"judge_score": record.get(value_key),
            "judge_unparsed": record["status"] == "unparsed",
            "judge_failed": record["status"] == "failed"}
