"""THE layer-by-layer calibration loop, shared by every method.

Captures the first decoder block's inputs and *all* its keyword arguments (transformers 5.x passes
position_embeddings, attention_mask, position_ids, cache objects), then walks the blocks one at a
time: gather input statistics of the block's Linear layers, let the caller compress them, and
re-run the block so the (compressed) outputs feed the next one. Only one block sits on the compute
device at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .offload import compute_device, onloaded
from .stats import InputStats

log = logging.getLogger(__name__)

_KNOWN_BLOCK_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.blocks")


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early; never escapes this module."""


def find_decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks: ``model.model.layers`` and the usual paths first, else the
    longest ``nn.ModuleList`` whose every element contains an ``nn.Linear``."""
    for path in _KNOWN_BLOCK_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    candidates = [
        m
        for m in model.modules()
        if isinstance(m, nn.ModuleList)
        and len(m) > 0
        and all(any(isinstance(s, nn.Linear) for s in block.modules()) for block in m)
    ]
    if not candidates:
        raise ValueError(
            f"no decoder blocks found in {type(model).__name__}: expected model.model.layers "
            "or an nn.ModuleList of blocks that contain nn.Linear layers"
        )
    return max(candidates, key=len)


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers of one block, by name inside the block (registration order)."""
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


@dataclass
class _Batch:
    hidden: torch.Tensor  # [batch, seq, hidden]
    args: tuple  # positional args after hidden_states
    kwargs: dict


@dataclass
class LinearGroup:
    """Linear layers of one block that read the very same input tensor (q/k/v, gate/up) and so
    share one :class:`InputStats` (and one Hessian)."""

    names: list[str]
    stats: InputStats


@dataclass
class LoopResult:
    seconds: float
    outputs: list[torch.Tensor] = field(default_factory=list)  # last block's outputs per batch


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def capture_block_inputs(
    model: nn.Module, blocks: nn.ModuleList, calib_ids: torch.Tensor, batch_size: int, device
) -> list[_Batch]:
    """Run the model on ``calib_ids`` [n, seq] up to the first block and record, per batch, the
    block's hidden-state input and every other argument it was called with."""
    captured: list[_Batch] = []

    def grab(module, args, kwargs):
        if args:
            hidden, rest = args[0], tuple(args[1:])
        else:
            kwargs = dict(kwargs)
            hidden, rest = kwargs.pop("hidden_states"), ()
        kwargs = dict(kwargs)
        for key in ("past_key_value", "past_key_values"):
            if key in kwargs:
                kwargs[key] = None  # re-running a block must not grow a KV cache
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        captured.append(_Batch(hidden.detach().to(device), _to(rest, device), _to(kwargs, device)))
        raise _StopForward

    input_device = model.get_input_embeddings().weight.device if hasattr(model, "get_input_embeddings") else device
    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for chunk in calib_ids.split(batch_size):
                try:
                    model(chunk.to(input_device), use_cache=False)
                except _StopForward:
                    continue
                raise RuntimeError(f"the forward pass of {type(model).__name__} never reached its first decoder block")
    finally:
        handle.remove()
    return captured


def _block_output(out):
    """transformers 5.x blocks return a tensor; older ones a tuple whose first item is the hidden state."""
    return out[0] if isinstance(out, (tuple, list)) else out


