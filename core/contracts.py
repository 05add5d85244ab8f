"""Wire contracts (pydantic v2): what crosses NATS and HTTP, with camelCase aliases as in the seeds.

These models are the reference definition of the contracts. The stream's hot path validates with the
plain-Python twin in :mod:`spark_ml.core.codec` (tested against these models) because per-message pydantic costs
more than the whole rest of the pipeline.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = [
    "AnalyticsExportReply",
    "AnalyticsFiguresReply",
    "AnalyticsQuery",
    "ErrorBody",
    "ErrorReply",
    "ExportedTrade",
    "GatewayHealth",
    "LiveWindow",
    "MarketSnapshot",
    "ModelInfo",
    "ModelQuality",
    "ModelQualityRequest",
    "VersionQuality",
    "PnlUpdate",
    "PortfolioExport",
    "PortfolioFigures",
    "PortfolioFiguresReply",
    "Prediction",
    "PredictRequest",
    "Signal",
    "SymbolExport",
    "SymbolFigures",
    "SymbolFiguresReply",
    "valid_symbol",
]

Signal = Literal["buy", "sell", "hold"]
SYMBOL_MAX_LEN = 64
SYMBOL_SCHEMA: JsonDict = {"minLength": 1, "maxLength": SYMBOL_MAX_LEN, "pattern": r"^[^\s\x00-\x1f\x7f-\x9f\xad]+$"}
"""The symbol rule in JSON Schema (the specs): no whitespace or control characters. Exact for Latin-1; beyond it,
``str.isprintable`` also refuses format, private-use and unassigned characters, which no pattern here lists."""
MAX_TS = 2**53
"""Largest accepted epoch-millisecond timestamp: beyond it JSON consumers lose integer precision."""


def valid_symbol(symbol: str) -> bool:
    """Symbols are 1..64 printable characters without spaces (they become subject tokens and label values)."""
    return 0 < len(symbol) <= SYMBOL_MAX_LEN and symbol.isprintable() and " " not in symbol


def _symbol(value: str) -> str:
    if not valid_symbol(value):
        raise ValueError(f"must be 1..{SYMBOL_MAX_LEN} printable characters without spaces")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
NonNegative = Annotated[float, Field(ge=0), AfterValidator(_finite)]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_attribute_docstrings=True,  # the field docstrings become descriptions in the JSON Schemas (core/specs)
    )


class MarketSnapshot(_Wire):
    """One market observation for one symbol (subject ``market.snapshot`` or ``market.snapshot.<SYMBOL>``).

    Strict: numbers must be numbers (a string "1.5" is refused, as on the hot path), bools are not numbers.
    """

    model_config = ConfigDict(strict=True)

    ts: Annotated[StrictInt, Field(ge=0, le=MAX_TS)]
    """Epoch milliseconds."""
    mid: Annotated[float, Field(gt=0), AfterValidator(_finite)]
    """Mid price, finite."""
    symbol: Annotated[str, AfterValidator(_symbol)] | None = Field(default=None, json_schema_extra=SYMBOL_SCHEMA)
    """1..64 printable characters, no spaces; when absent, the subject's last token, else ``"_"``."""
    spread_bp: NonNegative | None = None
    vol1m: Annotated[NonNegative | None, Field(alias="vol1m")] = None
    rsi14: Annotated[float, Field(ge=0, le=100), AfterValidator(_finite)] | None = Field(default=None, alias="rsi14")
    bid: NonNegative | None = None
    ask: NonNegative | None = None
    volume: NonNegative | None = None


class Prediction(_Wire):
    """What the worker publishes on ``ml.prediction`` and what ``ml.predict`` replies."""

    ts: int
    symbol: str
    score: Annotated[float, Field(ge=0, le=1)]
    """Probability that the next move is up."""
    signal: Signal
    confidence: Annotated[float, Field(ge=0, le=1)]
    model_version: str
    features: dict[str, Finite]
    """The exact vector the model saw, by feature name."""
    latency_ms: Annotated[float, Field(ge=0)]
    """Receive to publish, in this process."""


class PredictRequest(_Wire):
    """Request body of ``ml.predict`` and ``POST /ml/predict``."""

    snapshot: MarketSnapshot
    model: Annotated[str, Field(min_length=1)] | None = None
    """Ask a specific registry version instead of the active one."""


class ErrorBody(_Wire):
    code: str
    message: str


class ErrorReply(_Wire):
    """Error reply of ``ml.predict`` and the HTTP gateway: ``{"error": {"code", "message"}}``."""

    error: ErrorBody

    @classmethod
    def of(cls, code: str, message: str) -> ErrorReply:
        return cls(error=ErrorBody(code=code, message=message))

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class LiveWindow(_Wire):
    """A live-quality window itself: labels as bytes 0/1 and scores as little-endian float64, both base64."""

    labels: str
    scores: str


