"""Per-expert calibration inputs of a fused mixture-of-experts module, taken from the routing the
model itself computed: the experts module is called as ``experts(hidden [T, H], top_k_index
[T, k], top_k_weights [T, k])``, so a forward pre-hook there sees exactly which tokens the router
sent to which expert, whatever experts implementation (eager, batched_mm, grouped_mm) runs."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def routing_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden [T, H], top_k_index [T, k]) from the experts module's call arguments."""
    hidden = args[0] if args else kwargs["hidden_states"]
    index = args[1] if len(args) > 1 else kwargs["top_k_index"]
    hidden = hidden.reshape(-1, hidden.shape[-1])
    return hidden, index.reshape(hidden.shape[0], -1)


def routed_tokens(top_k_index: torch.Tensor, expert: int) -> torch.Tensor:
    """Indices of the tokens routed to ``expert`` (any of their top-k slots), ascending."""
    return (top_k_index == expert).any(-1).nonzero().squeeze(-1)


def _weight(module: nn.Module, name: str, expert: int) -> torch.Tensor:
    w = getattr(module, name)[expert]
    return w.T if module.is_transposed else w  # [out, in]


def _bias(module: nn.Module, name: str, expert: int) -> torch.Tensor | None:
    return getattr(module, f"{name}_bias")[expert] if getattr(module, "has_bias", False) else None


def expert_inputs(module: nn.Module, hidden: torch.Tensor, top_k_index: torch.Tensor, expert: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """What expert ``expert`` reads: its routed tokens [t, H] (input of gate/up) and the gated
    activation [t, I] its ``down_proj`` reads, computed the way transformers' batched experts do
    (linear, then ``_apply_gate`` or the activation)."""
    x = hidden[routed_tokens(top_k_index, expert)]
    up_name = "gate_up_proj" if module.has_gate else "up_proj"
    h = F.linear(x, _weight(module, up_name, expert).to(x.dtype), _bias(module, up_name, expert))
    h = module._apply_gate(h) if module.has_gate else module.act_fn(h)
    return x, h
