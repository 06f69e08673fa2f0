"""What every figure shares: atomic PNG + PDF output, tap labels, panel grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

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
    """A figure with n panels in `rows` rows (unused axes hidden) and the flat list of its axes."""
    cols = -(-n // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()
