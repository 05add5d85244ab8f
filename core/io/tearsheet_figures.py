"""The tear sheet's figures: equity against buy-and-hold, underwater, monthly returns, rolling Sharpe, returns.

Built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global state) from a
:class:`spark_ml.core.trading.tearsheet.TearSheet`; nothing here computes a figure of merit, it only draws them.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from spark_ml.core.trading.tearsheet import TearSheet

__all__ = ["equity_figure", "monthly_figure", "returns_figure", "rolling_sharpe_figure", "underwater_figure"]

_WIDTH = 11.0
_MAIN = "#1f4e79"
_OTHERS = ("#9a9a9a", "#d08a2e", "#5b8c5a", "#8e5ea2")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _when(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts, dtype="datetime64[ms]")


def _style(ax: Axes) -> None:
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _axes(height: float) -> tuple[Figure, Axes]:
    """A figure of the page's width and ``height`` inches, with its one plot."""
    fig = Figure(figsize=(_WIDTH, height), layout="constrained")
    return fig, fig.add_subplot()


def _lines_done(fig: Figure, ax: Axes, ylabel: str) -> Figure:
    """A line chart's finish: its y label, the legend at the upper left, the common style."""
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", frameon=False)
    _style(ax)
    return fig


def equity_figure(ts: TearSheet) -> Figure:
    """The main account's equity (start = 1) with the other curves (buy-and-hold first) behind it."""
    when = _when(ts.main.ts)
    fig, ax = _axes(4.2)
    for (label, curve), color in zip(ts.curves.items(), _OTHERS, strict=False):
        ax.plot(when, curve, color=color, linewidth=1.1, label=label)
    ax.plot(when, ts.main.equity / ts.main.equity[0], color=_MAIN, linewidth=1.6, label=ts.main_label)
    ax.axhline(1.0, color="black", linewidth=0.6, alpha=0.5)
    return _lines_done(fig, ax, "equity (start = 1)")


def underwater_figure(ts: TearSheet) -> Figure:
    """Drawdown below the running peak, the deepest periods shaded and numbered as in the table."""
    when = _when(ts.main.ts)
    dd = -100.0 * ts.main.drawdown
    fig, ax = _axes(3.0)
    for i, p in enumerate(ts.drawdowns, start=1):
        end = when[p.recovery] if p.recovery is not None else when[-1]
        ax.axvspan(when[p.peak], end, color="#f4c7c3", alpha=0.45, linewidth=0)
        ax.annotate(str(i), (when[p.trough], dd[p.trough]), textcoords="offset points", xytext=(0, -11),
                    ha="center", fontsize=8, color="#7a1f1f")  # fmt: skip
    ax.fill_between(when, dd, 0.0, color="#c0392b", alpha=0.55, linewidth=0)
    ax.plot(when, dd, color="#8e1b10", linewidth=0.7)
    ax.set_ylabel("drawdown")
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=1))
    low = float(dd.min()) if dd.size else 0.0
    ax.set_ylim(min(low * 1.18, -0.1), 0.0 + max(-low * 0.02, 0.02))
    _style(ax)
    return fig


def monthly_figure(ts: TearSheet) -> Figure:
    """A year x month heatmap of compounded monthly returns (percent in each cell), the year's total at the right."""
    m = ts.monthly
    rows = max(len(m.years), 1)
    grid = np.full((rows, 13), math.nan)
    if m.years:
        grid[:, :12] = 100.0 * m.table
        grid[:, 12] = 100.0 * m.yearly
    fig, ax = _axes(0.9 + 0.42 * rows)
    months = grid[:, :12][np.isfinite(grid[:, :12])]
    bound = max(float(np.abs(months).max()) if months.size else 1.0, 1e-9)  # years clip: months keep their contrast
    norm = TwoSlopeNorm(0.0, -bound, bound)
    ax.imshow(np.ma.masked_invalid(np.clip(grid, -bound, bound)), cmap="RdYlGn", norm=norm, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if math.isfinite(v):
            dark = abs(v) > 0.7 * bound
            ax.text(j, i, f"{v:+.2f}%", ha="center", va="center", fontsize=8.5,
                    fontweight="bold" if j == 12 else "normal", color="white" if dark else "black")  # fmt: skip
    ax.axvline(11.5, color="white", linewidth=3)
    ax.set_xticks(range(13), [*_MONTHS, "Year"])
    ax.set_yticks(range(rows), [str(y) for y in m.years] or [""])
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    for side in ax.spines.values():
        side.set_visible(False)
    return fig


def rolling_sharpe_figure(ts: TearSheet) -> Figure:
    """The rolling annualized Sharpe with zero and the whole period's Sharpe."""
    r = ts.rolling
    fig, ax = _axes(3.0)
    if r.values.size:
        ax.plot(_when(ts.main.ts[r.at]), r.values, color=_MAIN, linewidth=1.1, label=f"{r.window}-return window")
    whole = ts.metrics.get(ts.main_label, {}).get("sharpe")
    if whole is not None:
        ax.axhline(whole, color="#d08a2e", linestyle="--", linewidth=1.0, label=f"whole period {whole:.2f}")
    ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.6)
    return _lines_done(fig, ax, "Sharpe (annualized)")


def returns_figure(ts: TearSheet) -> Figure:
    """Histogram of per-point returns in basis points (log counts), each VaR drawn as a loss line.

    The axis spans the 0.5th to 99.5th percentile widened by half their distance on each side (and every VaR
    line): one crash must not squeeze the rest into a single bar; how many points fall outside is said on the
    plot."""
    r = 1e4 * ts.main.returns
    fig, ax = _axes(3.4)
    if r.size:
        lines = [-1e4 * v for _, v in ts.var_levels]
        p_lo, p_hi = (float(x) for x in np.percentile(r, [0.5, 99.5]))
        spread = max(p_hi - p_lo, 1e-9)
        lo = min(max(float(r.min()), p_lo - 0.5 * spread), *lines) - 0.02 * spread
        hi = min(float(r.max()), p_hi + 0.5 * spread) + 0.02 * spread
        shown = r[(r >= lo) & (r <= hi)]
        ax.hist(shown, bins=min(120, max(10, shown.size // 10)), range=(lo, hi), color="#7f9fbf", edgecolor="white",
                linewidth=0.3)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        outside = int(r.size - shown.size)
        if outside:
            ax.text(0.99, 1.0, f"{outside} {ts.point}(s) beyond the axis (min {r.min():.0f} bp, max {r.max():.0f} bp)",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5, color="#5c6673")  # fmt: skip
    for (label, value), style in zip(ts.var_levels, ("-", "--", ":"), strict=False):
        ax.axvline(
            -1e4 * value, color="#c0392b", linestyle=style, linewidth=1.3, label=f"{label}: {1e4 * value:.1f} bp"
        )
    ax.set_xlabel(f"return per {ts.point} (bp)")
    ax.set_ylabel(f"{ts.point}s (log scale)")
    ax.legend(loc="upper right", frameon=True, framealpha=0.9, edgecolor="none")
    _style(ax)
    return fig
