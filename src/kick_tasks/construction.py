"""Whether a task is being built: lm-eval's Task.__init__ renders one document as a format check, before any
model runs, so prompts rendered then are thrown away and need no fitting (nor a warning that they are not)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CONSTRUCTING: ContextVar[bool] = ContextVar("kick_task_constructing", default=False)


@contextlib.contextmanager
def constructing_task() -> Iterator[None]:
    """Within a task's construction: prompts rendered here are lm-eval's format check, not the evaluated ones."""
    token = _CONSTRUCTING.set(True)
    try:
        yield
    finally:
        _CONSTRUCTING.reset(token)


def is_constructing() -> bool:
    return _CONSTRUCTING.get()
