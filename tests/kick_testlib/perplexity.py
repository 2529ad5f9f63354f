"""Perplexity over non-overlapping windows: the quick quality check used by tests and benchmarks."""

from __future__ import annotations

import math

import torch


def perplexity(model, ids: torch.Tensor, seqlen: int, batch_size: int = 4) -> float:
    """exp(mean next-token NLL) over ``ids`` [N] cut into ⌊N/seqlen⌋ windows of ``seqlen`` tokens."""
    n = ids.numel() // seqlen
    if n == 0:
        raise ValueError(f"need at least seqlen={seqlen} tokens, got {ids.numel()}")
    windows = ids.reshape(-1)[: n * seqlen].reshape(n, seqlen)
    device = model.get_input_embeddings().weight.device
    nll, count = 0.0, 0
    with torch.no_grad():
        for chunk in windows.split(batch_size):
            chunk = chunk.to(device)
            logits = model(chunk, use_cache=False).logits[:, :-1].float()  # [b, seq-1, vocab]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                                     reduction="sum")
            nll += loss.item()
            count += chunk[:, 1:].numel()
    return math.exp(nll / count)
