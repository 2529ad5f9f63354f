"""A tiny Llama folder (byte-level tokenizer, no download) whose weights can be left out, to prove
that a check ran before any weight was read."""

from __future__ import annotations

import pytest


def write_tiny_llama(out_dir, *, weights: bool):
    """Config and tokenizer of a 2-layer, 64-wide Llama in ``out_dir``; its random weights too if ``weights``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<s>"], vocab["</s>"] = len(vocab), len(vocab) + 1
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>").save_pretrained(str(out_dir))
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], tie_word_embeddings=False)
    if weights:
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(str(out_dir))
    else:
        config.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_config_dir(tmp_path_factory):
    """Config and tokenizer only: any attempt to load weights fails."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_config"), weights=False)


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
