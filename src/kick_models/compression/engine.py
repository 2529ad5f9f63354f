"""compress_model: turn a CompressionConfig into calls of its registered method's tensor functions,
driven by the one layer-wise loop. The method's registry entry says which statistics it needs."""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn

from .loop import LinearGroup, block_linears, find_decoder_blocks, run_layerwise
from .magnitude import PruneResult
from .offload import onloaded
from .owl import outlier_ratio, owl_sparsities
from .quant import QuantGrid
from .registry import Job, Method, composing_quantizer

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
    method = config.method_spec
    needed = config.required_stats

    def compress_block(index: int, block: nn.Module, linears: dict[str, nn.Linear], groups: list[LinearGroup]) -> bool:
        grids: dict[str, QuantGrid] | None = {} if quant_grids is not None else None
        job = Job(config, sparsities[index], config.params)
        if method.prepare_block is not None:
            method.prepare_block(block, linears, groups, job)
        for group in groups:
            losses.extend(_compress_group(linears, group, method, job, grids))
        if grids:
            prefix = block_names[id(block)]
            quant_grids.update({f"{prefix}.{name}": grid for name, grid in grids.items()})
        return True

    if config.needs_calibration:
        run_layerwise(
            model, calib_ids, compress_block,
            norms=bool(needed - {"hessian"}), hessian="hessian" in needed,
            propagate=config.propagate, true_sequential=config.true_sequential, device=device,
            desc=f"kick {config.method}",
        )
    else:  # a method that reads no data: each Linear alone, block by block
        for index, block in enumerate(blocks):
            with onloaded(block, device):
                linears = block_linears(block)
                groups = [LinearGroup([name], None) for name in linears]
                compress_block(index, block, linears, groups)

    summary.update(
        achieved_sparsity=_zero_fraction(blocks),
        loss=float(sum(losses)) if all(math.isfinite(x) for x in losses) else None,  # RTN measures none
        seconds=round(time.perf_counter() - start, 3),
    )
    log.info(
        "kick: %s %s%s: %.2f%% zeros in %d Linear layers, %.1f s",
        config.method, config.pattern_str if config.prunes else "",
        f" {config.wbits}-bit" if config.quantizes else "",
        100 * summary["achieved_sparsity"], summary["layers"], summary["seconds"],
    )
    return summary


def _compress_group(linears: dict[str, nn.Linear], group: LinearGroup, method: Method, job: Job,
                    grids: dict[str, QuantGrid] | None = None) -> list[float]:
    """Prune (and/or quantize) the layers of one input-sharing group; returns their losses.
    Quantized layers' grids go into ``grids`` (by name inside the block) when given."""
    config = job.config
    layers = [linears[name] for name in group.names]
    weights = [layer.weight.data for layer in layers]
    results: list[PruneResult]
    if config.prunes:
        results = method.prune(weights, group.stats, job)
        if len(results) != len(weights):
            raise RuntimeError(f"method={method.name} returned {len(results)} results for {len(weights)} weights")
    else:
        results = [PruneResult(w, torch.ones_like(w, dtype=torch.bool), 0.0) for w in weights]
    quantizer = (composing_quantizer() if method.prunes else method) if config.quantizes else None

    losses = []
    for name, layer, result in zip(group.names, layers, results):
        weight = result.weight
        if quantizer is not None:
            quant = quantizer.quantize(weight, group.stats, job, result.mask if config.prunes else None)
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
