"""Where each row's model came from, what it measures like, and its KL: the report's provenance table.

kick's own methods are described by their settings (method, bits, group size, sparsity, calibration);
a model kick did not compress (a library's checkpoint, a load-time quantizer, a run made elsewhere) by
its ``source`` record: library, version, format, checkpoint, the compression it declares and the
effective weights kick measured (distinct values per group, zero fraction). The KL column is kick-hf's
held-out KL(dense ‖ compressed) mean, or why there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kick_models.compression.registry import is_quantizer
from kick_study.runs import Run

NOT_MEASURED = "not measured (fidelity=false, or results from before kick-hf measured it)"


@dataclass(frozen=True)
class ProvenanceRow:
    label: str
    sparsity: float
    origin: str
    artefact: str  # format and checkpoint
    declared: str
    measured: str
    kl: str


def _kv(values: Mapping[str, Any]) -> str:
    shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items() if v is not None and v != ""}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "—"


def _kick_settings(comp: Mapping[str, Any]) -> str:
    """kick's own compression as the settings that change the weights (calibration only when used)."""
    method = comp.get("method", "none")
    shown: dict[str, Any] = {}
    if comp.get("pattern") not in (None, "unstructured"):
        shown["pattern"] = comp["pattern"]
    elif comp.get("target_sparsity"):
        shown["sparsity"] = comp["target_sparsity"]
    if int(comp.get("wbits", 16) or 16) < 16:
        shown.update(wbits=comp["wbits"], group_size=comp.get("group_size"), sym=comp.get("sym"))
    shown.update(comp.get("method_args") or {})
    return f"kick {method}" + (f" ({_kv(shown)})" if shown else "")


def _measured(run: Run, source: Mapping[str, Any] | None) -> str:
    if source:
        measured = source.get("measured") if isinstance(source.get("measured"), Mapping) else {}
        shown = {k: measured.get(k) for k in ("bits_effective", "distinct_per_group_max", "zero_fraction")}
        text = _kv(shown)
        note = measured.get("note")
        return text if not note or source.get("kind") == "run" else f"{text}; {note}"
    parts = {}
    if isinstance(run.extra.get("achieved_sparsity"), (int, float)):
        # a quantizer's zeros are rounding, not pruning: named for what they are
        name = "zero_fraction" if is_quantizer(run.setting.method) else "sparsity"
        parts[name] = f"{run.extra['achieved_sparsity']:.4f}"
    if isinstance(run.extra.get("achieved_bits"), int):  # measured by kick-hf; the declared wbits are in the origin
        parts["bits_effective"] = run.extra["achieved_bits"]
    return _kv(parts)


def _kl(runs: Sequence[Run]) -> str:
    from kick_models.fidelity import KL_FORMAT  # lazily: kick_models.fidelity imports torch
    from kick_study.comparison import STALE_KL

    fids = [f for f in (r.extra.get("fidelity") for r in runs) if isinstance(f, Mapping)]
    if any(f.get("kl_format") != KL_FORMAT for f in fids if f.get("kl_windows")):
        return STALE_KL  # the same judgement as the fidelity table
    values = [f.get("kl_mean") for f in fids]
    values = [float(v) for v in values if isinstance(v, (int, float))]
    if values:
        return f"{sum(values) / len(values):.4f}" + (f" (mean of {len(values)} seeds)" if len(values) > 1 else "")
    return runs[0].extra.get("no_kl") or NOT_MEASURED


def provenance_row(runs: Sequence[Run]) -> ProvenanceRow:
    """One table row for the runs (seeds) of one (setting, sparsity)."""
    run = runs[0]
    source = run.extra.get("source") if isinstance(run.extra.get("source"), Mapping) else None
    if run.setting.is_dense:
        return ProvenanceRow("dense", 0.0, f"the model as published ({run.model})", "—", "—", "—", "0 (the reference)")
    if source and source.get("kind") != "kick":
        library = " ".join(str(source[k]) for k in ("library", "version") if source.get(k)) or "unknown library"
        origin = {"checkpoint": "pre-compressed checkpoint", "load-time": "quantized when loaded",
                  "run": "run made elsewhere, paired by --parent"}.get(str(source.get("kind")), str(source.get("kind")))
        artefact = " · ".join(str(source[k]) for k in ("format", "checkpoint") if source.get(k)) or "—"
        declared = source.get("declared") if isinstance(source.get("declared"), Mapping) else {}
        return ProvenanceRow(run.setting.label, run.sparsity, f"{origin}: {library}", artefact, _kv(declared),
                             _measured(run, source), _kl(runs))
    comp = run.extra.get("compression") or {}
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    calib = f"; calibration seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds else ""
    return ProvenanceRow(run.setting.label, run.sparsity, _kick_settings(comp) + calib, "kick-hf (compressed when loaded)",
                         "—", _measured(run, None), _kl(runs))


def provenance_rows(runs: Sequence[Run], model: str) -> list[ProvenanceRow]:
    """Dense first, then kick's own settings, then models kick did not compress (each in first-seen order)."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.model == model:
            groups.setdefault((run.setting, run.sparsity), []).append(run)
    order = sorted(groups, key=lambda k: (not k[0].is_dense, k[0].is_external, k[0].label, k[1]))
    return [provenance_row(groups[key]) for key in order]


def provenance_table(rows: Sequence[ProvenanceRow]) -> str:
    lines = ["| setting | sparsity | where it came from | format · checkpoint | declared | measured | "
             "KL(dense ‖ compressed), nats/token |", "|---|---:|---|---|---|---|---|"]
    for r in rows:
        cells = [r.label, f"{r.sparsity * 100:g}%", r.origin, r.artefact, r.declared, r.measured, r.kl]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
