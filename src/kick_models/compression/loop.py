"""THE layer-by-layer calibration loop, shared by every method.

One capture pass records the first decoder block's input and the arguments *every* block is
called with (transformers 5.x passes position_embeddings, attention_mask, position_ids, cache
objects, and models that mix layer types give each type its own mask and rotary table); then the
loop walks the blocks one at a time: gather input statistics of the block's matrices (Linear,
Conv1D, each expert of a fused MoE module, from the tokens routed to it), let the caller compress
them, and re-run the block so the (compressed) outputs feed the next one. Only one block sits on
the compute device at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .blocks import BlockMatrix, block_layout
from .experts import expert_inputs, routing_args
from .offload import compute_device, onloaded
from .stats import InputStats

log = logging.getLogger(__name__)

_KNOWN_BLOCK_PATHS = (
    "model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.blocks",
    "model.language_model.layers", "language_model.model.layers", "model.text_model.layers",
)
_LAYER_ATTRS = ("layers", "h", "blocks")
# Sub-module names of the parts of a multimodal model that are not its language model.
_TOWER_WORDS = ("vision", "visual", "image", "audio", "speech", "vit", "siglip", "projector", "mm_")


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early; never escapes this module."""


def _layer_list(module: nn.Module | None) -> nn.ModuleList | None:
    for attr in _LAYER_ATTRS:
        obj = getattr(module, attr, None)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    return None


def _text_decoder(model: nn.Module) -> nn.Module | None:
    """The language model as the model itself names it: ``get_decoder()`` (which resolves
    ``language_model`` / ``text_model`` / ``decoder`` of multimodal wrappers), else None."""
    get = getattr(model, "get_decoder", None)
    if not callable(get):
        return None
    try:
        decoder = get()
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None
    return decoder if isinstance(decoder, nn.Module) else None


