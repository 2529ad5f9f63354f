"""The dependency direction: kick_common imports nothing of kick, kick_tasks depends only on it (never
torch or kick_models), kick_models never on kick_tasks or kick_study. Checked in fresh interpreters."""

import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(package: str) -> list[str]:
    """Every module of ``package`` by its files (nothing is imported here)."""
    names = []
    for path in sorted((SRC / package).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _loaded_after(statements: str) -> set[str]:
    code = f"import sys, json\n{statements}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _kick(loaded: set[str], package: str) -> set[str]:
    return {m for m in loaded if m == package or m.startswith(package + ".")}


def test_kick_common_imports_nothing_of_kick_and_no_torch():
    loaded = _loaded_after("\n".join(f"import {m}" for m in _modules("kick_common")))
    assert "torch" not in loaded
    for other in ("kick_tasks", "kick_models", "kick_study"):
        assert not _kick(loaded, other), other


def test_every_task_module_imports_without_torch_or_kick_models():
    modules = _modules("kick_tasks")
    assert {"kick_tasks.freebase", "kick_tasks.icrqa", "kick_tasks.mmlu", "kick_tasks.instruct",
            "kick_tasks.mtbench", "kick_tasks.summarization", "kick_tasks.perplexity"} <= set(modules)
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    assert "torch" not in loaded
    assert not _kick(loaded, "kick_models") and not _kick(loaded, "kick_study")


def test_reading_bundled_task_data_stays_light():
    """The held-out split, a dataset and the budget's model lookup: still no torch, no compression engine."""
    loaded = _loaded_after(
        "from kick_tasks import perplexity, freebase, budget\n"
        "perplexity.heldout_documents(); freebase.load_freebaseqa(); budget.metadata_max_length({})"
    )
    assert "torch" not in loaded and not _kick(loaded, "kick_models")


def test_kick_models_never_imports_tasks_or_study():
    loaded = _loaded_after("import kick_models, kick_models.lm, kick_models.compression, kick_models.export, kick_models.cli")
    assert not _kick(loaded, "kick_tasks") and not _kick(loaded, "kick_study")
