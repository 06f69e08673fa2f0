"""What every figure shares: atomic PNG + PDF output, tap labels, panel grids, titles naming the dataset,
integer ticks, legends kept off the data, plain numbers on log axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from seelike.io import atomic_write


def save_figure(fig, png: str | Path, pdf: str | Path | None = None) -> None:
    """Write PNG (and PDF) atomically, then close the figure."""
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        if path is None:
            continue
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    plt.close(fig)


def short_tap_label(name: str) -> str:
    """'blocks.3.attn' → '3 attn', 'layer2.0.conv1' → 'layer2.0 conv1', 'stages.1.blocks.0.out' → 's1.b0 out'."""
    if "." not in name:
        return name
    prefix, kind = name.rsplit(".", 1)
    prefix = prefix.replace("stages.", "s").replace("blocks.", "b" if "stages" in name else "")
    return f"{prefix} {kind}"


def tick_labels(names: list[str], max_ticks: int = 48) -> tuple[list[int], list[str]]:
    """Label taps by block and kind; thin the ticks on large models."""
    step = max(1, -(-len(names) // max_ticks))
    idx = list(range(0, len(names), step))
    return idx, [short_tap_label(names[i]) for i in idx]


def panel_grid(n: int, width: float = 4.2, height: float = 3.4, rows: int = 1):
    """A figure with n panels in `rows` rows (unused axes hidden) and the flat list of its axes (which may hold
    more axes than panels: callers zip it with their panels with strict=False)."""
    cols = -(-n // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def with_dataset(title: str, dataset: str | None) -> str:
    """`title` followed by the images it was measured on, when the caller knows them."""
    return f"{title} [{dataset}]" if dataset else title


def integer_ticks(ax, axis: str = "x", max_ticks: int = 13) -> None:
    """Whole-number ticks only (head ranks, block and sublayer indices), at most about `max_ticks` of them."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(nbins=max_ticks, integer=True, min_n_ticks=1))


def legend_outside(ax, title: str | None = None, fontsize: float = 7, **kw):
    """The axes' legend to the right of its panel, so it never covers a data point."""
    return ax.legend(
        title=title, fontsize=fontsize, title_fontsize=fontsize, loc="upper left",
        bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False, **kw,
    )  # fmt: skip


def plain_log_axis(ax, axis: str = "y") -> None:
    """Ticks of a log axis labelled as plain numbers (0.2, 1, 5), not 2×10⁻¹: at 1, 2, 5 × 10^k, or at every
    integer multiple of 10^k when the axis spans less than about a decade. Call it once the data are drawn."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    narrow = lo > 0 and hi / lo < 15
    subs = tuple(float(k) for k in range(1, 10)) if narrow else (1.0, 2.0, 5.0)
    target.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    target.set_major_formatter(FuncFormatter(lambda v, _pos=None: f"{v:.3g}"))
    target.set_minor_formatter(NullFormatter())
