"""The lab's picture: per guarantee, side by side, what the faults did to the data (lost and
duplicated records) and what the guarantee costs (records/s, CPU per record, latency).

matplotlib is optional (the `lab` extra): `require()` fails with one line before the lab runs
rather than after minutes of work. The Agg backend draws without a display.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from connectors.ops.command import CommandError

COLOURS = {"lost": "#c0392b", "duplicated": "#e67e22", "p50": "#5d8aa8", "p99": "#1f3a5f"}
BAR = "#4a7a5c"


def require() -> None:
    """Raise a one-line CommandError unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError(
            "--plot needs matplotlib, which is not installed: install waxlake's lab extra "
            "(pip install -e '.[lab]' from a clone)"
        ) from None


def _labels(ax: Any, bars: Any, fmt: str) -> None:
    for bar in bars:
        height = bar.get_height()
        ax.annotate(
            fmt.format(height),
            (bar.get_x() + bar.get_width() / 2, height),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=10,
        )


def _grouped(ax: Any, names: list[str], series: dict[str, list[float]], fmt: str) -> None:
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [n + (i - (len(series) - 1) / 2) * width for n in range(len(names))]
        bars = ax.bar(xs, values, width, label=label, color=COLOURS[label])
        _labels(ax, bars, fmt)
    ax.legend(loc="upper left", fontsize=10, frameon=False)


def _single(ax: Any, names: list[str], values: list[float], fmt: str) -> None:
    bars = ax.bar(range(len(names)), values, 0.6, color=BAR)
    _labels(ax, bars, fmt)


def draw(rows: list[dict[str, Any]], heading: str, path: Path) -> None:
    """Write the picture of `rows` (the JSON results) to `path` (PNG, or any format by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    names = [r["guarantee"] for r in rows]

    def values(key: str) -> list[float]:
        return [float(r[key] or 0) for r in rows]

    fig, axes = plt.subplots(1, 4, figsize=(17, 5.2), layout="constrained")
    panels = [
        ("Records lost / duplicated", "records"),
        ("Throughput under the faults", "records/s"),
        ("CPU per record", "µs (user + system)"),
        ("Produce-to-visible latency", "ms"),
    ]
    for ax, (name, unit) in zip(axes, panels, strict=True):
        ax.set_title(name, fontsize=13)
        ax.set_ylabel(unit, fontsize=11)
        ax.set_xticks(range(len(names)), names, fontsize=11)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.2 of a record
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _grouped(
        axes[0], names, {"lost": values("lost"), "duplicated": values("duplicated")}, "{:,.0f}"
    )
    _single(axes[1], names, values("records_per_s"), "{:,.0f}")
    _single(axes[2], names, values("cpu_us_per_record"), "{:,.1f}")
    _grouped(
        axes[3],
        names,
        {"p50": values("latency_ms_p50"), "p99": values("latency_ms_p99")},
        "{:,.0f}",
    )
    for ax in axes:
        top = ax.get_ylim()[1]
        ax.set_ylim(0, max(top * 1.15, 1))  # room for the labels; a panel of zeros still shows
    fig.suptitle(
        "waxlake semantics lab\n" + "\n".join(textwrap.wrap(heading, 150, break_on_hyphens=False)),
        fontsize=13,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
