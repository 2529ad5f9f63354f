"""The one tiny random-init Llama of the test suite (no download), in memory or saved with a byte-level tokenizer."""

from __future__ import annotations

import torch


def tiny_llama(seed: int = 0, layers: int = 3, dtype=torch.float32, *, vocab_size: int = 128,
               tie_word_embeddings: bool = True, max_position_embeddings: int = 256, **config):
    """A random ``LlamaForCausalLM``: 64 wide, 4 heads (2 KV), MLP 128, eval mode, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_position_embeddings,
                      tie_word_embeddings=tie_word_embeddings, **config)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (256 byte symbols + ``<s>``/``</s>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<s>"], vocab["</s>"] = len(vocab), len(vocab) + 1
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")


def save_tiny_llama(out_dir, seed: int = 0):
    """Save a 2-layer random Llama and the byte-level tokenizer to ``out_dir`` (a loadable checkpoint)."""
    tokenizer = byte_tokenizer()
    vocab = tokenizer.get_vocab()
    model = tiny_llama(seed, layers=2, vocab_size=len(vocab), tie_word_embeddings=False, max_position_embeddings=512,
                       bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return model, tokenizer
