"""The tear sheet as one self-contained HTML file: inline CSS, the figures as PNG data URIs, no script, no link.

Sections (each a ``<section id=...>``): ``headline`` (four key figures of the main account), ``metrics``
(the metrics table: every row a label of :attr:`TearSheet.metrics`, every cell carrying its exact value in
``data-value`` beside the rounded text), ``equity``, ``drawdowns`` (underwater plot and the deepest periods),
``monthly``, ``rolling-sharpe`` and ``returns`` (distribution with VaR). The figures are drawn by
:mod:`spark_ml.core.io.tearsheet_figures`; the numbers all come from the
:class:`~spark_ml.core.trading.tearsheet.TearSheet`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from spark_ml.core.io import tearsheet_figures as figs
from spark_ml.core.trading.backtest import metric_text
from spark_ml.core.trading.exports import iso_time
from spark_ml.core.trading.tearsheet import METRIC_COLUMNS, TearSheet

__all__ = ["render_html", "write_tearsheet"]

_CSS = """
body { margin: 0; background: #f4f5f7; color: #1d232b; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 48px; }
header h1 { margin: 0 0 6px; font-size: 24px; }
header p { margin: 2px 0; color: #4d5866; }
section { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.08); margin: 18px 0;
  padding: 16px 20px; }
section h2 { margin: 0 0 4px; font-size: 17px; }
section p.note { margin: 4px 0 10px; color: #5c6673; font-size: 12.5px; }
img { display: block; width: 100%; height: auto; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; }
.card { flex: 1 1 150px; background: #f7f9fc; border: 1px solid #e1e6ee; border-radius: 6px; padding: 10px 14px; }
.card .label { color: #5c6673; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 600; }
.pos { color: #1e7b34; } .neg { color: #b3261e; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 7px; border-bottom: 1px solid #e7eaef; text-align: right; white-space: nowrap; font-size: 13px; }
th { background: #f0f3f7; font-weight: 600; font-size: 12px; white-space: normal; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
tr.main td { font-weight: 600; background: #f5f9ff; }
.scroll { overflow-x: auto; }
footer { color: #7a8491; font-size: 12px; margin-top: 24px; }
"""

_HEADLINE = (
    ("total_return", "total return", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("var_95", "VaR 95% (one point)", "pct"),
)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(key: str, value: Any, kind: str) -> str:
    sign = "" if value is None or kind == "int" or key == "max_drawdown" or key.startswith("var") else (
        " class=\"pos\"" if value > 0 else " class=\"neg\"" if value < 0 else ""
    )  # fmt: skip
    return f'<td data-key="{key}" data-value="{html.escape(json.dumps(value))}"{sign}>{metric_text(value, kind)}</td>'


def _metrics_table(ts: TearSheet) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in METRIC_COLUMNS)
    rows = []
    for label, m in ts.metrics.items():
        cls = ' class="main"' if label == ts.main_label else ""
        cells = "".join(_cell(key, m.get(key), kind) for key, _, kind in METRIC_COLUMNS)
        rows.append(f'<tr{cls} data-row="{html.escape(label)}"><td>{html.escape(label)}</td>{cells}</tr>')
    return f'<div class="scroll"><table><tr><th></th>{head}</tr>{"".join(rows)}</table></div>'


def _headline(ts: TearSheet) -> str:
    m = ts.metrics.get(ts.main_label, {})
    cards = []
    for key, title, kind in _HEADLINE:
        v = m.get(key)
        cls = "" if v is None or key in ("max_drawdown", "var_95") else ("pos" if v > 0 else "neg" if v < 0 else "")
        cards.append(
            f'<div class="card"><div class="label">{html.escape(title)}</div>'
            f'<div class="value {cls}" data-key="{key}" data-value="{html.escape(json.dumps(v))}">'
            f"{metric_text(v, kind)}</div></div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _duration(ms: float) -> str:
    days = ms / 86_400_000.0
    if days >= 2:
        return f"{days:.0f} days"
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:.1f} hours"
    if ms >= 60_000:
        return f"{ms / 60_000:.1f} minutes"
    return f"{ms / 1000:.1f} s"


def _drawdown_table(ts: TearSheet) -> str:
    if not ts.drawdowns:
        return "<p class=note>No drawdown: equity never fell below a previous peak.</p>"
    t = ts.main.ts
    rows = []
    for i, p in enumerate(ts.drawdowns, start=1):
        end = t[p.recovery] if p.recovery is not None else t[-1]
        recovered = iso_time(int(t[p.recovery]))[:16].replace("T", " ") if p.recovery is not None else "not yet"
        rows.append(
            f"<tr><td>{i}</td><td>{100 * p.depth:.2f}%</td>"
            f"<td>{iso_time(int(t[p.peak]))[:16].replace('T', ' ')}</td>"
            f"<td>{iso_time(int(t[p.trough]))[:16].replace('T', ' ')}</td><td>{recovered}</td>"
            f"<td>{_duration(float(end - t[p.peak]))}</td></tr>"
        )
    head = "<tr><th>#</th><th>depth</th><th>peak</th><th>trough</th><th>recovered</th><th>length</th></tr>"
    return f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def _section(sid: str, title: str, note: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2><p class="note">{note}</p>{body}</section>'


def render_html(ts: TearSheet) -> str:
    """The whole report as one HTML document (see the module docstring)."""
    main = ts.main
    r = ts.rolling
    span = f", about {_duration(r.span_ms)}" if r.span_ms > 0 else ""
    sections = [
        _section("headline", "Headline", f"{html.escape(ts.main_label)}, after costs.", _headline(ts)),
        _section(
            "metrics",
            "Metrics",
            html.escape(ts.metrics_note),
            _metrics_table(ts),
        ),
        _section(
            "equity",
            "Equity against buy-and-hold",
            f"{html.escape(ts.main_label)} (blue) and the comparisons behind it, each starting at 1.",
            f'<img alt="equity curves" src="{_png(figs.equity_figure(ts))}">',
        ),
        _section(
            "drawdowns",
            "Drawdown periods",
            f"How far {html.escape(ts.main_label)} stood below its running peak; the {len(ts.drawdowns)} deepest "
            "periods are shaded and numbered as in the table.",
            f'<img alt="underwater plot" src="{_png(figs.underwater_figure(ts))}">' + _drawdown_table(ts),
        ),
        _section(
            "monthly",
            "Monthly returns",
            "Compounded return of each calendar month (UTC); the last column is the year's.",
            f'<img alt="monthly returns" src="{_png(figs.monthly_figure(ts))}">',
        ),
        _section(
            "rolling-sharpe",
            "Rolling Sharpe",
            f"Annualized Sharpe of the trailing {r.window} {ts.point}-to-{ts.point} returns{span}.",
            f'<img alt="rolling Sharpe" src="{_png(figs.rolling_sharpe_figure(ts))}">',
        ),
        _section(
            "returns",
            "Distribution of returns",
            f"Returns from each {ts.point} to the next ({main.returns.size} of them, flat periods included); the red "
            "lines are their VaR (historical and Gaussian, by the functions the table's figures come from).",
            f'<img alt="distribution of returns" src="{_png(figs.returns_figure(ts))}">',
        ),
    ]
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in ts.lines)
    made = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(ts.title)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>{html.escape(ts.title)}</h1>{lines}</header>{''.join(sections)}"
        f"<footer>spark-ml tear sheet, made {made}; "
        f"{iso_time(int(main.ts[0]))} .. {iso_time(int(main.ts[-1]))}.</footer></main></body></html>\n"
    )


def write_tearsheet(path: Path, ts: TearSheet) -> Path:
    """Write the tear sheet's HTML at ``path``; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(ts), encoding="utf-8")
    return path
