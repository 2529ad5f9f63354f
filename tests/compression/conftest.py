"""Fixtures for the compression tests: a char tokenizer and correlated inputs (the tiny Llama is in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch


class CharTokenizer:
    """Enough of a tokenizer for calibration tests: one id per character."""

    def __call__(self, text, **kwargs):
        return {"input_ids": [ord(c) % 128 for c in text]}


def _correlated_inputs(tokens: int, features: int, outliers: int = 4, seed: int = 0) -> torch.Tensor:
    """Activations with correlated features and a few large-magnitude outlier channels, [tokens, in]."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(tokens, features // 4, generator=g)
    mix = torch.randn(features // 4, features, generator=g)
    x = latent @ mix / (features // 4) ** 0.5 + 0.3 * torch.randn(tokens, features, generator=g)
    x[:, torch.randperm(features, generator=g)[:outliers]] *= 20.0
    return x


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()


@pytest.fixture(scope="session")
def correlated_inputs():
    return _correlated_inputs
