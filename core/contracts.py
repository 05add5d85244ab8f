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
    "AnalyticsQuery",
    "ErrorBody",
    "ErrorReply",
    "GatewayHealth",
    "LiveWindow",
    "MarketSnapshot",
    "ModelInfo",
    "ModelQuality",
    "ModelQualityRequest",
    "VersionQuality",
    "PnlUpdate",
    "Prediction",
    "PredictRequest",
    "Signal",
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


class PnlUpdate(_Wire):
    """Live paper-trading analytics of one symbol, published on ``analytics.pnl.<SYMBOL>``.

    Money figures are in units of the starting equity; ``None`` where a ratio is undefined or unbounded
    (see :class:`spark_ml.core.trading.live_pnl.PnlSnapshot` for each field).
    """

    symbol: str
    ts: int | None
    """Timestamp of the last price (epoch ms)."""
    price: float | None
    position: Literal[-1, 0, 1]
    """-1 short, 0 flat, +1 long."""
    equity: float | None
    pnl: float | None
    realized_pnl: float | None
    unrealized_pnl: float | None
    total_return: float | None
    drawdown: float | None
    max_drawdown: float | None
    var_95: Annotated[float | None, Field(alias="var95")]
    var_99: Annotated[float | None, Field(alias="var99")]
    var_95_parametric: Annotated[float | None, Field(alias="var95Parametric")]
    win_rate: float | None
    profit_factor: float | None
    trades: int
    updates: int
    last_signal: Signal | None
    published_at: int
    """Epoch milliseconds of publication."""
    lag_ms: Annotated[float, Field(ge=0)]
    """Receive to publish of the oldest event this update reflects, in this process."""
