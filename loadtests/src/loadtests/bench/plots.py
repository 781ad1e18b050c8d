"""PNG charts of benchmark results (matplotlib, headless ``Agg`` backend).

One figure per metric, one panel per endpoint, one line per server variant, connections on a log-2
x axis: the shape the async-vs-sync argument is read from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

__all__ = ["Series", "plot_vs_connections"]

# label → [(connections, value), ...]
Series = Mapping[str, Sequence[tuple[int, float]]]


def plot_vs_connections(
    panels: Mapping[str, Series],
    path: Path,
    *,
    title: str,
    ylabel: str,
    log_y: bool = False,
) -> Path:
    """Save a row of line charts (one per ``panels`` entry) to ``path``; returns ``path``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (panel_title, series) in zip(axes[0], panels.items(), strict=True):
        for label, points in series.items():
            xs = [x for x, _ in points]
            ys = [y for _, y in points]
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(panel_title)
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
