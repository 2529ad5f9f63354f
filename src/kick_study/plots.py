"""PNG plots: score against sparsity with each score's own 95% interval, retention/flips per task, and
held-out KL / top-1 agreement next to perplexity. Every figure names its n."""

from __future__ import annotations

import re
from pathlib import Path

from kick_models.compression.registry import is_quantizer
from kick_study.tables import TaskView, Tolerance


def plot_file_name(view: TaskView, suffix: str = "") -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(view.model).name or view.model}__{view.task}{suffix}")
    return f"{slug.strip('-')}.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, out_dir: Path, name: str) -> Path:
    try:
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / name
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _by_setting(sparsities: list[float], settings: list) -> dict | None:
    """setting → its x position when nothing in the figure is pruned (a grid of quantizers, as in the paper's
    Table 2): every point sits at 0% sparsity, so each setting gets a column of its own instead of one stack.
    None when some point is pruned: the x axis is then sparsity."""
    if any(s > 0 for s in sparsities):
        return None
    order = list(dict.fromkeys(settings))
    return {setting: i for i, setting in enumerate(order)}


def _columns(ax, columns: dict) -> None:
    """One labelled tick per setting, for a figure whose points are all at 0% sparsity."""
    ax.set_xticks(range(len(columns)), [s.label for s in columns], rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_xlabel("setting (nothing pruned: every point at 0% sparsity)")


def _lines(comp):
    """setting → its cells sorted by sparsity."""
    out: dict = {}
    for cell in sorted(comp.cells, key=lambda c: c.sparsity):
        out.setdefault(cell.setting, []).append(cell)
    return out


def _n_text(ns: list[int]) -> str:
    return f"n = {ns[0]} items" if min(ns) == max(ns) else f"n = {min(ns)}–{max(ns)} items"


def plot_view(view: TaskView, out_dir: Path, tol: Tolerance, comp=None) -> Path:
    """Score against sparsity, one line per setting; with per-item samples every point carries its own
    95% interval (the differences from dense, and their paired intervals, are in the report's tables)
    and the title its n."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    cells = {} if comp is None else {(c.setting, c.sparsity): c for c in comp.cells}
    band = view.band(tol, getattr(comp, "chance", 0.0))
    if view.dense is not None and band is not None:
        own = getattr(comp, "dense_interval", None)
        span = f" [{own.low:.3g}, {own.high:.3g}]" if own is not None else ""
        ax.axhline(view.dense, color="black", linestyle="--", linewidth=1.2, label=f"dense ({view.dense:.3g}{span})")
        ax.axhspan(band[0], band[1], color="grey", alpha=0.2, label=f"within {tol.describe()}")
    ns: list[int] = []
    columns = _by_setting([sp for c in view.curves for sp, _ in c.points], [c.setting for c in view.curves])
    for curve in view.curves:
        xs = [columns[curve.setting] if columns else s * 100 for s, _ in curve.points]
        ys = [v for _, v in curve.points]
        found = [cells.get((curve.setting, s)) for s, _ in curve.points]
        if all(c is not None and c.score_interval is not None for c in found):
            ns += [c.score_n for c in found]
            low = [max(0.0, y - c.score_interval.low) for y, c in zip(ys, found)]
            high = [max(0.0, c.score_interval.high - y) for y, c in zip(ys, found)]
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", linewidth=1.5, capsize=3, label=curve.setting.label)
            continue
        pruning_line = not is_quantizer(curve.setting.method) and not curve.setting.is_external
        if view.dense is not None and curve.setting.pattern == "unstructured" and pruning_line and not columns:
            xs, ys = [0.0, *xs], [view.dense, *ys]  # every pruning line starts at the dense model
        ax.plot(xs, ys, marker="o", linewidth=1.5, label=curve.setting.label)
    if not view.higher_better:
        ax.set_yscale("log")
    note = (f"{_n_text(ns)}, 95% interval of each score" if ns
            else "no per-item samples: points without intervals" if view.higher_better else "point values")
    if columns:
        _columns(ax, columns)
    else:
        ax.set_xlabel("sparsity (%)")
    ax.set_ylabel(view.metric_name)
    ax.set_title(f"{view.task} — {Path(view.model).name or view.model}\n({note})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, out_dir, plot_file_name(view))


def plot_retention(view: TaskView, comp, out_dir: Path) -> Path | None:
    """Retention of dense-correct items (with 95% intervals) and flip counts against sparsity."""
    by_setting = _lines(comp)
    order = [c.setting for c in view.curves if c.setting in by_setting]  # same colours as the score plot
    lines = {s: [c for c in by_setting[s] if c.retention is not None and c.flips is not None] for s in order}
    lines = {s: cells for s, cells in lines.items() if cells}
    if not lines:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0), dpi=110)
    columns = _by_setting([c.sparsity for cells in lines.values() for c in cells], list(lines))
    for setting, cells in lines.items():
        xs = [columns[setting] if columns else c.sparsity * 100 for c in cells]
        ys = [c.retention.estimate * 100 for c in cells]
        low = [(c.retention.estimate - c.retention.low) * 100 for c in cells]
        high = [(c.retention.high - c.retention.estimate) * 100 for c in cells]
        left.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=setting.label)
        line = right.plot(xs, [c.flips.lost for c in cells], marker="v", label=f"{setting.label} right→wrong")
        right.plot(xs, [c.flips.gained for c in cells], marker="^", linestyle=":", color=line[0].get_color(),
                   label=f"{setting.label} wrong→right")
    dense_right = next(iter(lines.values()))[0].flips.dense_right
    left.set_title(f"retention of dense-correct items (n = {dense_right} of {comp.n})", fontsize=10)
    left.set_ylabel("still correct (%)")
    left.set_ylim(-5, 105)
    right.set_title(f"answer flips vs dense (n = {comp.n} items, mean over seeds)", fontsize=10)
    right.set_ylabel("items")
    for ax in (left, right):
        if columns:
            _columns(ax, columns)
        else:
            ax.set_xlabel("sparsity (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{view.task} — {Path(view.model).name or view.model}", fontsize=11)
    return _save(fig, plt, out_dir, plot_file_name(view, "__retention"))


def plot_fidelity(model: str, rows, ppl_view: TaskView | None, out_dir: Path) -> Path | None:
    """Held-out KL(dense ‖ compressed) and top-1 agreement (95% intervals over windows and seeds) beside perplexity."""
    measured = [r for r in rows if r.kl is not None and not r.setting.is_dense]
    if not measured:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.0), dpi=110)
    lines: dict = {}
    for r in sorted(measured, key=lambda r: r.sparsity):
        lines.setdefault(r.setting, []).append(r)
    curves = ppl_view.curves if ppl_view is not None else []
    order = list(dict.fromkeys([c.setting for c in curves] + list(lines)))  # the perplexity view's order first
    colour = {setting: f"C{i % 10}" for i, setting in enumerate(order)}  # one colour per setting in all three panels
    columns = _by_setting([r.sparsity for r in measured] + [sp for c in curves for sp, _ in c.points], order)
    for setting, cells in sorted(lines.items(), key=lambda kv: order.index(kv[0])):
        xs = [columns[setting] if columns else r.sparsity * 100 for r in cells]
        for ax, get, scale in ((axes[0], lambda r: r.kl, 1.0), (axes[1], lambda r: r.top1, 100.0)):
            ys = [get(r).estimate * scale for r in cells]
            low = [(get(r).estimate - get(r).low) * scale for r in cells]
            high = [(get(r).high - get(r).estimate) * scale for r in cells]
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=colour[setting], label=setting.label)
    first = measured[0]
    axes[0].set_title(f"KL(dense ‖ compressed), nats/token\n(n = {first.tokens} tokens in {first.windows} windows, "
                      f"top-{first.top_k} + rest)", fontsize=9)
    axes[1].set_title("same most likely next token as dense (%)\n(95% intervals over windows and seeds)", fontsize=9)
    if ppl_view is not None:
        if ppl_view.dense is not None:
            axes[2].axhline(ppl_view.dense, color="black", linestyle="--", linewidth=1.2, label=f"dense ({ppl_view.dense:.3g})")
        for curve in curves:
            xs = [columns[curve.setting] if columns else sp * 100 for sp, _ in curve.points]
            axes[2].plot(xs, [v for _, v in curve.points], marker="o", color=colour[curve.setting], label=curve.setting.label)
        axes[2].set_yscale("log")
        axes[2].set_title(f"{ppl_view.task} {ppl_view.metric_name}\n(point values)", fontsize=9)
    else:
        axes[2].set_axis_off()
    for ax in axes[: 3 if ppl_view is not None else 2]:
        if columns:
            _columns(ax, columns)
        else:
            ax.set_xlabel("sparsity (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"distribution-level fidelity to dense — {Path(model).name or model}", fontsize=11)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(model).name or model}__fidelity").strip("-")
    return _save(fig, plt, out_dir, f"{slug}.png")
