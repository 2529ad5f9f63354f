"""THE layer-by-layer calibration loop, shared by every method.

One capture pass (``capture``) records the first decoder block's input and the arguments *every*
block is called with; then the loop walks the blocks one at a time: gather input statistics of the
block's matrices (``gather``), let the caller compress them, and re-run the block so the
(compressed) outputs feed the next one. Only one block sits on the compute device at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .blocks import block_layout, find_decoder_blocks
from .capture import Batch, block_output, capture_block_inputs
from .gather import LinearGroup, gather_stats, restat
from .offload import compute_device, onloaded


@dataclass(frozen=True)
class LoopOptions:
    """How the loop walks the blocks; every field is read by the walk, none by ``compress_block``.

    propagate="compressed" (the papers): the next block sees this block's outputs *after*
    compression (a second pass over the block); "dense": it sees the outputs of the unmodified
    block (one pass). Statistics (``norms``: ‖X_j‖² for Wanda, ``hessian``: XᵀX for SparseGPT/GPTQ)
    are accumulated in float32.

    true_sequential: inside a block, the groups are compressed one at a time in call order
    (q/k/v, then o, then gate/up, then down), and each group's statistics are re-collected with
    the groups before it already compressed, so a layer is fitted to the inputs it will really
    see (GPTQ's ``--true-sequential``). Costs one partial extra pass per group after the first.
    ``compress_block`` is then called once per group, with a one-group list.

    ``device`` None: the device of the first block's weights; ``batch_size`` None: 4096 tokens per
    batch; ``keep_outputs``: return the last block's outputs; ``desc``: the progress bar's label.
    """

    norms: bool = True
    hessian: bool = False
    propagate: str = "compressed"
    true_sequential: bool = False
    device: torch.device | str | None = None
    batch_size: int | None = None
    keep_outputs: bool = False
    desc: str = "compress"

    def __post_init__(self):
        if self.propagate not in ("compressed", "dense"):
            raise ValueError(f"propagate={self.propagate!r}; accepted: compressed | dense")


@dataclass
class LoopResult:
    seconds: float
    outputs: list[torch.Tensor] = field(default_factory=list)  # last block's outputs per batch


def run_layerwise(
    model: nn.Module,
    calib_ids: torch.Tensor,
    compress_block: Callable[[int, nn.Module, dict[str, nn.Linear], list[LinearGroup]], bool],
    options: LoopOptions = LoopOptions(),
) -> LoopResult:
    """Walk the decoder blocks with calibration data; ``compress_block(i, block, linears, groups)``
    changes the block's Linear weights in place and returns whether it changed anything."""
    if calib_ids.dim() != 2 or calib_ids.shape[0] == 0:
        raise ValueError(f"calib_ids must be [nsamples, seqlen] with nsamples > 0, got {tuple(calib_ids.shape)}")
    start = time.perf_counter()
    blocks = find_decoder_blocks(model)
    device = torch.device(options.device) if options.device is not None else compute_device(blocks[0])
    batch_size = options.batch_size if options.batch_size is not None else max(1, 4096 // calib_ids.shape[1])
    options = replace(options, device=device, batch_size=batch_size)
    was_training = model.training
    model.eval()  # no dropout in the statistics
    try:
        batches = capture_block_inputs(model, blocks, calib_ids, batch_size, device)
        _walk_blocks(blocks, batches, compress_block, options)
    finally:
        model.train(was_training)
    result = LoopResult(time.perf_counter() - start)
    if options.keep_outputs:
        result.outputs = [b.hidden for b in batches]
    return result


def _walk_blocks(blocks, batches, compress_block, options: LoopOptions) -> None:
    order: list[str] = []  # hook-point call order, learned on the first block
    for index, block in enumerate(tqdm(blocks, desc=options.desc, unit="block", leave=False)):
        for b in batches:
            b.args, b.kwargs = b.calls[index]
        with onloaded(block, options.device):
            _walk_one(index, block, len(blocks), batches, compress_block, order, options)


def _walk_one(index, block, n_blocks, batches, compress_block, order, options: LoopOptions) -> None:
    """Statistics, compression and output propagation of one block that sits on the compute device."""
    norms, hessian, propagate = options.norms, options.hessian, options.propagate
    true_sequential, keep_outputs = options.true_sequential, options.keep_outputs
    layout = block_layout(block)
    linears = layout.matrices
    full = propagate == "dense" or (keep_outputs and index == n_blocks - 1)
    groups, outputs = gather_stats(block, layout, batches, order, norms=norms, hessian=hessian, full=full,
                                    first_group_only=true_sequential)
    if true_sequential and len(groups) > 1:
        first, *later = groups  # only ``first`` has statistics yet
        del groups
        changed = compress_block(index, block, linears, [first])
        del first
        for found in later:
            group = restat(block, layout, found, batches, norms=norms, hessian=hessian)
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


def _run_block(block: nn.Module, batches: Sequence[Batch]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [block_output(block(b.hidden, *b.args, **b.kwargs)) for b in batches]
