"""AWQ (Lin et al., MLSys 2024, "Activation-aware Weight Quantization", eq. 4-5): per input channel
scales s = mean|x|^α (α searched on a grid over [0, 1)), quantize W·diag(s), and fold 1/s into the
operation that produces the input, so that the block's function is unchanged before quantization.

Fold rule (Llama-family names, as the reference): q/k/v ← the block's ``input_layernorm`` (OPT:
``self_attn_layer_norm``), gate/up ← ``post_attention_layernorm`` (OPT fc1: ``final_layer_norm``),
o_proj ← v_proj (only when v's outputs are o's inputs one to one, i.e. no grouped-query attention),
down_proj ← up_proj (act(gate)·up is linear in up). A norm is folded only if dividing its weight
(and bias) by s is checked to divide its output by s. Any other group has no foldable producer
and gets s = 1: plain round-to-nearest.

The search minimises the quantization error of the group's Linear outputs, Σ ½ tr(ΔW H ΔWᵀ) with
ΔW = Q(W diag s) diag(s)⁻¹ - W and H = 2XᵀX/n (= ‖X ΔWᵀ‖²/n, exact for the calibration tokens);
the reference measures the whole attention / MLP output instead. Weight clipping (the reference's
second search) is not done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .quant import quantize_rtn

log = logging.getLogger(__name__)

_NORM_OF = {  # leaf names of a group → names of the norm that feeds it, first match wins
    frozenset({"q_proj", "k_proj", "v_proj"}): ("input_layernorm", "self_attn_layer_norm"),
    frozenset({"gate_proj", "up_proj"}): ("post_attention_layernorm",),
    frozenset({"fc1"}): ("final_layer_norm",),
}
_LINEAR_OF = {"o_proj": "v_proj", "down_proj": "up_proj"}  # leaf → sibling Linear that feeds it


@dataclass
class ScaleSearch:
    scales: torch.Tensor  # [in] float32
    alpha: float
    loss: float  # of the best α
    losses: list[float]  # one per grid point


def awq_scales(abs_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = mean|x|^α, clamped at 1e-4 and normalised by √(max s · min s), [in] float32."""
    s = abs_mean.float().pow(alpha).clamp_min(1e-4)
    return s / (s.max() * s.min()).sqrt()


def output_error(W: torch.Tensor, Q: torch.Tensor, H: torch.Tensor) -> float:
    """½ tr((Q - W) H (Q - W)ᵀ) = ‖X (Q - W)ᵀ‖² / n for H = 2XᵀX/n."""
    D = Q.float() - W.float()
    return float(0.5 * ((D @ H) * D).sum())


def search_scales(weights: list[torch.Tensor], abs_mean: torch.Tensor, H: torch.Tensor, *, bits: int,
                  group_size: int = 128, sym: bool = False, n_grid: int = 20) -> ScaleSearch:
    """Grid search α ∈ {0, 1/n, …, (n-1)/n} for the weights [out_k, in] of one input-sharing group;
    ties go to the smaller α, so α = 0 (s = 1, plain RTN) wins unless scaling helps."""
    H = H.float()
    best: ScaleSearch | None = None
    losses = []
    for i in range(n_grid):
        alpha = i / n_grid
        s = awq_scales(abs_mean, alpha).to(H.device)
        loss = 0.0
        for W in weights:
            Wf = W.float()
            Q = quantize_rtn(Wf * s[None, :], bits=bits, group_size=group_size, sym=sym).weight / s[None, :]
            loss += output_error(Wf, Q, H)
        losses.append(loss)
        if best is None or loss < best.loss:
            best = ScaleSearch(s, alpha, loss, losses)
    return best


def fold_target(block: nn.Module, names: list[str]) -> tuple[str, nn.Module] | None:
    """(name, module) of the op whose output feeds the group ``names`` (names inside the block), or None."""
    leaves = frozenset(n.rsplit(".", 1)[-1] for n in names)
    for members, norms in _NORM_OF.items():
        if leaves <= members:
            for norm in norms:
                module = getattr(block, norm, None)
                if module is not None and getattr(module, "weight", None) is not None:
                    return norm, module
            return None
    if len(names) == 1 and names[0].rsplit(".", 1)[-1] in _LINEAR_OF:
        parent, _, leaf = names[0].rpartition(".")
        sibling_name = f"{parent}.{_LINEAR_OF[leaf]}" if parent else _LINEAR_OF[leaf]
        sibling = block.get_submodule(sibling_name) if _has(block, sibling_name) else None
        layer = block.get_submodule(names[0])
        if isinstance(sibling, nn.Linear) and sibling.out_features == layer.in_features:
            return sibling_name, sibling
    return None