def _is_multimodal(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return any(getattr(config, k, None) is not None for k in ("vision_config", "audio_config", "speech_config"))


def find_decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of the model's *language model*, found through its own structure
    (``get_decoder()``, then the usual attribute paths); only for models that expose neither,
    the longest ``nn.ModuleList`` of Linear-holding blocks outside any vision/audio tower.
    Multimodal models whose text decoder cannot be named are refused, never guessed."""
    for owner in (_text_decoder(model), model):
        found = _layer_list(owner)
        if found is not None:
            return found
    for path in _KNOWN_BLOCK_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    if _is_multimodal(model):
        raise ValueError(
            f"no text decoder found in {type(model).__name__}: get_decoder() and the paths "
            f"{', '.join(_KNOWN_BLOCK_PATHS)} give no decoder layers, and kick does not guess among the "
            "module lists of a multimodal model (vision/audio towers are never compressed)"
        )
    candidates = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList)
        and len(m) > 0
        and not any(word in name.lower() for word in _TOWER_WORDS)
        and "experts" not in name.split(".")  # an MoE block's expert list is not the decoder
        and all(block_layout(block).matrices for block in m)
    ]
    if not candidates:
        raise ValueError(
            f"no decoder blocks found in {type(model).__name__}: expected model.model.layers "
            "or an nn.ModuleList of blocks that contain nn.Linear layers"
        )
    return max(candidates, key=len)


def block_linears(block: nn.Module) -> dict[str, BlockMatrix]:
    """The compressible matrices of one block (Linear, Conv1D, each expert's projections), by
    name inside the block (registration order)."""
    return block_layout(block).matrices


@dataclass
class _Batch:
    hidden: torch.Tensor  # [batch, seq, hidden]
    args: tuple  # positional args after hidden_states, for the block being walked
    kwargs: dict
    calls: list[tuple[tuple, dict]] = field(default_factory=list)  # (args, kwargs) each block was given


@dataclass
class LinearGroup:
    """Matrices of one block that read the very same input tensor (q/k/v, gate/up, the gate and
    up halves of one expert) and so share one :class:`InputStats` (and one Hessian).
    ``expert`` is (experts module name, expert index, "in" | "down") for an expert's group."""

    names: list[str]
    stats: InputStats
    expert: tuple[str, int, str] | None = None


@dataclass
class LoopResult:
    seconds: float
    outputs: list[torch.Tensor] = field(default_factory=list)  # last block's outputs per batch


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
) -> list[_Batch]:
    """Run the model on ``calib_ids`` [n, seq] and record, per batch, the first block's
    hidden-state input and the arguments *every* block is called with (models that mix layer
    types give sliding-window and global layers different masks and rotary tables).

    One pass, no dense compute past the embeddings: while capturing, each block's forward is
    replaced by one that records its arguments and hands its hidden-state input on unchanged
    (masks and rotary tables do not depend on the hidden states); the pass stops after the last
    block. Block 0 really runs once, on the first batch, to learn the output shape
    (tensor or tuple) the model's loop expects from a block.
    """
    captured: list[_Batch] = []
    memo: dict = {}
    shape: list = []  # [None] for a tensor, [n] for an n-tuple, once learned
    last = len(blocks) - 1

    def recorder(index: int, original):
        def forward(*args, **kwargs):
            hidden, rest, kw = _split_call(args, kwargs)
            if index == 0:
                memo.clear()
                captured.append(_Batch(hidden.detach().to(device), (), {}))
            captured[-1].calls.append((_to(rest, device, memo), _to(kw, device, memo)))
            if index == last:
                raise _StopForward
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
                except _StopForward:
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
    order: list[str] = []  # hook-point call order, learned on the first block
    for index, block in enumerate(tqdm(blocks, desc=desc, unit="block", leave=False)):
        for b in batches:
            b.args, b.kwargs = b.calls[index]
        with onloaded(block, device):
            _walk_one(index, block, len(blocks), batches, compress_block, order, norms, hessian, propagate,
                      keep_outputs, true_sequential)


def _walk_one(index, block, n_blocks, batches, compress_block, order, norms, hessian, propagate, keep_outputs,
              true_sequential) -> None:
    """Statistics, compression and output propagation of one block that sits on the compute device."""
    layout = block_layout(block)
    linears = layout.matrices
    full = propagate == "dense" or (keep_outputs and index == n_blocks - 1)
    groups, outputs = _gather_stats(block, layout, batches, order, norms=norms, hessian=hessian, full=full,
                                    first_group_only=true_sequential)
    if true_sequential and len(groups) > 1:
        first, *later = groups  # only ``first`` has statistics yet
        del groups
        changed = compress_block(index, block, linears, [first])
        del first
        for found in later:
            group = _restat(block, layout, found, batches, norms=norms, hessian=hessian)
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


def _expert_groups(name: str, layout) -> list[LinearGroup]:
    """Empty groups of one fused experts module: every expert's gate/up input, then every
    expert's down input (call order, so true-sequential compresses gate/up first)."""
    by_key: dict[tuple[str, int, str], list[str]] = {}
    for m in layout.matrices.values():
        if m.kind == "expert" and m.module is layout.experts[name]:
            by_key.setdefault((name, m.expert, "down" if m.param == "down_proj" else "in"), []).append(m.name)
    keys = sorted(by_key, key=lambda k: (k[2] == "down", k[1]))
    return [LinearGroup(by_key[k], None, k) for k in keys]


def _expert_hook(module, groups: list[LinearGroup], stop: bool):
    """Pre-hook on a fused experts module that feeds each group its expert's routed input."""

    def hook(mod, args, kwargs):
        hidden, index = routing_args(args, kwargs)
        for e in sorted({g.expert[1] for g in groups if g.stats is not None and g.stats.collecting}):
            x, h = expert_inputs(module, hidden, index, e)
            for g in groups:
                if g.expert[1] == e and g.stats is not None:
                    g.stats.update(x if g.expert[2] == "in" else h)
        if stop:
            raise _StopForward

    return hook


def _restat(block, layout, found: LinearGroup, batches, *, norms, hessian) -> LinearGroup:
    """Fresh statistics of the input that ``found``'s matrices read, from the block as it is now;
    each batch stops right after that input is recorded."""
    if found.expert is not None:
        module = layout.experts[found.expert[0]]
        matrix = layout.matrices[found.names[0]]
        group = LinearGroup(list(found.names), InputStats(matrix.in_features, norms=norms, hessian=hessian,
                                                          device=matrix.view().device), found.expert)
        handle = module.register_forward_pre_hook(_expert_hook(module, [group], stop=True), with_kwargs=True)
        _run_stopping(block, batches, handle)
        return group
    leader = layout.matrices[found.names[0]]
    holder: list[InputStats] = []

    def hook(module, args):
        x = args[0]
        if not holder:
            holder.append(InputStats(leader.in_features, norms=norms, hessian=hessian, device=x.device))
        holder[0].update(x)
        raise _StopForward

    _run_stopping(block, batches, leader.module.register_forward_pre_hook(hook))
    if not holder:  # never called (it had no tokens in the first pass either)
        holder.append(InputStats(leader.in_features, norms=False, hessian=False, device=leader.view().device))
    return LinearGroup(list(found.names), holder[0])


def _run_stopping(block, batches, handle) -> None:
    try:
        with torch.no_grad():
            for b in batches:
                try:
                    block(b.hidden, *b.args, **b.kwargs)
                except _StopForward:
                    continue
    finally:
        handle.remove()


def _gather_stats(block, layout, batches, order: list[str], *, norms, hessian, full, first_group_only=False):
    """One pass of the block over all batches with input hooks on its matrices.

    Hook points are the block's Linear/Conv1D modules (input = their first argument) and its
    fused experts modules (input of expert e = the tokens routed to e, and its gated activation
    for ``down_proj``). Layers fed the same tensor object share an accumulator (decided on the
    first batch). ``order`` is the hook-point call order seen on the first block (filled here when
    empty); when the block's outputs are not needed (``full`` False) and this block has the same
    hook points, every batch stops right after the last one records, saving its matmul.
    ``first_group_only`` (true-sequential): groups after the first are found but accumulate
    nothing, since their statistics are re-collected once the groups before them are compressed.
    A matrix whose input never arrives (an expert no calibration token was routed to, an unused
    layer) gets a group with zero tokens; the caller decides what to do with it.
    Returns (groups in call order, outputs or None).
    """
    plain = {name: m for name, m in layout.matrices.items() if m.kind != "expert"}
    points = list(plain) + list(layout.experts)
    groups: dict[str, LinearGroup] = {}
    leader: dict[str, bool] = {}
    ordered: list[LinearGroup] = []
    learn = not order
    seen: list[tuple[torch.Tensor, LinearGroup]] = []
    stop_after: list[str | None] = [order[-1] if order and not full and set(order) == set(points) else None]

    def want() -> bool:  # accumulate into the next new group?
        return not (first_group_only and ordered)

    def linear_hook(name: str, matrix: BlockMatrix):
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
                    collect = want()
                    stats = InputStats(matrix.in_features, norms=norms and collect, hessian=hessian and collect,
                                       device=x.device)
                    group = LinearGroup([name], stats)
                    groups[name], leader[name] = group, True
                    seen.append((x, group))
                    ordered.append(group)
            if leader[name]:
                groups[name].stats.update(x)
            if name == stop_after[0]:
                raise _StopForward

        return hook

    def experts_hook(name: str, module: nn.Module):
        mine = _expert_groups(name, layout)
        inner: list = []

        def hook(mod, args, kwargs):
            if name not in groups:
                if learn:
                    order.append(name)
                for g in mine:
                    collect = want()
                    device = layout.matrices[g.names[0]].view().device
                    g.stats = InputStats(layout.matrices[g.names[0]].in_features, norms=norms and collect,
                                         hessian=hessian and collect, device=device)
                    ordered.append(g)
                    for n in g.names:
                        groups[n] = g
                groups[name] = mine[0]
                inner.append(_expert_hook(module, mine, stop=False))
            inner[0](mod, args, kwargs)
            if name == stop_after[0]:
                raise _StopForward

        return hook

    handles = [m.module.register_forward_pre_hook(linear_hook(name, m)) for name, m in plain.items()]
    handles += [module.register_forward_pre_hook(experts_hook(name, module), with_kwargs=True)
                for name, module in layout.experts.items()]
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
                if not full and order and set(order) == set(points):
                    stop_after[0] = order[-1]
    finally:
        for h in handles:
            h.remove()
        seen.clear()
    for name in layout.experts:  # an experts module never called: its groups, empty
        if name not in groups:
            for g in _expert_groups(name, layout):
                m = layout.matrices[g.names[0]]
                g.stats = InputStats(m.in_features, norms=False, hessian=False, device=m.view().device)
                ordered.append(g)
    for name, m in plain.items():
        if name not in groups:
            log.debug("%s was never called in this block: it gets a group without tokens", name)
            ordered.append(LinearGroup([name], InputStats(m.in_features, norms=False, hessian=False,
                                                          device=m.view().device)))
    return ordered, outputs