def run_layerwise(
    model: nn.Module,
    calib_ids: torch.Tensor,
    compress_block: Callable[[int, nn.Module, dict[str, nn.Linear], list[LinearGroup]], bool],
    *,
    norms: bool = True,
    hessian: bool = False,
    propagate: str = "compressed",
    true_sequential: bool = False,
    device=None,
    batch_size: int | None = None,
    keep_outputs: bool = False,
    desc: str = "compress",
) -> LoopResult:
    """Walk the decoder blocks with calibration data; ``compress_block(i, block, linears, groups)``
    changes the block's Linear weights in place and returns whether it changed anything.

    propagate="compressed" (the papers): the next block sees this block's outputs *after*
    compression (a second pass over the block); "dense": it sees the outputs of the unmodified
    block (one pass). Statistics (``norms``: ‖X_j‖² for Wanda, ``hessian``: XᵀX for SparseGPT/GPTQ)
    are accumulated in float32.

    true_sequential: inside a block, the groups are compressed one at a time in call order
    (q/k/v, then o, then gate/up, then down), and each group's statistics are re-collected with
    the groups before it already compressed, so a layer is fitted to the inputs it will really
    see (GPTQ's ``--true-sequential``). Costs one partial extra pass per group after the first.
    ``compress_block`` is then called once per group, with a one-group list.
    """
    if propagate not in ("compressed", "dense"):
        raise ValueError(f"propagate={propagate!r}; accepted: compressed | dense")
    if calib_ids.dim() != 2 or calib_ids.shape[0] == 0:
        raise ValueError(f"calib_ids must be [nsamples, seqlen] with nsamples > 0, got {tuple(calib_ids.shape)}")
    start = time.perf_counter()
    blocks = find_decoder_blocks(model)
    device = torch.device(device) if device is not None else compute_device(blocks[0])
    if batch_size is None:
        batch_size = max(1, 4096 // calib_ids.shape[1])
    was_training = model.training
    model.eval()  # no dropout in the statistics
    try:
        batches = capture_block_inputs(model, blocks, calib_ids, batch_size, device)
        _walk_blocks(blocks, batches, compress_block, norms, hessian, propagate, device, keep_outputs, desc,
                     true_sequential)
    finally:
        model.train(was_training)
    result = LoopResult(time.perf_counter() - start)
    if keep_outputs:
        result.outputs = [b.hidden for b in batches]
    return result


def _walk_blocks(blocks, batches, compress_block, norms, hessian, propagate, device, keep_outputs, desc,
                 true_sequential=False) -> None:
    order: list[str] = []  # Linear call order, learned on the first block
    for index, block in enumerate(tqdm(blocks, desc=desc, unit="block", leave=False)):
        with onloaded(block, device):
            _walk_one(index, block, len(blocks), batches, compress_block, order, norms, hessian, propagate,
                      keep_outputs, true_sequential)


def _walk_one(index, block, n_blocks, batches, compress_block, order, norms, hessian, propagate, keep_outputs,
              true_sequential) -> None:
    """Statistics, compression and output propagation of one block that sits on the compute device."""
    linears = block_linears(block)
    full = propagate == "dense" or (keep_outputs and index == n_blocks - 1)
    groups, outputs = _gather_stats(block, linears, batches, order, norms=norms, hessian=hessian, full=full,
                                    first_group_only=true_sequential)
    if true_sequential and len(groups) > 1:
        first, *later = groups  # only ``first`` has statistics yet
        del groups
        changed = compress_block(index, block, linears, [first])
        del first
        for found in later:
            group = _restat(block, linears[found.names[0]], found.names, batches, norms=norms, hessian=hessian)
            changed = compress_block(index, block, linears, [group]) or changed
            del group
    else:
        changed = compress_block(index, block, linears, groups)
        del groups
    last = index == n_blocks - 1
    if (outputs is None or (changed and propagate == "compressed")) and (keep_outputs or not last):
        outputs = _run_block(block, batches)
    if outputs is not None:
        for batch, out in zip(batches, outputs):
            batch.hidden = out


def _run_block(block: nn.Module, batches: Sequence[_Batch]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [_block_output(block(b.hidden, *b.args, **b.kwargs)) for b in batches]


def _restat(block, leader: nn.Linear, names: list[str], batches, *, norms, hessian) -> LinearGroup:
    """Fresh statistics of the input that ``leader`` (and the rest of ``names``) reads, from the block
    as it is now; each batch stops right after that input is recorded."""
    holder: list[InputStats] = []

    def hook(module, args):
        x = args[0]
        if not holder:
            holder.append(InputStats(leader.in_features, norms=norms, hessian=hessian, device=x.device))
        holder[0].update(x)
        raise _StopForward

    handle = leader.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for b in batches:
                try:
                    block(b.hidden, *b.args, **b.kwargs)
                except _StopForward:
                    continue
    finally:
        handle.remove()
    if not holder:
        raise RuntimeError(f"true_sequential: {names[0]} was not called when the block was re-run")
    return LinearGroup(list(names), holder[0])


def _gather_stats(block, linears, batches, order: list[str], *, norms, hessian, full, first_group_only=False):
    """One pass of the block over all batches with input hooks on its Linear layers.

    Layers fed the same tensor object share an accumulator (decided on the first batch). ``order``
    is the Linear call order seen on the first block (filled here when empty); when the block's
    outputs are not needed (``full`` False) and this block has the same Linear layers, every batch
    stops right after the last Linear's input is recorded, saving that layer's matmul.
    ``first_group_only`` (true-sequential): groups after the first are found but accumulate
    nothing, since their statistics are re-collected once the groups before them are compressed.
    Returns (groups, outputs or None).
    """
    groups: dict[str, LinearGroup] = {}
    leader: dict[str, bool] = {}
    learn = not order
    seen: list[tuple[torch.Tensor, LinearGroup]] = []
    stop_after: list[str | None] = [order[-1] if order and not full and set(order) == set(linears) else None]

    def make_hook(name: str, layer: nn.Linear):
        def hook(module, args):
            x = args[0]
            if name not in groups:  # first batch: find or open this layer's group
                if learn:
                    order.append(name)
                for tensor, group in seen:
                    if tensor is x:
                        group.names.append(name)
                        groups[name], leader[name] = group, False
                        break
                else:
                    collect = not (first_group_only and seen)  # ``seen`` is empty only for the first group
                    stats = InputStats(layer.in_features, norms=norms and collect, hessian=hessian and collect,
                                       device=x.device)
                    group = LinearGroup([name], stats)
                    groups[name], leader[name] = group, True
                    seen.append((x, group))
            if leader[name]:
                groups[name].stats.update(x)
            if name == stop_after[0]:
                raise _StopForward

        return hook

    handles = [layer.register_forward_pre_hook(make_hook(name, layer)) for name, layer in linears.items()]
    outputs: list[torch.Tensor] | None = [] if full else None
    try:
        with torch.no_grad():
            for b in batches:
                seen.clear()
                try:
                    out = _block_output(block(b.hidden, *b.args, **b.kwargs))
                except _StopForward:
                    continue
                if outputs is not None:
                    outputs.append(out)
                if not full and order and set(order) == set(linears):
                    stop_after[0] = order[-1]
    finally:
        for h in handles:
            h.remove()
        seen.clear()
    missing = [name for name in linears if name not in groups]
    if missing:
        log.debug("Linear layers never called in this block (left untouched): %s", missing)
    unique = {id(g): g for g in groups.values()}
    return list(unique.values()), outputs
