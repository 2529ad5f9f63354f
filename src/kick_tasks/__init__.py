"""KICK task helpers for lm-eval: bundled data loaders, prompts, metrics, judge and reports."""

from __future__ import annotations

from pathlib import Path


def task_yamls_dir() -> Path:
    """Folder with the KICK task YAMLs: shipped as ``kick_tasks/task_yamls`` in the wheel,
    ``task_yamls/`` at the top of a source checkout (editable installs)."""
    packaged = Path(__file__).resolve().parent / "task_yamls"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "task_yamls"


def data_dir() -> Path:
    """Folder with the bundled benchmark data (and its licence/attribution files)."""
    return Path(__file__).resolve().parent / "data"
