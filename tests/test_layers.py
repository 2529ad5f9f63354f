"""The dependency direction: kick_common imports nothing of kick, kick_tasks depends only on it (never
torch or kick_models), kick_models never on kick_tasks or kick_study. Checked in fresh interpreters,
one per chain of checks that can share one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(package: str) -> list[str]:
    """Every module of ``package`` by its files (nothing is imported here)."""
    names = []
    for path in sorted((SRC / package).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _loaded_in_stages(*stages: str) -> list[set[str]]:
    """Run ``stages`` in turn in one fresh interpreter: the modules loaded after each. A stage may only add
    modules, so what one stage would pull in alone it still pulls in after the earlier ones."""
    marker = "kick-test-modules:"
    code = "import sys, json\n" + "".join(f"{stage}\nprint({marker!r} + json.dumps(sorted(sys.modules)))\n" for stage in stages)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = [set(json.loads(line[len(marker):])) for line in out.stdout.splitlines() if line.startswith(marker)]
    assert len(found) == len(stages), out.stdout[-2000:]
    return found


def _kick(loaded: set[str], package: str) -> set[str]:
    return {m for m in loaded if m == package or m.startswith(package + ".")}


@pytest.fixture(scope="module")
def light_stages() -> dict[str, set[str]]:
    """One interpreter (each costs seconds): kick_common alone, then every task module, then reading task data."""
    common, tasks, data = _loaded_in_stages(
        "\n".join(f"import {m}" for m in _modules("kick_common")),
        "\n".join(f"import {m}" for m in _modules("kick_tasks")),
        "from kick_tasks import perplexity, freebase, budget\n"
        "perplexity.heldout_documents(); freebase.load_freebaseqa(); budget.metadata_max_length({})",
    )
    return {"common": common, "tasks": tasks, "data": data}


def test_kick_common_imports_nothing_of_kick_and_no_torch(light_stages):
    loaded = light_stages["common"]
    assert "torch" not in loaded
    for other in ("kick_tasks", "kick_models", "kick_study"):
        assert not _kick(loaded, other), other


def test_every_task_module_imports_without_torch_or_kick_models(light_stages):
    modules = _modules("kick_tasks")
    assert {"kick_tasks.freebase", "kick_tasks.icrqa", "kick_tasks.mmlu", "kick_tasks.instruct",
            "kick_tasks.mtbench", "kick_tasks.summarization", "kick_tasks.perplexity"} <= set(modules)
    loaded = light_stages["tasks"]
    assert set(modules) <= loaded and "torch" not in loaded
    assert not _kick(loaded, "kick_models") and not _kick(loaded, "kick_study")


def test_reading_bundled_task_data_stays_light(light_stages):
    """The held-out split, a dataset and the budget's model lookup: still no torch, no compression engine."""
    loaded = light_stages["data"]
    assert "torch" not in loaded and not _kick(loaded, "kick_models")


def test_kick_models_never_imports_tasks_or_study():
    (loaded,) = _loaded_in_stages("import kick_models, kick_models.lm, kick_models.compression, kick_models.export, "
                                  "kick_models.cli")
    assert not _kick(loaded, "kick_tasks") and not _kick(loaded, "kick_study")


def test_the_stages_see_what_each_imports():
    """The staged check can fail: a stage that imports torch shows it, and the stage before it does not."""
    before, after = _loaded_in_stages("import json", "import torch")
    assert "torch" not in before and "torch" in after