class VersionQuality(_Wire):
    """One served version's live quality on one worker, over its rolling window of labelled predictions."""

    model_config = ConfigDict(extra="allow")

    version: str
    role: str
    """``active`` or ``shadow``."""
    labelled: int
    """Predictions labelled since the window was made."""
    rows: int
    """Rows in the window now."""
    auc: float | None = None
    accuracy: float | None = None
    log_loss: float | None = Field(default=None, alias="log_loss")
    brier: float | None = None
    min_rows: int | None = None
    """Rows a window needs before its figures are exported as metrics."""
    window: LiveWindow | None = None
    """The window itself, when the request asked for it."""


class GatewayHealth(_Wire):
    """Body of the HTTP gateway's ``GET /ml/health`` (200 when both are true, else 503)."""

    status: Literal["ok", "unavailable"]
    nats: bool
    """The gateway is connected to NATS."""
    worker: bool
    """A worker answered the micro service's PING."""


class AnalyticsQuery(_Wire):
    """Request body of ``analytics.get`` and ``analytics.export`` (JSON or msgpack; an empty body is ``{}``)."""

    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(default=None, json_schema_extra=SYMBOL_SCHEMA)
    """The symbol asked for; absent: the portfolio."""


class ModelQualityRequest(_Wire):
    """Request body of ``ml.model.quality`` (JSON; an empty body is ``{}``)."""

    windows: bool = False
    """Add each version's window to the reply."""


class ModelQuality(_Wire):
    """Reply of one worker on ``ml.model.quality`` (every worker answers)."""

    worker: str
    """``<host>:<pid>``."""
    versions: list[VersionQuality]


class ModelInfo(_Wire):
    """Reply of ``ml.model.info`` (and ``GET /ml/model/info``): the model a worker serves now."""

    model_config = ConfigDict(extra="allow")

    version: str
    """Registry version (``baseline`` or ``<kind>-<sha256 prefix>``)."""
    kind: str
    feature_names: list[str]
    """The features the model reads, in its order."""
    all_features: list[str] | None = None
    """Every feature the engine computes (a Prediction's ``features`` holds the model's)."""
    shadow: str | None = None
    """The shadow version scored beside it, if any."""
    created: str | None = None
    """ISO 8601 time of registration (None for the baseline)."""
    data: str | None = None
    """The training data's name."""
    metrics: dict[str, float] | None = None
    """Walk-forward out-of-sample metrics of the version."""
    live_quality: list[VersionQuality] | None = None
    """This worker's live quality per served version."""


class _PositionFigures(_Wire):
    """The figures of one paper position (:class:`spark_ml.core.trading.live_pnl.PnlSnapshot`): money in units of
    the starting equity, ``None`` where a ratio is undefined or unbounded."""

    symbol: str
    ts: int | None
    """Timestamp of the last price (epoch ms); None before the first one."""
    price: float | None
    """The last price."""
    position: Literal[-1, 0, 1]
    """-1 short, 0 flat, +1 long."""
    equity: float | None
    """Marked-to-market equity."""
    pnl: float | None
    """``equity - 1``: ``realizedPnl + unrealizedPnl``."""
    realized_pnl: float | None
    """PnL of the closed trades, costs included."""
    unrealized_pnl: float | None
    """PnL of the open trade, marked to the last price."""
    total_return: float | None
    drawdown: float | None
    """Fall from the running peak of equity, 0..1."""
    max_drawdown: float | None
    var_95: Annotated[float | None, Field(alias="var95")]
    """Historical one-update VaR at 95%, a positive fraction of equity."""
    var_99: Annotated[float | None, Field(alias="var99")]
    """Historical one-update VaR at 99%."""
    var_95_parametric: Annotated[float | None, Field(alias="var95Parametric")]
    """Gaussian one-update VaR at 95%."""
    win_rate: float | None
    """Winning trades / trades, the open one marked to market."""
    profit_factor: float | None
    """Gross profit / gross loss over the same trades."""
    trades: int
    """Trades opened so far."""
    updates: int
    """Prices seen."""
    last_signal: Signal | None


class PnlUpdate(_PositionFigures):
    """Live paper-trading analytics of one symbol, published on ``analytics.pnl.<SYMBOL>``.

    Money figures are in units of the starting equity; ``None`` where a ratio is undefined or unbounded
    (see :class:`spark_ml.core.trading.live_pnl.PnlSnapshot` for each field).
    """

    published_at: int
    """Epoch milliseconds of publication."""
    lag_ms: Annotated[float, Field(ge=0)]
    """Receive to publish of the oldest event this update reflects, in this process."""


