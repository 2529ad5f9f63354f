"""KICK tasks for lm-eval: bundled data loaders, prompts, metrics and the LLM judge.

Depends only on ``kick_common`` (and lm-eval): the tasks work under stock ``--model hf`` and never
import torch or the compression engine.
"""

from __future__ import annotations

from pathlib import Path

from kick_common.paths import task_yamls_dir, tasks_data_dir

__all__ = ["data_dir", "task_yamls_dir"]


def data_dir() -> Path:
    """Folder with the bundled benchmark data (and its licence/attribution files)."""
    return tasks_data_dir()
