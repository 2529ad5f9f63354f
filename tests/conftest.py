"""Shared test set-up: single-threaded torch, offline hub, an isolated kick cache, the `slow` marker
applied by fixture, the embedded SmolLM2 model and the one tiny random Llama.

Two speeds: ``python -m pytest -m "not slow"`` runs the unit tests; the full run adds every test
that loads SmolLM2 or starts ``lm_eval`` (marked ``slow`` here, by the fixtures they use, or by hand).
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Everything kick caches (converted embedded model, compressed weights, judge verdicts) and the
# datasets cache go to a fresh folder per session, never into the user's ~/.cache: every run
# compresses afresh, and the cache-hit path is covered by its own explicit tests.
_SESSION_CACHE = tempfile.mkdtemp(prefix="kick-test-cache-")
os.environ["KICK_CACHE_DIR"] = os.path.join(_SESSION_CACHE, "kick")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SESSION_CACHE, "datasets")
os.environ.pop("KICK_JUDGE_CACHE_DIR", None)
# ...except the converted embedded model, which every cache's models/ folder links to: converting it costs
# ~30 s of CPU, and the parallel workers (pytest-xdist) inherit this variable from the process that starts
# them, so one run converts once (kick converts under a file lock, so the workers never see half a folder).
_SHARED_MODELS_VAR = "TESTS_KICK_SHARED_MODELS"  # not KICK_*: kick warns about unknown KICK_ variables
_OWNS_SHARED_MODELS = not os.path.isdir(os.environ.get(_SHARED_MODELS_VAR, ""))
if _OWNS_SHARED_MODELS:
    os.environ[_SHARED_MODELS_VAR] = tempfile.mkdtemp(prefix="kick-test-models-")


def link_shared_models(kick_cache_dir) -> None:
    """Make ``kick_cache_dir/models`` the run's one shared folder of converted models."""
    os.makedirs(kick_cache_dir, exist_ok=True)
    os.symlink(os.environ[_SHARED_MODELS_VAR], os.path.join(kick_cache_dir, "models"), target_is_directory=True)


link_shared_models(os.environ["KICK_CACHE_DIR"])

import shutil  # noqa: E402

import pytest  # noqa: E402

# Tests that use these fixtures load SmolLM2 or start lm_eval in a subprocess: end-to-end, `slow`.
SLOW_FIXTURES = frozenset({"smol", "smol_path", "subprocess_env"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)  # removes the link, not the shared folder
    if _OWNS_SHARED_MODELS:
        shutil.rmtree(os.environ[_SHARED_MODELS_VAR], ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def smol_path():
    """Folder of the converted embedded SmolLM2-135M-Instruct (converted once per session)."""
    from kick_models.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def smol(smol_path):
    """(model, tokenizer) of the embedded model, float32, eval mode. Treat as read-only: deep-copy to modify."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smol_path, dtype="float32")
    model.eval()
    return model, AutoTokenizer.from_pretrained(smol_path)


@pytest.fixture
def subprocess_env():
    """Environment for `lm_eval` subprocesses: offline, single-threaded, the session's kick cache."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


@pytest.fixture
def fresh_kick_cache(tmp_path, monkeypatch):
    """An empty kick cache for one test (``KICK_CACHE_DIR``, inherited by subprocesses and Ray workers), sharing
    only the converted embedded model with the session's: compressions and references start afresh."""
    folder = tmp_path / "kick-cache"
    link_shared_models(folder)
    monkeypatch.setenv("KICK_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_llama():
    """Builder of the tiny random Llama (``kick_testlib.tiny_models.tiny_llama``): call it for a fresh model."""
    from kick_testlib.tiny_models import tiny_llama

    return tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A saved 2-layer tiny Llama checkpoint with a byte-level tokenizer."""
    from kick_testlib.tiny_models import save_tiny_llama

    out = tmp_path_factory.mktemp("tiny_llama")
    save_tiny_llama(out)
    return out


@pytest.fixture
def no_gptqmodel(monkeypatch):
    """Make gptqmodel (and any of its already-imported submodules) unimportable for one test."""
    import sys

    for name in [n for n in sys.modules if n == "gptqmodel" or n.startswith("gptqmodel.")] or ["gptqmodel"]:
        monkeypatch.setitem(sys.modules, name, None)
