"""Teach a running lm-eval about kick: the ``kick-hf`` model and the packaged task folder.

Shared by the start-up hook (stock ``lm_eval``), ``kick-eval`` and ``import kick_models``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from kick_common.paths import task_yamls_dir

MODEL_NAME = "kick-hf"
MODEL_TARGET = "kick_models.lm:KickHFLM"  # must equal the lm_eval.models entry point in pyproject.toml
KICK_LOGGERS = ("kick_common", "kick_tasks", "kick_models")


def follow_lm_eval_logging() -> None:
    """Show kick's log lines where lm-eval shows its own, at lm-eval's level.

    lm-eval configures only the ``lm_eval`` logger, so under the stock CLI kick's INFO lines (what was
    compressed, achieved sparsity and bits, KL to dense, cache hit) would go nowhere. Only when nobody
    configured logging (no root handler) do kick's loggers borrow lm-eval's handlers.
    """
    source = logging.getLogger("lm_eval")
    if logging.getLogger().handlers or not source.handlers:
        return
    for name in KICK_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            for handler in source.handlers:
                logger.addHandler(handler)
            logger.setLevel(source.getEffectiveLevel())


_in_cli = False  # set by the start-up hook and kick-eval: this process runs lm-eval's command line


def in_lm_eval_cli() -> bool:
    """True in a process running lm-eval's command line (``lm_eval``, ``python -m lm_eval``, ``kick-eval``)."""
    return _in_cli


def register_model(cli: bool = False) -> None:
    """Register ``kick-hf`` as a lazy placeholder (nothing heavy is imported until it is used).
    ``cli``: this process runs lm-eval's command line (kick-hf then reads ``--model_args`` as typed).

    lm-eval fills its model registry from ``lm_eval.models`` only when the registry is empty, so
    that module is imported first: registering into an empty registry would hide every built-in
    model (``--model hf`` would stop working).
    """
    global _in_cli
    _in_cli = _in_cli or cli
    import lm_eval.models  # noqa: F401  (fills the registry with the built-in models)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def task_dir() -> Path:
    """The packaged lm-eval task folder (``kick_tasks/task_yamls`` in the wheel, ``task_yamls/`` in a checkout)."""
    return task_yamls_dir()


def _with_kick_tasks(include_path: Any) -> list[Any]:
    paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
    ours = task_dir()
    if not any(Path(p).resolve() == ours.resolve() for p in paths):
        paths.insert(0, ours)
    return paths


def patch_task_manager() -> None:
    """Make every lm-eval ``TaskManager`` also index the kick task folder (idempotent)."""
    from lm_eval.tasks.manager import TaskManager

    original = TaskManager.__init__
    if getattr(original, "_kick_patched", False):
        return

    @functools.wraps(original)
    def __init__(self, *args: Any, include_path: Any = None, **kwargs: Any) -> None:
        if len(args) >= 2:  # (verbosity, include_path, ...) given positionally
            args = (args[0], _with_kick_tasks(args[1]), *args[2:])
        else:
            kwargs["include_path"] = _with_kick_tasks(include_path)
        original(self, *args, **kwargs)

    __init__._kick_patched = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__  # type: ignore[method-assign]


def task_manager(include_path: Any = None, **kwargs: Any):
    """A ``TaskManager`` that knows the kick tasks, for ``lm_eval.simple_evaluate(task_manager=...)``."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=_with_kick_tasks(include_path), **kwargs)
