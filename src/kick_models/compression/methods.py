"""The built-in compression methods as registry entries: each binds a kernel module's pure tensor
function to the statistics it needs, its parameters and its version."""

from __future__ import annotations

from .method import Job, Method, Param

COMPOSING_QUANTIZER = "gptq"  # what a pruning method's wbits < 16 runs after pruning
SWEEP_DEFAULT_METHODS = ("magnitude", "wanda", "sparsegpt")  # LLM-KICK's pruners: kick-sweep's default grid
_QUANT_FIELDS = frozenset({"wbits", "group_size", "sym"})


# ------------------------------------------------------------------ pruners
def _magnitude(weights, stats, job: Job):
    from .magnitude import prune_magnitude

    return [prune_magnitude(w, sparsity=job.sparsity, pattern=job.pattern) for w in weights]


def _wanda(weights, stats, job: Job):
    from .wanda import prune_wanda

    norms = stats.col_norms()
    return [prune_wanda(w, norms, sparsity=job.sparsity, pattern=job.pattern) for w in weights]


def _sparsegpt(weights, stats, job: Job):
    import torch

    from .method import PruneResult
    from .sparsegpt import prune_sparsegpt

    rows = [w.shape[0] for w in weights]  # one sweep for the group, each matrix its own tiles
    joint = prune_sparsegpt(torch.cat(weights), stats.hessian(), sparsity=job.sparsity, pattern=job.pattern,
                            blocksize=job.config.blocksize, damp=job.config.damp, row_groups=rows)
    return [PruneResult(w, m, joint.loss / len(rows))
            for w, m in zip(joint.weight.split(rows), joint.mask.split(rows))]


def _ria(weights, stats, job: Job):
    from .ria import prune_ria

    norms, p = stats.col_norms(), job.params
    return [prune_ria(w, norms, sparsity=job.sparsity, pattern=job.pattern, alpha=p["ria_a"],
                      group=p["ria_group"], permute=p["ria_permute"]) for w in weights]


def _dsnot(weights, stats, job: Job):
    from .dsnot import prune_dsnot

    p = job.params
    H = stats.hessian()
    # the reference's threshold (0.1) is on a sum over a 2048-token sequence; ours is per token
    return [prune_dsnot(w, stats.col_norms(), stats.mean(), stats.var(), H, sparsity=job.sparsity,
                        pattern=job.pattern, init=p["dsnot_init"], damp=job.config.damp,
                        max_cycles=p["dsnot_cycles"], threshold=p["dsnot_threshold"],
                        var_power=p["dsnot_var_power"], same_sign=p["dsnot_same_sign"]) for w in weights]


# ------------------------------------------------------------------ quantizers
def _gptq(weight, stats, job: Job, mask):
    from .gptq import quantize_gptq

    c = job.config
    return quantize_gptq(weight, stats.hessian(), bits=c.wbits, group_size=c.group_size, sym=c.sym,
                         act_order=c.act_order, damp=c.damp, blocksize=c.blocksize, mask=mask)


def _rtn(weight, stats, job: Job, mask):
    from .quant import quantize_rtn

    c = job.config
    return quantize_rtn(weight, bits=c.wbits, group_size=c.group_size, sym=c.sym)


def _awq_prepare(block, linears, groups, job: Job):
    from .awq import awq_block

    c = job.config
    awq_block(block, linears, groups, bits=c.wbits, group_size=c.group_size, sym=c.sym,
              n_grid=job.params["awq_grid"])


def _no_true_sequential(config):
    if config.true_sequential:
        return ("true_sequential", True,
                "false with method=awq (AWQ searches every scale of a block before any of it is quantized)")
    return None


def _permute_needs_pattern(config):
    if config.params.get("ria_permute") and config.pattern is None:
        return ("ria_permute", True, "false with unstructured sparsity, or pattern=N:M with it (the channel "
                "reallocation chooses N:M groups; unstructured masks have none)")
    return None


MAGNITUDE = Method(
    name="magnitude", kind="prune", version="1",
    summary="smallest |W| pruned, one threshold per matrix (LLM-KICK's baseline); no data",
    prune=_magnitude,
)
WANDA = Method(
    name="wanda", kind="prune", version="1", stats=frozenset({"col_norms"}),
    summary="Wanda (Sun et al. 2023): |W_ij|·‖X_j‖ compared per output row",
    prune=_wanda,
)
SPARSEGPT = Method(
    name="sparsegpt", kind="prune", version="1", stats=frozenset({"hessian"}),
    uses=frozenset({"damp", "blocksize"}),
    summary="SparseGPT (Frantar & Alistarh 2023): OBS pruning with inverse-Hessian weight updates",
    prune=_sparsegpt,
)
RIA = Method(
    name="ria", kind="prune", version="1", stats=frozenset({"col_norms"}),
    summary="RIA (Zhang et al. 2024): relative importance × ‖X_j‖^a",
    params=(
        Param("ria_a", float, 0.5, "exponent a of the activation norm", low=0.0, high=4.0),
        Param("ria_group", str, "matrix", "comparison group of unstructured masks", choices=("matrix", "row")),
        Param("ria_permute", bool, False, "N:M only: RIA's channel reallocation before choosing the groups"),
    ),
    prune=_ria, check=_permute_needs_pattern,
)
DSNOT = Method(
    name="dsnot", kind="prune", version="1", stats=frozenset({"col_norms", "mean", "hessian"}),
    uses=frozenset({"damp"}),
    summary="DSnoT (Zhang et al. 2024): prune-and-grow swaps on a Wanda or SparseGPT mask",
    params=(
        Param("dsnot_init", str, "wanda", "the starting mask", choices=("wanda", "sparsegpt")),
        Param("dsnot_cycles", int, 50, "maximum swap cycles per layer", low=0, high=100000),
        Param("dsnot_threshold", float, 5e-5, "stop a row once |expected error| is this small (per token)",
              low=0.0),
        Param("dsnot_var_power", float, 1.0, "regrowing ranks |W·E[x]| / Var[x]^p", low=0.0, high=4.0),
        Param("dsnot_same_sign", bool, True, "stop a row before a swap flips the sign of its error"),
    ),
    prune=_dsnot,
)
GPTQ = Method(
    name="gptq", kind="quantize", version="1", stats=frozenset({"hessian"}), default_calib="wikitext2",
    uses=_QUANT_FIELDS | {"act_order", "damp", "blocksize"},
    summary="GPTQ (Frantar et al. 2023): column-wise quantization with inverse-Hessian error feedback",
    quantize=_gptq,
)
RTN = Method(
    name="rtn", kind="quantize", version="1", uses=_QUANT_FIELDS,
    summary="round-to-nearest on kick's min-max grid (GPTQ's baseline); no data",
    quantize=_rtn,
)
AWQ = Method(
    name="awq", kind="quantize", version="1", stats=frozenset({"abs_mean", "hessian"}), uses=_QUANT_FIELDS,
    summary="AWQ (Lin et al. 2024): activation-aware scales folded into the producer, then RTN",
    params=(Param("awq_grid", int, 20, "grid points of the scale exponent over [0, 1)", low=1, high=1000),),
    quantize=_rtn, prepare_block=_awq_prepare, check=_no_true_sequential,
)

BUILTIN_METHODS = (MAGNITUDE, WANDA, SPARSEGPT, RIA, DSNOT, GPTQ, RTN, AWQ)
