"""Fixtures for the compression tests: a tiny random Llama, a char tokenizer, correlated inputs.
(pytest runs with --import-mode=importlib, so helpers come as fixtures, not imports.)"""

from __future__ import annotations

import pytest
import torch


def _tiny_llama(seed: int = 0, layers: int = 3, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


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
def tiny_llama():
    return _tiny_llama


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()


@pytest.fixture(scope="session")
def correlated_inputs():
    return _correlated_inputs
