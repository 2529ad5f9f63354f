"""Shared test set-up: single-threaded torch, offline hub, and the embedded SmolLM2 model."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def smol_path():
    """Folder of the converted embedded SmolLM2-135M-Instruct (converted once per cache)."""
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
    """Environment for `lm_eval` subprocesses: offline, single-threaded, same kick cache."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


@pytest.fixture
def no_gptqmodel(monkeypatch):
    """Make gptqmodel (and any of its already-imported submodules) unimportable for one test."""
    import sys

    for name in [n for n in sys.modules if n == "gptqmodel" or n.startswith("gptqmodel.")] or ["gptqmodel"]:
        monkeypatch.setitem(sys.modules, name, None)
