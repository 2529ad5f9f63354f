"""A tiny Llama folder (byte-level tokenizer, no download) whose weights can be left out, to prove
that a check ran before any weight was read."""

from __future__ import annotations

import pytest


def write_tiny_llama(out_dir, *, weights: bool):
    """Config and tokenizer of the suite's 2-layer, 64-wide tiny Llama in ``out_dir``; its random weights too if ``weights``."""
    from pathlib import Path

    from kick_testlib.tiny_models import save_tiny_llama

    save_tiny_llama(out_dir)
    if not weights:
        for path in Path(out_dir).glob("*.safetensors*"):
            path.unlink()
    return out_dir


@pytest.fixture(scope="session")
def tiny_config_dir(tmp_path_factory):
    """A complete folder (a weightless one is itself refused before loading); the tests that use it also
    use ``no_weight_loading``, which fails any attempt to load the weights."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_config"), weights=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_model"), weights=True)


@pytest.fixture
def no_weight_loading(monkeypatch):
    """Fail the test if HFLM (which loads the weights) is ever constructed."""
    import functools

    from lm_eval.models.huggingface import HFLM

    @functools.wraps(HFLM.__init__)  # keeps the signature kick-hf reads its accepted args from
    def refuse(self, *args, **kwargs):
        raise AssertionError("HFLM started loading the model: a check came too late")

    monkeypatch.setattr(HFLM, "__init__", refuse)
