"""The weight matrices of a decoder block, whatever their storage: ``nn.Linear``, GPT-2's
``Conv1D`` (stored [in, out]) and fused mixture-of-experts parameters (3-D, one matrix per
expert), each exposed as a live [out, in] view, plus the accounting of what was compressed and
the finder of a model's decoder blocks.

A router (an MoE block's ``gate`` / ``router``) is a matrix too, but it is never compressed: its
few rows decide which experts a token reaches, so pruning it changes the routing of every
later token instead of adding a small error to one product (and it is < 0.1% of the block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ROUTER_NAMES = ("gate", "router")  # children of a module that owns ``experts``; ``*_gate`` too


@dataclass(frozen=True)
class BlockMatrix:
    """One [out, in] matrix of a block: a whole Linear/Conv1D weight, or one expert's projection
    (the gate or up half of a fused ``gate_up_proj``)."""

    name: str  # inside the block: "mlp.down_proj", "mlp.experts.gate_up_proj[3].gate"
    kind: str  # linear | conv1d | expert
    module: nn.Module  # the module whose forward reads this matrix's input
    param: str  # the parameter's name on ``module``
    expert: int | None = None
    rows: slice | None = None
    transposed: bool = False  # stored [in, out]

    def view(self) -> torch.Tensor:
        """The live weight as [out, in]; writing into it writes the model's parameter."""
        w = getattr(self.module, self.param).data
        if self.expert is not None:
            w = w[self.expert]
        if self.transposed:
            w = w.T
        return w[self.rows] if self.rows is not None else w

    @property
    def in_features(self) -> int:
        return self.view().shape[1]


@dataclass
class BlockLayout:
    """Everything with a weight matrix in one block, sorted by what compression does with it."""

    matrices: dict[str, BlockMatrix]  # compressible, by name
    experts: dict[str, nn.Module]  # fused experts modules, by name (their matrices are in ``matrices``)
    routers: dict[str, torch.Tensor]  # never compressed
    unsupported: dict[str, tuple[str, torch.Tensor]]  # parameter name -> (what it is, the parameter)


def is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 style ``Conv1D`` (a Linear whose weight is stored [in, out])."""
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor) \
        and hasattr(module, "nf")


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers 5.x experts module: 3-D ``down_proj`` and ``gate_up_proj`` (or ``up_proj``)
    parameters, dispatched by ``use_experts_implementation`` (so ``has_gate``/``is_transposed``
    say how they are stored) and called as ``experts(hidden [T, H], top_k_index, top_k_weights)``."""
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj" if getattr(module, "has_gate", True) else "up_proj", None)
    return (isinstance(down, nn.Parameter) and down.dim() == 3 and isinstance(up, nn.Parameter)
            and up.dim() == 3 and hasattr(module, "is_transposed") and hasattr(module, "has_gate"))


def _looks_fused(module: nn.Module) -> bool:
    return any(p.dim() == 3 for p in module.parameters(recurse=False))


