"""PNG plots of score against sparsity: one line per method, dense as a line with its matching band."""

from __future__ import annotations

import re
from pathlib import Path

from kick_models.compression.registry import is_quantizer
from kick_study.tables import TaskView, Tolerance


def plot_file_name(view: TaskView) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(view.model).name or view.model}__{view.task}")
    return f"{slug.strip('-')}.png"


def plot_view(view: TaskView, out_dir: Path, tol: Tolerance) -> Path:
    """Write one plot for ``view`` into ``out_dir`` and return its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        band = view.band(tol)
        if view.dense is not None and band is not None:
            ax.axhline(view.dense, color="black", linestyle="--", linewidth=1.2, label=f"dense ({view.dense:.3g})")
            ax.axhspan(band[0], band[1], color="grey", alpha=0.2, label="matches dense")
        for curve in view.curves:
            xs = [s * 100 for s, _ in curve.points]
            ys = [v for _, v in curve.points]
            if view.dense is not None and curve.setting.pattern == "unstructured" and not is_quantizer(curve.setting.method):
                xs, ys = [0.0, *xs], [view.dense, *ys]  # every pruning line starts at the dense model
            ax.plot(xs, ys, marker="o", linewidth=1.5, label=curve.setting.label)
        if not view.higher_better:
            ax.set_yscale("log")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(view.metric_name)
        ax.set_title(f"{view.task} — {Path(view.model).name or view.model}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / plot_file_name(view)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
