"""compress_model: turn a CompressionConfig into calls of its registered method's tensor functions,
driven by the one layer-wise loop, over every weight matrix of the decoder blocks (Linear, Conv1D,
each expert of a fused mixture-of-experts module). The method's registry entry says which
statistics it needs."""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn

from .blocks import BlockLayout, BlockMatrix, block_layout, find_decoder_blocks, summarize, tally
from .gather import LinearGroup
from .loop import LoopOptions, run_layerwise
from .method import PruneResult
from .offload import onloaded
from .owl import outlier_ratio, owl_sparsities
from .quant import QuantGrid
from .registry import Job, Method, composing_quantizer
from .stats import InputStats

log = logging.getLogger(__name__)


NO_TOKEN_HANDLING = ("data-free: the method's own kernel with a uniform statistic (unit input norms, zero "
                     "mean, unit variance, identity Hessian), i.e. row-wise magnitude for Wanda, tile-wise "
                     "magnitude for SparseGPT, round-to-nearest for GPTQ; sparsity, N:M and bit-width hold as "
                     "for every other matrix")


def is_routed_expert(m: BlockMatrix) -> bool:
    """A routed expert's matrix: a fused expert, or a Linear inside an ``experts`` list (older
    per-expert layouts). Shared experts see every token and are compressed like any MLP."""
    return m.kind == "expert" or "experts" in m.name.split(".")


def preflight(model: nn.Module, blocks: nn.ModuleList, config, keep_grids: bool = False) -> list[BlockLayout]:
    """Every block's layout, or an error -- before any calibration -- when a block holds weight
    matrices kick cannot compress (unless they are experts and ``skip_experts`` is set) or when
    GPTQ grids are wanted for matrices a packed export cannot hold."""
    layouts = [block_layout(b) for b in blocks]
    skip = getattr(config, "skip_experts", False)
    model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    bad = {f"{i}.{n}": what for i, lay in enumerate(layouts) for n, (what, _) in lay.unsupported.items()
           if not (skip and what.startswith("fused expert"))}
    if bad:
        names = ", ".join(f"{n} ({w})" for n, w in list(bad.items())[:4])
        hint = (" Pass skip_experts=true to leave the experts dense (recorded in the results)."
                if any(w.startswith("fused expert") for w in bad.values()) else "")
        raise ValueError(
            f"kick cannot compress every weight matrix of {model_type}'s decoder blocks: {len(bad)} matrices "
            f"of unsupported types would stay dense, e.g. {names}. Supported: nn.Linear, Conv1D and fused "
            f"experts of transformers' use_experts_implementation layout.{hint}"
        )
    if keep_grids:
        odd = [f"{i}.{n}" for i, lay in enumerate(layouts) for n, m in lay.matrices.items()
               if m.kind != "linear" and not (skip and is_routed_expert(m))]
        if odd:
            raise ValueError(
                f"keep_grids / --format gptq packs nn.Linear layers only, but {model_type} has {len(odd)} other "
                f"matrices to quantize (e.g. {odd[0]}); export it with --format dense"
            )
    return layouts


