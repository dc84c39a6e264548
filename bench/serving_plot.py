"""The serving benchmark's plot: stored-tile throughput and latency against connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.wrk import WrkResult

if TYPE_CHECKING:
    from bench.serving_report import Run


def plot(runs: Sequence[Run], path: Path) -> bool:
    """The stored-tile runs against connections; False (no plot) without runs or matplotlib."""
    connections = sorted({p.connections for run in runs for p in run.points})
    if not connections:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import ScalarFormatter
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6))
    panels: list[tuple[str, Callable[[WrkResult], float]]] = [
        ("req/s", lambda r: r.rps),
        ("p50 ms", lambda r: r.p50_ms),
        ("p99 ms", lambda r: r.p99_ms),
    ]
    for run in runs:
        xs = [p.connections for p in run.points]
        style = "--" if run.key.endswith("-dzi") else "-"
        for ax, (_, value) in zip(axes, panels, strict=True):
            ax.plot(xs, [value(p.result) for p in run.points], style, marker="o", label=run.name)
    for ax, (label, _) in zip(axes, panels, strict=True):
        ax.set(xscale="log", yscale="log", xlabel="connections (wrk)", ylabel=label)
        ax.set_xticks(connections)
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Random stored 256x256 JPEG tiles of a 50,176-frame level, 2 workers, loopback")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
