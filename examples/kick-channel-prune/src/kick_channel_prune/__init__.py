"""Example kick plug-in: prune whole input channels by ‖W_:j‖₂ · ‖X_j‖₂^p (a structured Wanda variant)."""

from __future__ import annotations

from kick_models.compression.registry import Job, Method, Param

__version__ = "0.1.0"


def channel_mask(W, col_norms, sparsity: float, power: float = 1.0):
    """Keep-mask [out, in] that drops the ⌊sparsity · in⌋ input columns with the lowest
    ‖W_:j‖₂ · ‖X_j‖₂^power (ties by position), whole columns at a time."""
    import torch

    from kick_models.compression.masks import prune_count

    score = W.float().norm(dim=0) * col_norms.float().to(W.device).pow(power)  # [in]
    drop = torch.argsort(score, stable=True)[: prune_count(sparsity, W.shape[1])]
    keep = torch.ones_like(W, dtype=torch.bool)
    keep[:, drop] = False
    return keep


def prune(weights, stats, job: Job):
    """kick's contract: the group's weights and shared input statistics in, one PruneResult each out."""
    from kick_models.compression.magnitude import apply_mask

    norms = stats.col_norms()
    power = job.params["channel_power"]
    out = []
    for W in weights:
        keep = channel_mask(W, norms, job.sparsity, power)
        out.append(apply_mask(W, keep, W.float().square() * norms.float().square()[None, :]))
    return out


def _unstructured_only(config):
    if config.pattern is not None:
        return ("pattern", config.pattern_str, "unstructured with method=channel (it drops whole input channels)")
    return None


METHOD = Method(
    name="channel",
    kind="prune",
    version=__version__,
    summary="input-channel pruning by ‖W_:j‖·‖X_j‖^p (example plug-in)",
    stats=frozenset({"col_norms"}),
    params=(Param("channel_power", float, 1.0, "exponent p of the activation norm", low=0.0, high=4.0),),
    prune=prune,
    check=_unstructured_only,
)