def compress_model(model: nn.Module, config, calib_ids: torch.Tensor | None, device=None,
                   quant_grids: dict[str, QuantGrid] | None = None) -> dict:
    """Compress the weight matrices of ``model``'s decoder blocks in place (Linear, Conv1D, each
    expert of fused MoE modules); embeddings, norms, routers and lm_head are never touched.
    Returns a JSON-able summary (see the team contract), with the accounting over *every* block
    matrix in ``matrices``.

    When quantizing, ``quant_grids`` (if given) receives each Linear's grid under its module name
    (``model.layers.3.mlp.up_proj``), which a packed GPTQ export needs.
    """
    start = time.perf_counter()
    blocks = find_decoder_blocks(model)
    block_names = {id(m): name for name, m in model.named_modules()}
    prefixes = [block_names[id(b)] for b in blocks]
    layouts = preflight(model, blocks, config, keep_grids=quant_grids is not None and not config.is_noop)
    skip = getattr(config, "skip_experts", False)
    targets = [{n: m for n, m in lay.matrices.items() if not (skip and is_routed_expert(m))} for lay in layouts]
    summary = {
        "method": config.method,
        "pattern": config.pattern_str,
        "target_sparsity": config.target_sparsity,
        "sparsity_profile": config.sparsity_profile,
        "propagate": config.propagate,
        "wbits": config.wbits,
        "skip_experts": skip,
        "layers": sum(len(t) for t in targets),
    }
    if config.is_noop:
        summary.update(_accounting(blocks, layouts, prefixes, set()), seconds=time.perf_counter() - start)
        return summary
    if summary["layers"] == 0:
        raise ValueError(f"the decoder blocks of {type(model).__name__} contain no compressible matrices; nothing to compress")
    if config.needs_calibration and calib_ids is None:
        raise ValueError(f"method={config.method} (wbits={config.wbits}) needs calibration ids; got None")

    sparsities = [config.target_sparsity] * len(blocks)
    if config.prunes and config.pattern is None and config.sparsity_profile == "owl":
        ratios = _owl_ratios(model, blocks, config, calib_ids, device)
        sparsities = owl_sparsities(ratios, config.sparsity, config.owl_lambda)
        summary["block_sparsity"] = [round(s, 6) for s in sparsities]

    losses: list[float] = []
    done: set[str] = set()
    no_tokens: list[str] = []
    method = config.method_spec
    needed = config.required_stats

    def compress_block(index: int, block: nn.Module, linears: dict[str, BlockMatrix], groups: list[LinearGroup]) -> bool:
        grids: dict[str, QuantGrid] | None = {} if quant_grids is not None else None
        job = Job(config, sparsities[index], config.params)
        todo = []
        for group in groups:
            names = [n for n in group.names if n in targets[index]]
            if not names:
                continue
            stats = group.stats
            if stats is not None and stats.tokens == 0:
                no_tokens.extend(f"{prefixes[index]}.{n}" for n in names)
                first = linears[names[0]]
                stats = InputStats.uniform(first.in_features, norms=bool(needed - {"hessian"}),
                                           hessian="hessian" in needed, device=first.view().device)
            todo.append(LinearGroup(names, stats, group.expert))
        if method.prepare_block is not None:  # block-level rewrites (AWQ's scale folding): Linear groups only
            plain = {n: m.module for n, m in linears.items() if m.kind == "linear"}
            method.prepare_block(block, plain, [g for g in todo if all(n in plain for n in g.names)], job)
        for group in todo:
            losses.extend(_compress_group(linears, group, method, job, grids))
            done.update(f"{prefixes[index]}.{n}" for n in group.names)
        if grids:
            quant_grids.update({f"{prefixes[index]}.{name}": grid for name, grid in grids.items()})
        return True

    if config.needs_calibration:
        options = LoopOptions(norms=bool(needed - {"hessian"}), hessian="hessian" in needed, propagate=config.propagate,
                              true_sequential=config.true_sequential, device=device, desc=f"kick {config.method}")
        run_layerwise(model, calib_ids, compress_block, options)
    else:  # a method that reads no data: each matrix alone, block by block
        for index, block in enumerate(blocks):
            with onloaded(block, device):
                compress_block(index, block, targets[index], [LinearGroup([n], None) for n in targets[index]])

    summary.update(_accounting(blocks, layouts, prefixes, done))
    if no_tokens:
        summary["no_calibration_tokens"] = {"count": len(no_tokens), "handling": NO_TOKEN_HANDLING,
                                            "matrices": no_tokens[:50]}
        log.warning("kick: %d matrices received no calibration tokens (e.g. %s); compressed %s",
                    len(no_tokens), no_tokens[0], NO_TOKEN_HANDLING)
    summary.update(
        loss=float(sum(losses)) if all(math.isfinite(x) for x in losses) else None,  # RTN measures none
        seconds=round(time.perf_counter() - start, 3),
    )
    log.info(
        "kick: %s %s%s: %.2f%% zeros over all %d block matrices (%d compressed), %.1f s",
        config.method, config.pattern_str if config.prunes else "",
        f" {config.wbits}-bit" if config.quantizes else "",
        100 * summary["achieved_sparsity"], summary["matrices"]["count"], len(done), summary["seconds"],
    )
    return summary


def _accounting(blocks, layouts, prefixes, done: set[str]) -> dict:
    """``achieved_sparsity`` over every matrix of every block, and the breakdown behind it."""
    rows: dict[str, dict] = {}
    for block, layout, prefix in zip(blocks, layouts, prefixes):
        with onloaded(block, write_back=False):  # an offloaded block: count what its offload map holds
            tally(rows, layout, prefix, done)
    acc = summarize(rows)
    acc["compressed"] = len(done)
    return {"achieved_sparsity": acc.pop("sparsity"), "matrices": acc}


def _compress_group(linears: dict[str, BlockMatrix], group: LinearGroup, method: Method, job: Job,
                    grids: dict[str, QuantGrid] | None = None) -> list[float]:
    """Prune (and/or quantize) the matrices of one input-sharing group; returns their losses.
    Quantized layers' grids go into ``grids`` (by name inside the block) when given."""
    config = job.config
    layers = [linears[name] for name in group.names]
    weights = [layer.view() for layer in layers]  # [out, in] views of the live parameters
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
        layer.view().copy_(weight)
    return losses


def _owl_ratios(model, blocks, config, calib_ids, device) -> list[float]:
    """Outlier ratio per block from Wanda scores on the dense model (|W| alone without data)."""
    ratios: list[float] = []
    if calib_ids is None:
        for block in blocks:
            with onloaded(block, device):
                ratios.append(outlier_ratio([m.view().abs() for m in block_layout(block).matrices.values()],
                                            config.owl_m))
        return ratios

    def measure(index, block, linears, groups) -> bool:
        scores = [
            linears[name].view().float().abs()
            * (g.stats.col_norms() if g.stats.tokens
               else torch.ones(linears[name].in_features, device=linears[name].view().device))[None, :]
            for g in groups for name in g.names
        ]
        ratios.append(outlier_ratio(scores, config.owl_m))
        return False

    run_layerwise(model, calib_ids, measure, LoopOptions(norms=True, propagate="dense", device=device, desc="kick owl"))
    return ratios