def _has(block: nn.Module, name: str) -> bool:
    try:
        block.get_submodule(name)
        return True
    except AttributeError:
        return False


def _linear(layer) -> nn.Linear:
    """The nn.Linear behind the loop's matrix record (``BlockMatrix`` of kind linear), or the layer itself."""
    module = getattr(layer, "module", None)
    return module if getattr(layer, "kind", None) == "linear" and isinstance(module, nn.Linear) else layer


@torch.no_grad()
def fold_scales(producer: nn.Module, layers: list[nn.Linear], s: torch.Tensor) -> bool:
    """Divide ``producer``'s output by s and multiply the layers' input columns by s (in float32,
    cast back). A norm is first checked on a probe input; returns False (nothing changed) if its
    output does not scale with its weight."""
    layers = [_linear(layer) for layer in layers]
    s = s.float().to(layers[0].weight.device)
    if isinstance(producer, nn.Linear):
        w = producer.weight.data
        w.copy_((w.float() / s[:, None]).to(w.dtype))
        if producer.bias is not None:
            producer.bias.data.copy_((producer.bias.data.float() / s).to(producer.bias.dtype))
    else:
        if not _norm_scales_with_weight(producer, s):
            return False
        for p in (producer.weight, getattr(producer, "bias", None)):
            if isinstance(p, torch.Tensor):
                p.data.copy_((p.data.float() / s).to(p.dtype))
    for layer in layers:
        w = layer.weight.data
        w.copy_((w.float() * s[None, :]).to(w.dtype))
    return True


def _norm_scales_with_weight(norm: nn.Module, s: torch.Tensor) -> bool:
    """True if dividing the norm's weight (and bias) by s divides its output by s (RMSNorm, LayerNorm;
    not Gemma's (1 + w) form)."""
    weight = norm.weight
    if weight.dim() != 1 or weight.shape[0] != s.shape[0]:
        return False
    saved = [(p, p.data.clone()) for p in (weight, getattr(norm, "bias", None)) if isinstance(p, torch.Tensor)]
    probe = torch.randn(4, s.shape[0], generator=torch.Generator().manual_seed(0)).to(weight.device, weight.dtype)
    try:
        before = norm(probe).float()
        for p, data in saved:
            p.data.copy_((data.float() / s).to(p.dtype))
        after = norm(probe).float()
    finally:
        for p, data in saved:
            p.data.copy_(data)
    tol = 1e-3 if weight.dtype in (torch.float16, torch.bfloat16) else 1e-5
    return torch.allclose(after * s, before, rtol=tol, atol=tol * float(before.abs().max()))


def awq_block(block: nn.Module, linears: dict[str, nn.Linear], groups, *, bits: int, group_size: int,
              sym: bool = False, n_grid: int = 20) -> dict[str, float]:
    """Search and fold the scales of every group of one block (before any of it is quantized);
    returns the chosen α per group leader (groups without a foldable producer are left as they are)."""
    plans = []
    for group in groups:
        target = fold_target(block, group.names)
        if target is None:
            log.debug("awq: no foldable producer for %s; plain RTN", group.names)
            continue
        layers = [_linear(linears[n]) for n in group.names]
        found = search_scales([layer.weight.data for layer in layers], group.stats.abs_mean(), group.stats.hessian(),
                              bits=bits, group_size=group_size, sym=sym, n_grid=n_grid)
        plans.append((group.names[0], target, layers, found))
    chosen = {}
    for leader, (name, producer), layers, found in plans:  # fold after every search: o's fold edits v
        if found.alpha == 0.0 or fold_scales(producer, layers, found.scales):
            chosen[leader] = found.alpha
        else:
            log.debug("awq: %s does not scale with its weight; %s stays unscaled", name, leader)
    return chosen
