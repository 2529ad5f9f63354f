"""Capture of what every decoder block is called with: the first block's hidden-state input and each
block's own positional and keyword arguments (transformers 5.x passes position_embeddings,
attention_mask, position_ids, cache objects, and models that mix layer types give each type its own
mask and rotary table), in one forward pass that stops after the last block."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; never escapes the loop."""


@dataclass
class Batch:
    hidden: torch.Tensor  # [batch, seq, hidden]
    args: tuple  # positional args after hidden_states, for the block being walked
    kwargs: dict
    calls: list[tuple[tuple, dict]] = field(default_factory=list)  # (args, kwargs) each block was given


def _to(obj, device, memo: dict | None = None):
    """Move tensors (in tuples/lists/dicts) to ``device``; ``memo`` makes a tensor shared by several
    blocks' kwargs (one mask, one rotary table per layer type) one copy."""
    if isinstance(obj, torch.Tensor):
        if memo is None:
            return obj.to(device)
        if id(obj) not in memo:
            memo[id(obj)] = (obj, obj.to(device))  # keeps ``obj`` alive so its id is not reused
        return memo[id(obj)][1]
    if isinstance(obj, tuple):
        return tuple(_to(o, device, memo) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device, memo) for k, v in obj.items()}
    return obj


def _split_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    """(hidden_states, other positional args, keyword args without a growing KV cache)."""
    kwargs = dict(kwargs)
    if args:
        hidden, rest = args[0], tuple(args[1:])
    else:
        hidden, rest = kwargs.pop("hidden_states"), ()
    for key in ("past_key_value", "past_key_values"):
        if key in kwargs:
            kwargs[key] = None  # re-running a block must not grow a KV cache
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return hidden, rest, kwargs


def capture_block_inputs(
    model: nn.Module, blocks: nn.ModuleList, calib_ids: torch.Tensor, batch_size: int, device
) -> list[Batch]:
    """Run the model on ``calib_ids`` [n, seq] and record, per batch, the first block's
    hidden-state input and the arguments *every* block is called with (models that mix layer
    types give sliding-window and global layers different masks and rotary tables).

    One pass, no dense compute past the embeddings: while capturing, each block's forward is
    replaced by one that records its arguments and hands its hidden-state input on unchanged
    (masks and rotary tables do not depend on the hidden states); the pass stops after the last
    block. Block 0 really runs once, on the first batch, to learn the output shape
    (tensor or tuple) the model's loop expects from a block.
    """
    captured: list[Batch] = []
    memo: dict = {}
    shape: list = []  # [None] for a tensor, [n] for an n-tuple, once learned
    last = len(blocks) - 1

    def recorder(index: int, original):
        def forward(*args, **kwargs):
            hidden, rest, kw = _split_call(args, kwargs)
            if index == 0:
                memo.clear()
                captured.append(Batch(hidden.detach().to(device), (), {}))
            captured[-1].calls.append((_to(rest, device, memo), _to(kw, device, memo)))
            if index == last:
                raise StopForward
            if not shape:
                out = original(*args, **kwargs)
                shape.append(len(out) if isinstance(out, (tuple, list)) else None)
            return hidden if shape[0] is None else (hidden, *([None] * (shape[0] - 1)))

        return forward

    input_device = model.get_input_embeddings().weight.device if hasattr(model, "get_input_embeddings") else device
    saved = [block.__dict__.get("forward") for block in blocks]  # accelerate keeps its wrapper there
    for i, block in enumerate(blocks):
        block.forward = recorder(i, block.forward)
    try:
        with torch.no_grad():
            for chunk in calib_ids.split(batch_size):
                try:
                    model(chunk.to(input_device), use_cache=False)
                except StopForward:
                    continue
                reached = len(captured[-1].calls) if captured and captured[-1].calls else 0
                where = f"decoder block {reached}" if reached else "its first decoder block"
                raise RuntimeError(f"the forward pass of {type(model).__name__} never reached {where}")
    finally:
        memo.clear()
        for block, forward in zip(blocks, saved):
            if forward is None:
                del block.forward
            else:
                block.forward = forward
    for b in captured:
        if len(b.calls) != len(blocks):
            raise RuntimeError(f"the forward pass of {type(model).__name__} called {len(b.calls)} of its "
                               f"{len(blocks)} decoder blocks")
    return captured


def block_output(out):
    """transformers 5.x blocks return a tensor; older ones a tuple whose first item is the hidden state."""
    return out[0] if isinstance(out, (tuple, list)) else out