class SymbolFigures(_PositionFigures):
    """One symbol's live figures (:func:`spark_ml.core.trading.live_figures.symbol_figures`): its paper position's
    and the ratios of its last ``window`` update-to-update returns, annualized by their timestamps."""

    as_of: int | None
    """Timestamp of the last price (epoch ms)."""
    sharpe: float | None
    """Annualized Sharpe ratio over the window."""
    sortino: float | None
    """Annualized Sortino ratio over the window."""
    var_99_parametric: Annotated[float | None, Field(alias="var99Parametric")]
    """Gaussian one-update VaR at 99%."""
    exposure: float | None
    """Share of the price moves over which a position was held."""
    window: int
    """Returns in the window."""


class PortfolioFigures(_Wire):
    """The portfolio's live figures (:meth:`spark_ml.core.trading.portfolio.Portfolio.figures`): every symbol's
    paper account as one book, weighted means of the symbols' figures, ratios over the book's step returns."""

    symbol: None
    """Always null: the portfolio."""
    symbols: int
    """Symbols in the book (weight not 0)."""
    weights: Literal["configured", "equal"]
    """``equal`` unless SPARK_ML_ANALYTICS_WEIGHTS names weights."""
    as_of: int | None
    """Latest timestamp of any symbol (epoch ms)."""
    position: float
    """Weighted net position, -1..1."""
    gross_position: float
    """Weighted mean of the absolute positions, 0..1."""
    equity: float
    """Weighted mean equity."""
    pnl: float
    """``equity - 1``."""
    realized_pnl: float
    unrealized_pnl: float
    total_return: float
    index: float
    """Product of ``1 + r`` over the book's step returns."""
    drawdown: float
    """Fall of the index from its running peak, 0..1."""
    max_drawdown: float
    var_95: Annotated[float | None, Field(alias="var95")]
    """Historical one-step VaR at 95% over the window."""
    var_99: Annotated[float | None, Field(alias="var99")]
    var_95_parametric: Annotated[float | None, Field(alias="var95Parametric")]
    var_99_parametric: Annotated[float | None, Field(alias="var99Parametric")]
    sharpe: float | None
    """Annualized Sharpe ratio over the window."""
    sortino: float | None
    win_rate: float | None
    """Pooled share of winning trades (open ones marked to market)."""
    profit_factor: float | None
    """Weighted gross profit over weighted gross loss."""
    trades: int
    """Trades of every symbol."""
    exposure: float | None
    """Weighted mean of the symbols' exposures."""
    window: int
    """Step returns in the window."""


class SymbolFiguresReply(SymbolFigures):
    """Reply of ``analytics.get`` with a symbol."""

    served_at: int
    """Epoch milliseconds of the reply."""


class PortfolioFiguresReply(PortfolioFigures):
    """Reply of ``analytics.get`` without a symbol."""

    served_at: int
    """Epoch milliseconds of the reply."""


class ExportedTrade(_Wire):
    """One round trip of a paper position (:class:`spark_ml.core.trading.live_history.ClosedTrade`)."""

    side: Literal[-1, 1]
    """+1 long, -1 short."""
    entry_ts: int | None
    """Timestamp of the entry price (epoch ms); None when unknown."""
    entry_price: float
    exit_ts: int | None
    """Timestamp of the exit price; None while the trade is open."""
    exit_price: float | None
    """None while open."""
    pnl: float
    """Equity gained, costs included (marked to market while open)."""
    ret: Annotated[float | None, Field(alias="return")]
    """``pnl`` over the equity the trade began with."""


class SymbolExport(_Wire):
    """Reply of ``analytics.export`` with a symbol (:func:`spark_ml.core.trading.live_figures.symbol_export`)."""

    symbol: str
    figures: SymbolFigures
    equity_curve: list[tuple[int | None, float, float] | tuple[int | None, float]]
    """``[ts, equity, price]`` points (``[ts, equity]`` from a state saved without prices), oldest first: at most
    SPARK_ML_ANALYTICS_CURVE_POINTS + 1 over the whole history, the last one the newest mark."""
    curve_stride: int
    """Price updates per curve point."""
    trades: list[ExportedTrade]
    """The SPARK_ML_ANALYTICS_TRADES_KEPT most recent trades, oldest first, the open one last."""
    trades_total: int
    """Every trade so far, not only those listed."""
    served_at: int
    """Epoch milliseconds of the reply."""


class PortfolioExport(_Wire):
    """Reply of ``analytics.export`` without a symbol (:meth:`spark_ml.core.trading.portfolio.Portfolio.export`)."""

    symbol: None
    """Always null: the portfolio."""
    figures: PortfolioFigures
    equity_curve: list[tuple[int, float]]
    """``[ts, equity]`` per closed step of the book, the open step last, oldest first."""
    curve_stride: int
    """Steps per curve point."""
    symbols: list[str]
    """Every symbol seen, to export one by one."""
    served_at: int
    """Epoch milliseconds of the reply."""


AnalyticsFiguresReply = SymbolFiguresReply | PortfolioFiguresReply
"""Reply of ``analytics.get``."""
AnalyticsExportReply = SymbolExport | PortfolioExport
"""Reply of ``analytics.export``."""
