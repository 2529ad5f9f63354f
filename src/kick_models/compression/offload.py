"""Blocks whose weights accelerate offloaded (``device_map`` with ``"cpu"``/``"disk"`` entries).

Such a block's parameters are ``meta`` tensors; accelerate's ``AlignDevicesHook`` on each leaf
module fetches the real values from its weights map for every forward and drops them afterwards.
Compression needs the real weights outside a forward and must keep what it writes, so
:func:`onloaded` takes the hooks off, puts the weights on the compute device, and on exit writes
the (possibly compressed) tensors back into the weights map — in CPU memory, never into the
checkpoint or offload files they were read from — before the hooks go back on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def _offload_hook(module: nn.Module):
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and getattr(hook, "offload", False) and getattr(hook, "weights_map", None) is not None:
        return hook
    return None


def is_offloaded(module: nn.Module) -> bool:
    """Whether any leaf of ``module`` keeps its weights in an accelerate offload map."""
    return any(_offload_hook(m) is not None for m in module.modules())


def _first_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _store(weights_map, name: str, value: torch.Tensor) -> None:
    """Put ``value`` where the offload loader looks first: the in-memory state dict."""
    prefix = getattr(weights_map, "prefix", None)
    if prefix is None:  # a plain mapping
        weights_map[name] = value
        return
    dataset = weights_map.dataset
    target = getattr(dataset, "state_dict", dataset)  # OffloadedWeightsLoader or a dict
    target[prefix + name] = value
    keys = getattr(dataset, "all_keys", None)
    if keys is not None and prefix + name not in keys:
        keys.append(prefix + name)


def compute_device(block: nn.Module) -> torch.device:
    """Where ``block`` computes: its offload hooks' execution device, else where its weights are."""
    for module in block.modules():
        hook = _offload_hook(module)
        if hook is not None and hook.execution_device is not None:
            return torch.device(hook.execution_device)
    return _first_device(block)


@contextmanager
def onloaded(block: nn.Module, device=None, *, write_back: bool = True) -> Iterator[torch.device]:
    """``block`` with real weights on ``device`` (default: where its weights live) for the duration.

    A plain block is moved there and back. For an offloaded block, every parameter and buffer a
    hook manages is fetched onto ``device`` and the hooks are removed; on exit each is written
    back (on the CPU) into its hook's weights map and the hooks are re-attached, which returns
    the parameters to ``meta``. Changes made inside the context therefore persist either way
    (``write_back=False``: a read-only visit, nothing is copied back). Yields the device the
    weights are on.
    """
    hooked = [(m, h) for m in block.modules() if (h := _offload_hook(m)) is not None]
    if not hooked:
        home = _first_device(block)
        target = torch.device(device) if device is not None else home
        block.to(target)
        try:
            yield target
        finally:
            block.to(home)
        return

    from accelerate.hooks import add_hook_to_module, remove_hook_from_module
    from accelerate.utils import set_module_tensor_to_device

    target = torch.device(device) if device is not None else compute_device(block)
    fetched: list[tuple[nn.Module, object, list[str]]] = []
    for module, hook in hooked:
        names = [n for n, _ in module.named_parameters(recurse=False)]
        if getattr(hook, "offload_buffers", False):
            names += [n for n, _ in module.named_buffers(recurse=False)]
        remove_hook_from_module(module)
        for name in names:
            set_module_tensor_to_device(module, name, target, value=hook.weights_map[name])
        fetched.append((module, hook, names))
    # Leaves without a hook (already real) follow the block to the device, and back afterwards.
    moved = []
    for module in block.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.device.type != "meta" and p.device != target:
                moved.append((module, name, p.device))
                set_module_tensor_to_device(module, name, target)
    try:
        yield target
    finally:
        for module, hook, names in fetched:
            for name in names if write_back else ():
                _store(hook.weights_map, name, getattr(module, name).detach().to("cpu"))
            add_hook_to_module(module, hook)  # its init_hook puts the parameters back on meta
        for module, name, home in moved:
            set_module_tensor_to_device(module, name, home)
