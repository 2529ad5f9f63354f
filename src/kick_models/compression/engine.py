"""compress_model: turn a CompressionConfig into calls of the per-method tensor functions, driven
by the one layer-wise loop. This is the only place that knows which method needs which statistic."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from .loop import LinearGroup, block_linears, find_decoder_blocks, run_layerwise
from .magnitude import PruneResult, prune_magnitude
from .offload import onloaded
from .owl import outlier_ratio, owl_sparsities
from .quant import QuantGrid
from .sparsegpt import prune_sparsegpt
from .wanda import prune_wanda

log = logging.getLogger(__name__)


def compress_model(model: nn.Module, config, calib_ids: torch.Tensor | None, device=None,
                   quant_grids: dict[str, QuantGrid] | None = None) -> dict:
    """Compress the Linear layers of ``model``'s decoder blocks in place; embeddings, norms and
    lm_head are never touched. Returns a JSON-able summary (see the team contract).

    When quantizing, ``quant_grids`` (if given) receives each Linear's grid under its module name
    (``model.layers.3.mlp.up_proj``), which a packed GPTQ export needs.
    """
    start = time.perf_counter()
    blocks = find_decoder_blocks(model)
    block_names = {id(m): name for name, m in model.named_modules()}
    summary = {
        "method": config.method,
        "pattern": config.pattern_str,
        "target_sparsity": config.target_sparsity,
        "sparsity_profile": config.sparsity_profile,
        "propagate": config.propagate,
        "wbits": config.wbits,
        "layers": sum(len(block_linears(b)) for b in blocks),
    }
    if config.is_noop:
        summary.update(achieved_sparsity=_zero_fraction(blocks), seconds=time.perf_counter() - start)
        return summary
    if summary["layers"] == 0:
        raise ValueError(f"the decoder blocks of {type(model).__name__} contain no nn.Linear layers; nothing to compress")
    if config.needs_calibration and calib_ids is None:
        raise ValueError(f"method={config.method} (wbits={config.wbits}) needs calibration ids; got None")

    sparsities = [config.target_sparsity] * len(blocks)
    if config.prunes and config.pattern is None and config.sparsity_profile == "owl":
        ratios = _owl_ratios(model, blocks, config, calib_ids, device)
        sparsities = owl_sparsities(ratios, config.sparsity, config.owl_lambda)
        summary["block_sparsity"] = [round(s, 6) for s in sparsities]

    losses: list[float] = []

    def compress_block(index: int, block: nn.Module, linears: dict[str, nn.Linear], groups: list[LinearGroup]) -> bool:
        grids: dict[str, QuantGrid] | None = {} if quant_grids is not None else None
        for group in groups:
            losses.extend(_compress_group(linears, group, config, sparsities[index], grids))
        if grids:
            prefix = block_names[id(block)]
            quant_grids.update({f"{prefix}.{name}": grid for name, grid in grids.items()})
        return True

    if config.needs_calibration:
        run_layerwise(
            model, calib_ids, compress_block,
            norms=config.method == "wanda",
            hessian=config.method == "sparsegpt" or config.quantizes,
            propagate=config.propagate, true_sequential=config.true_sequential, device=device,
            desc=f"kick {config.method}",
        )
    else:  # magnitude pruning alone needs no data
        for index, block in enumerate(blocks):
            with onloaded(block, device):
                for layer in block_linears(block).values():
                    result = prune_magnitude(layer.weight.data, sparsity=sparsities[index], pattern=config.pattern)
                    layer.weight.data.copy_(result.weight)
                    losses.append(result.loss)

    summary.update(
        achieved_sparsity=_zero_fraction(blocks),
        loss=float(sum(losses)),
        seconds=round(time.perf_counter() - start, 3),
    )
    log.info(
        "kick: %s %s%s: %.2f%% zeros in %d Linear layers, %.1f s",
        config.method, config.pattern_str if config.prunes else "",
        f" {config.wbits}-bit" if config.quantizes else "",
        100 * summary["achieved_sparsity"], summary["layers"], summary["seconds"],
    )
    return summary


def _compress_group(linears: dict[str, nn.Linear], group: LinearGroup, config, sparsity: float,
                    grids: dict[str, QuantGrid] | None = None) -> list[float]:
    """Prune (and/or quantize) the layers of one input-sharing group; returns their losses.
    Quantized layers' grids go into ``grids`` (by name inside the block) when given."""
    layers = [linears[name] for name in group.names]
    weights = [layer.weight.data for layer in layers]
    H = group.stats.hessian() if group.stats.has_hessian else None
    results: list[PruneResult]
    if not config.prunes:
        results = [PruneResult(w, torch.ones_like(w, dtype=torch.bool), 0.0) for w in weights]
    elif config.method == "magnitude":
        results = [prune_magnitude(w, sparsity=sparsity, pattern=config.pattern) for w in weights]
    elif config.method == "wanda":
        norms = group.stats.col_norms()
        results = [prune_wanda(w, norms, sparsity=sparsity, pattern=config.pattern) for w in weights]
    elif config.method == "sparsegpt":
        rows = [w.shape[0] for w in weights]
        joint = prune_sparsegpt(
            torch.cat(weights), H, sparsity=sparsity, pattern=config.pattern,
            blocksize=config.blocksize, damp=config.damp, row_groups=rows,
        )
        results = [
            PruneResult(w, m, joint.loss / len(rows))
            for w, m in zip(joint.weight.split(rows), joint.mask.split(rows))
        ]
    else:
        raise ValueError(f"method={config.method!r} cannot prune; accepted: magnitude | wanda | sparsegpt")

    losses = []
    for name, layer, result in zip(group.names, layers, results):
        weight = result.weight
        if config.quantizes:
            from .gptq import quantize_gptq  # the GPTQ kernel lives in its own module

            quant = quantize_gptq(
                weight, H, bits=config.wbits, group_size=config.group_size, sym=config.sym,
                act_order=config.act_order, damp=config.damp, blocksize=config.blocksize,
                mask=result.mask if config.prunes else None,
            )
            weight = quant.weight
            losses.append(float(quant.loss))
            if grids is not None:
                grids[name] = quant.grid()
        else:
            losses.append(result.loss)
        layer.weight.data.copy_(weight)
    return losses


def _owl_ratios(model, blocks, config, calib_ids, device) -> list[float]:
    """Outlier ratio per block from Wanda scores on the dense model (|W| alone without data)."""
    ratios: list[float] = []
    if calib_ids is None:
        for block in blocks:
            with onloaded(block, device):
                ratios.append(outlier_ratio([layer.weight.data.abs() for layer in block_linears(block).values()],
                                            config.owl_m))
        return ratios

    def measure(index, block, linears, groups) -> bool:
        scores = [
            linears[name].weight.data.float().abs() * g.stats.col_norms()[None, :]
            for g in groups for name in g.names
        ]
        ratios.append(outlier_ratio(scores, config.owl_m))
        return False

    run_layerwise(model, calib_ids, measure, norms=True, propagate="dense", device=device, desc="kick owl")
    return ratios


def _zero_fraction(blocks: nn.ModuleList) -> float:
    zeros = total = 0
    for block in blocks:
        with onloaded(block, write_back=False):
            for layer in block_linears(block).values():
                zeros += int((layer.weight.data == 0).sum())
                total += layer.weight.numel()
    return zeros / total if total else 0.0