def expert_matrices(prefix: str, module: nn.Module) -> list[BlockMatrix]:
    """One matrix per expert and projection of a fused experts module (gate and up apart)."""
    transposed = bool(module.is_transposed)
    up_name = "gate_up_proj" if module.has_gate else "up_proj"
    n_experts = getattr(module, up_name).shape[0]
    out: list[BlockMatrix] = []
    for e in range(n_experts):
        if module.has_gate:
            concatenated = getattr(module, "is_concatenated", True)
            rows = getattr(module, up_name)[e].shape[1 if transposed else 0]
            halves = ((slice(0, rows // 2), slice(rows // 2, rows)) if concatenated
                      else (slice(0, rows, 2), slice(1, rows, 2)))  # interleaved gate0, up0, gate1, ...
            for half, part in zip(halves, ("gate", "up")):
                out.append(BlockMatrix(f"{prefix}.{up_name}[{e}].{part}", "expert", module, up_name, e, half,
                                       transposed))
        else:
            out.append(BlockMatrix(f"{prefix}.{up_name}[{e}]", "expert", module, up_name, e, None, transposed))
        out.append(BlockMatrix(f"{prefix}.down_proj[{e}]", "expert", module, "down_proj", e, None, transposed))
    return out


def _router_prefixes(block: nn.Module) -> list[str]:
    """Names of the router sub-modules: children called gate/router/*_gate of any module that
    owns an ``experts`` child."""
    found = []
    for name, module in block.named_modules():
        if not hasattr(module, "experts"):
            continue
        for child, _ in module.named_children():
            if child in ROUTER_NAMES or child.endswith(("_gate", "_router")):
                found.append(f"{name}.{child}" if name else child)
    return found


def block_layout(block: nn.Module) -> BlockLayout:
    """Classify every parameter of ``block`` with two or more dimensions."""
    routers = _router_prefixes(block)
    layout = BlockLayout({}, {}, {}, {})
    claimed: set[int] = set()
    for name, module in block.named_modules():
        if any(name == r or name.startswith(r + ".") for r in routers):
            for pname, p in module.named_parameters(recurse=False):
                if p.dim() >= 2:
                    layout.routers[f"{name}.{pname}"] = p
            claimed.update(id(p) for p in module.parameters(recurse=False))
            continue
        if isinstance(module, nn.Linear):
            layout.matrices[name] = BlockMatrix(name, "linear", module, "weight")
            claimed.add(id(module.weight))
        elif is_conv1d(module):
            layout.matrices[name] = BlockMatrix(name, "conv1d", module, "weight", transposed=True)
            claimed.add(id(module.weight))
        elif is_fused_experts(module):
            layout.experts[name] = module
            for m in expert_matrices(name, module):
                layout.matrices[m.name] = m
            claimed.update(id(p) for p in module.parameters(recurse=False))  # incl. 2-D per-expert biases
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() >= 2 and id(p) not in claimed:
                what = "fused expert weights of an unknown layout" if _looks_fused(module) else type(module).__name__
                layout.unsupported[f"{name}.{pname}" if name else pname] = (f"{what} {tuple(p.shape)}", p)
    return layout


def _count(t: torch.Tensor) -> tuple[int, int]:
    return int((t == 0).sum()), t.numel()


def tally(rows: dict[str, dict], layout: BlockLayout, prefix: str, compressed: set[str]) -> None:
    """Add one block's matrices to ``rows`` (bucket -> matrices/params/zeros): compressed ones
    (``<prefix>.<name>`` in ``compressed``) by kind, the rest as dense, routers apart."""

    def add(bucket: str, t: torch.Tensor) -> None:
        r = rows.setdefault(bucket, {"matrices": 0, "params": 0, "zeros": 0})
        r["matrices"] += 1
        r["params"] += t.numel()
        r["zeros"] += int((t == 0).sum())

    for name, m in layout.matrices.items():
        add(f"{'compressed' if f'{prefix}.{name}' in compressed else 'dense'} {m.kind}", m.view())
    for p in layout.routers.values():
        add("dense router (never compressed)", p.data)
    for what, p in layout.unsupported.values():  # only reaches here for experts left out on request
        add("dense experts of an unknown layout (skip_experts)" if what.startswith("fused expert")
            else "dense unsupported", p.data)


def summarize(rows: dict[str, dict]) -> dict:
    """Overall zero fraction over every counted matrix, and each bucket's own."""
    zeros = sum(r["zeros"] for r in rows.values())
    total = sum(r["params"] for r in rows.values())
    by_kind = {k: {**r, "sparsity": round(r["zeros"] / r["params"], 6) if r["params"] else 0.0}
               for k, r in sorted(rows.items())}
    return {"sparsity": zeros / total if total else 0.0, "params": total,
            "count": sum(r["matrices"] for r in rows.values()), "by_kind": by_kind}


def loaded_accounting(model: nn.Module, changed: set[int]) -> dict | None:
    """``compress_model``'s accounting (``achieved_sparsity`` and ``matrices``) measured on ``model`` as it
    is now, a matrix counting as compressed when its parameter is one of ``changed`` (the ``id`` of each
    tensor a cache entry replaced: a method changes exactly what it compresses); None without decoder blocks."""
    try:
        blocks = find_decoder_blocks(model)
    except ValueError:
        return None
    names = {id(m): name for name, m in model.named_modules()}
    rows: dict[str, dict] = {}
    done: set[str] = set()
    for block in blocks:
        layout, prefix = block_layout(block), names[id(block)]
        mine = {f"{prefix}.{n}" for n, m in layout.matrices.items() if id(getattr(m.module, m.param)) in changed}
        tally(rows, layout, prefix, mine)
        done |= mine
    acc = summarize(rows)
    acc["compressed"] = len(done)
    return {"achieved_sparsity": acc.pop("sparsity"), "matrices": acc}


_KNOWN_BLOCK_PATHS = (
    "model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.blocks",
    "model.language_model.layers", "language_model.model.layers", "model.text_model.layers",
)
_LAYER_ATTRS = ("layers", "h", "blocks")
# Sub-module names of the parts of a multimodal model that are not its language model.
_TOWER_WORDS = ("vision", "visual", "image", "audio", "speech", "vit", "siglip", "projector", "mm_")


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
