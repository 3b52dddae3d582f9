"""Report figures, rendered with matplotlib's Agg backend to PNG bytes.

Each function builds its own :class:`matplotlib.figure.Figure` (no pyplot
global state, safe in threads and without a display) and returns the PNG bytes;
the PNGs carry no timestamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["sample_grid", "accuracy_heatmap", "grouped_bars", "distributions"]

_LESION = "#39d353"
_LOGO = "#ff4fd8"


def sample_grid(
    originals: np.ndarray,
    protected: np.ndarray,
    restored: np.ndarray,
    lesion_boxes: Sequence[Sequence[Sequence[int]]],
    logo_boxes: Sequence[Sequence[int] | None],
    row_titles: Sequence[str],
    *,
    restored_title: str = "restored (licensed)",
) -> bytes:
    """One row per image: original | protected | lesion boxes + logo box | restored.

    Args:
        originals, protected, restored: uint8 ``[R, H, W, 3]`` for the R rows.
        lesion_boxes: per row, the lesion boxes ``(x0, y0, x1, y1)``.
        logo_boxes: per row, the logo box, or None when no logo was placed.
        row_titles: a label per row (for example the grade and the predictions).
        restored_title: heading of the last column.
    """
    rows = len(originals)
    if not rows:
        return _empty("no samples")
    cols = ("original", "protected", "lesion boxes (green) / logo (magenta)", restored_title)
    fig = Figure(figsize=(10.0, 2.6 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, 4, squeeze=False)
    for r in range(rows):
        panels = (originals[r], protected[r], protected[r], restored[r])
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=8)
        ax = axes[r, 2]
        for x0, y0, x1, y1 in lesion_boxes[r]:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=_LESION, lw=1.0))
        if logo_boxes[r] is not None:
            x0, y0, x1, y1 = logo_boxes[r]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=_LOGO, lw=1.6))
    return _png(fig)


def accuracy_heatmap(
    matrix: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    row_label: str = "source",
    col_label: str = "target model",
) -> bytes:
    """Heat map of accuracies in ``[0, 1]``: rows = sources, columns = targets (cells in %)."""
    rows = list(matrix)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in matrix[r] if c not in cols]
    if not rows or not cols:
        return _empty("no data")
    data = np.array([[_num(matrix[r].get(c)) for c in cols] for r in rows], dtype=float)
    fig = Figure(figsize=(max(5.0, 1.1 * len(cols) + 3.0), max(2.5, 0.55 * len(rows) + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(data) * 100.0, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = data[i, j]
            ax.text(j, i, "n/a" if math.isnan(v) else f"{100 * v:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def grouped_bars(
    data: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    reference: Mapping[str, float] | None = None,
    reference_label: str = "clean",
    ylabel: str = "accuracy (%)",
    target: float | None = None,
) -> bytes:
    """Grouped bar chart of accuracies: one group per model, one bar per condition.

    Args:
        data: model -> condition -> accuracy in ``[0, 1]``.
        title: figure title.
        reference: optional model -> accuracy drawn as a black tick per group
            (for example the clean accuracy).
        reference_label: legend entry of the reference ticks.
        ylabel: y axis label.
        target: optional horizontal line (a target accuracy in ``[0, 1]``).
    """
    models = list(data)
    conds: list[str] = []
    for m in models:
        conds += [c for c in data[m] if c not in conds]
    if not models or not conds:
        return _empty("no data")
    fig = Figure(figsize=(max(6.0, 0.32 * len(models) * len(conds) + 2.5), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(conds)
    xs = np.arange(len(models))
    cmap = _colours(len(conds))
    for k, c in enumerate(conds):
        vals = [100.0 * _num(data[m].get(c)) for m in models]
        ax.bar(xs - 0.4 + width * (k + 0.5), vals, width, label=c, color=cmap[k])
    if reference:
        for i, m in enumerate(models):
            if m in reference:
                ax.hlines(100.0 * _num(reference[m]), i - 0.42, i + 0.42, colors="black", lw=1.5,
                          label=reference_label if i == 0 else None)
    if target is not None:
        ax.axhline(100.0 * target, color="#c00", ls="--", lw=1, label=f"target {100 * target:.0f} %")
    ax.set_xticks(xs, models, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncols=min(len(conds) + 2, 6), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _png(fig)


def distributions(panels: Mapping[str, Sequence[float]], *, bins: int = 20) -> bytes:
    """Side-by-side histograms, one per named series (e.g. logo area %, opacity, queries)."""
    if not panels:
        return _empty("no data")
    fig = Figure(figsize=(3.4 * len(panels), 2.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, values) in zip(axes, panels.items()):
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
        if v.size:
            ax.hist(v, bins=bins, color="#4c78a8", edgecolor="white")
            ax.axvline(float(np.median(v)), color="#c00", lw=1, label=f"median {np.median(v):.3g}")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(name, fontsize=9)
        ax.set_ylabel("images", fontsize=9)
    return _png(fig)


def _colours(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _empty(text: str) -> bytes:
    fig = Figure(figsize=(4, 1.2))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return _png(fig)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()
