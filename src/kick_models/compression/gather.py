"""Statistics gathering over one decoder block's groups: input hooks on its matrices (Linear, Conv1D,
each expert of a fused MoE module from the tokens routed to it) feed one :class:`InputStats` per group
of matrices that read the same input."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import BlockMatrix
from .capture import StopForward, block_output
from .experts import expert_inputs, routing_args
from .stats import InputStats

log = logging.getLogger(__name__)


@dataclass
class LinearGroup:
    """Matrices of one block that read the very same input tensor (q/k/v, gate/up, the gate and
    up halves of one expert) and so share one :class:`InputStats` (and one Hessian).
    ``expert`` is (experts module name, expert index, "in" | "down") for an expert's group."""

    names: list[str]
    stats: InputStats
    expert: tuple[str, int, str] | None = None


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
            raise StopForward

    return hook


def restat(block, layout, found: LinearGroup, batches, *, norms, hessian) -> LinearGroup:
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
        raise StopForward

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
                except StopForward:
                    continue
    finally:
        handle.remove()


def gather_stats(block, layout, batches, order: list[str], *, norms, hessian, full, first_group_only=False):
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
                raise StopForward

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
                raise StopForward

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
                    out = block_output(block(b.hidden, *b.args, **b.kwargs))
                except StopForward:
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
