"""The one settings object: flags and ``SPARK_ML_*`` environment variables, read once at process start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from spark_ml.core.errors import SecretFileError
from spark_ml.core.partition import DEFAULT_PARTITIONS

__all__ = ["Settings"]

_SECRET_FILES = ("api_key", "nats_password", "nats_token", "nats_creds")
"""Settings that may come from a file named by ``SPARK_ML_<NAME>_FILE``."""


class Settings(BaseSettings):
    """Every knob of spark-ml. Flags given on the command line override the environment."""

    model_config = SettingsConfigDict(
        env_prefix="SPARK_ML_", extra="ignore", frozen=True, validate_default=True, use_attribute_docstrings=True
    )

    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server(s), comma-separated."""
    nats_user: str | None = None
    """NATS user name (with ``nats_password``)."""
    nats_password: SecretStr | None = None
    """NATS password (environment or ``SPARK_ML_NATS_PASSWORD_FILE`` only: never a flag)."""
    nats_token: SecretStr | None = None
    """NATS authentication token (environment or ``SPARK_ML_NATS_TOKEN_FILE`` only: never a flag)."""
    nats_creds: Path | None = None
    """A NATS credentials file (JWT + NKey seed)."""
    nats_nkey_seed: Path | None = None
    """A file holding an NKey seed."""
    nats_tls_ca: Path | None = None
    """CA certificate file that the NATS server's certificate must chain to (enables TLS)."""
    nats_tls_cert: Path | None = None
    """Client certificate file for mutual TLS (with ``nats_tls_key``)."""
    nats_tls_key: Path | None = None
    """Private key file of the client certificate."""

    bind_host: str = "127.0.0.1"
    """Interface the metrics sidecar and HTTP gateway listen on (0.0.0.0 in containers)."""
    metrics_port: int = Field(9464, ge=0, le=65535)
    """Port of the metrics sidecar (``/metrics``, ``/healthz``, ``/readyz``); 0: any free port."""
    http_port: int = Field(4010, ge=0, le=65535)
    """Port of the HTTP gateway; 0: any free port."""

    mode: Literal["core", "jetstream"] = "core"
    """Intake: ``core`` (partition subscriptions, at-most-once) or ``jetstream`` (a durable pull consumer per
    partition, at-least-once)."""
    ack_wait_s: float = Field(30.0, gt=0)
    """JetStream: seconds before an unacknowledged message is redelivered."""
    max_deliver: int = Field(5, ge=1)
    """JetStream deliveries before a message is dead-lettered."""
    js_backoff_s: Annotated[tuple[float, ...], NoDecode] = ()
    """JetStream redelivery backoff (seconds per attempt, comma-separated in the environment)."""
    js_replicas: int = Field(1, ge=1, le=5)
    """Replicas of the MARKET_SNAPSHOTS stream when spark-ml creates it (3 on a cluster)."""
    js_in_flight: int = Field(0, ge=0)
    """JetStream: bound on messages requested plus delivered and not yet acked, per process (0: 4 x batch_max)."""
    js_output_ack: Literal["auto", "on", "off"] = "auto"
    """JetStream: publish predictions with PubAcks and ack inputs only after them: ``auto`` when a stream
    stores ``ml.prediction`` (checked at start and every 10 s), ``on`` always, ``off`` never (core publish)."""
    js_puback_timeout_s: float = Field(2.0, gt=0)
    """JetStream: how long a batch of predictions waits for its PubAcks before its inputs are nak'ed."""

    registry: Path = Path(".spark-ml/registry")
    """Model registry directory."""
    registry_poll_s: float = Field(1.0, gt=0)
    """How often a running worker looks for a newly promoted or rolled-back version."""
    api_key: SecretStr | None = None
    """When set, the HTTP gateway requires it (``X-API-Key`` or ``Authorization: Bearer``)."""
    rate_limit: str = "20/second"
    """Per-client HTTP rate limit, in the ``limits`` notation."""
    request_timeout_s: float = Field(2.0, gt=0)
    """How long the HTTP gateway waits for a worker's reply before answering 504."""
    http_read_timeout_s: float = Field(10.0, gt=0)
    """How long an HTTP client may take to send a request's headers (from connecting, or from the previous
    response), and then its body; past either the gateway closes the connection (slow clients hold no slot)."""

    pool_size: int = Field(1, ge=1, le=256)
    """Number of shards; a symbol always lands in the same shard, so its snapshots stay in order.

    One per process by default: all shards share one event loop, so more of them only cut the batches
    smaller (at 10k/s, 4 shards cost 69 us of CPU per message against 52 for one, and p99 39 ms against
    4 ms). More worker processes are what add CPU."""
    batch_max: int = Field(256, ge=1, le=65536)
    """Largest micro-batch."""
    batch_wait_ms: float = Field(0.0, ge=0, le=1000)
    """Extra time a shard waits to fill a batch; 0 means: take what is queued, never wait."""
    queue_max: int = Field(16_384, ge=1)
    """Bound of each shard's queue. When a shard is full, intake waits for room: the pool drops nothing.
    Core mode stops reading the connection (the client's reader pauses), so the backlog stays in the socket
    and the server's buffer for this client, and a server that gives up on a slow client disconnects it; on
    nats-py's plain callback route the client reads on up to its pending limits, then drops and counts
    (slow consumer). JetStream mode waits the same way, with at most ``js_in_flight`` messages requested or
    un-acked. Only what arrives once shutdown has closed the pool is dropped (and counted)."""
    max_payload: int = Field(64 * 1024, ge=256)
    """Largest accepted payload in bytes (stream, ``ml.predict`` and HTTP bodies)."""
    max_symbols: int = Field(10_000, ge=1)
    """Symbols with feature state per process (the least recently seen is evicted)."""
    signal_margin: float = Field(0.05, ge=0, lt=0.5)
    """Score margin around 0.5 for buy and sell signals."""
    drain_timeout_s: float = Field(10.0, gt=0)
    """Bound on finishing in-flight work at shutdown."""

    partitions: int = Field(DEFAULT_PARTITIONS, ge=1)
    """Symbol partitions P (docs/SCALEOUT.md): a symbol's snapshots go to partition ``partition(P, token)``,
    owned by one worker at a time. Every worker, the stream's transform and the server's mapping must agree."""
    member_ttl_s: float = Field(3.0, gt=0)
    """How long a worker stays a member after its last heartbeat (it re-announces itself every third of it);
    a dead worker's partitions move after at most this long (core mode: also the partition lease TTL)."""
    pin_ttl_s: float = Field(2.0, gt=0)
    """JetStream: a partition's pin (``priority_timeout``) lapses when its owner has not pulled for this long;
    a standby takes over then."""
    checkpoint_s: float = Field(1.0, gt=0)
    """How often an owner writes its partitions' feature state (and, in JetStream mode, the stream sequence
    it covers) to the ``spark-ml-state`` bucket; the new owner of a moved partition starts from it."""
    solo: bool = False
    """Core mode on a server without JetStream (no leases) or without the partition mapping: run anyway,
    promising this is the only worker. Two solo workers compute wrong features."""

    # --- live quality (README "Live model quality") ---
    live_quality: bool = True
    """Label every published prediction by its symbol's next snapshot and export the live figures."""
    live_quality_window: int = Field(5000, ge=10)
    """Labelled predictions kept per model version (active and shadow) in each worker's live-quality window."""
    live_quality_min_rows: int = Field(500, ge=1)
    """A version's live figures are exported once its window holds this many labelled predictions."""
    live_quality_export_s: float = Field(5.0, ge=0)
    """Live figures are recomputed at most this often when Prometheus scrapes (0: at every scrape)."""

    # Live analytics (README "Analytics API"): one active instance holds a KV lease (member_ttl_s) and
    # checkpoints its positions every checkpoint_s; standbys take over from the checkpoint.
    analytics_weights: str = ""
    """Portfolio weights, ``SYMBOL=WEIGHT`` comma-separated (symbols not named are left out); empty: every
    symbol weighs the same."""
    analytics_curve_points: int = Field(1000, ge=2, le=100_000, multiple_of=2)
    """Equity curve points kept per symbol and for the portfolio (spread over the whole history)."""
    analytics_trades_kept: int = Field(500, ge=0, le=100_000)
    """Most recent closed trades kept per symbol for ``analytics.export``."""
    analytics_standby_buffer_s: float = Field(10.0, gt=0)
    """How far back a standby analytics instance keeps messages to replay over the checkpoint it takes over
    (longer than member_ttl_s + checkpoint_s, or a crash of the active one loses what arrived in between)."""
    analytics_query_share: float = Field(0.25, gt=0, le=1)
    """Largest share of the analytics event loop's time that ``analytics.get``/``analytics.export`` may take, so
    that callers asking back to back cannot delay the ``analytics.pnl`` updates (1: no limit)."""

    @field_validator("analytics_weights")
    @classmethod
    def _check_weights(cls, value: str) -> str:
        from spark_ml.core.trading.portfolio import parse_weights

        parse_weights(value)
        return value

    output_encoding: Literal["auto", "msgpack", "json"] = "auto"
    """Encoding of what the worker publishes (predictions, shadow predictions, analytics): ``auto`` answers each
    snapshot in its own encoding (analytics: msgpack); every message says which in ``Content-Type``. Replies
    on ``ml.predict`` always use the request's encoding."""

    tracing: Literal["off", "on"] = "off"
    """OpenTelemetry spans (``spark_ml.worker.tracing``), exported over OTLP/HTTP as the standard ``OTEL_*``
    variables say. Off: no span, and a snapshot's ``traceparent`` is copied unchanged onto its prediction."""
    otel_sdk_disabled: bool = Field(False, validation_alias=AliasChoices("OTEL_SDK_DISABLED", "otel_sdk_disabled"))
    """The standard ``OTEL_SDK_DISABLED``: true turns tracing off whatever ``tracing`` says."""
    otel_traces_exporter: Literal["otlp", "console", "none"] = Field(
        "otlp", validation_alias=AliasChoices("OTEL_TRACES_EXPORTER", "otel_traces_exporter")
    )
    """The standard ``OTEL_TRACES_EXPORTER``: where spans go when tracing is on (``none``: made, not exported)."""

    # --- logs (worker/logs.py) ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Level of spark-ml's own loggers (case-insensitive)."""
    log_format: Literal["text", "json"] = "text"
    """``text``: one readable line per event; ``json``: one JSON object per line (ts, level, logger, message)."""

    # --- secrets from files (Docker and Kubernetes secrets are mounted as files) ---
    api_key_file: Path | None = None
    """File holding the HTTP API key (instead of ``SPARK_ML_API_KEY``); a final newline is ignored."""
    nats_password_file: Path | None = None
    """File holding the NATS password (instead of ``SPARK_ML_NATS_PASSWORD``)."""
    nats_token_file: Path | None = None
    """File holding the NATS token (instead of ``SPARK_ML_NATS_TOKEN``)."""
    nats_creds_file: Path | None = None
    """NATS credentials file (JWT + NKey seed), the ``_FILE`` spelling of ``SPARK_ML_NATS_CREDS``."""

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: object) -> object:
        """``<name>_file`` -> ``<name>``: read once at start; SecretFileError (exit 1) when it cannot be used."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name in _SECRET_FILES:
            path = out.get(f"{name}_file")
            if path in (None, ""):
                continue
            env = f"SPARK_ML_{name.upper()}"
            if out.get(name) not in (None, ""):
                raise SecretFileError(f"{env} and {env}_FILE are both set: set one of them")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise SecretFileError(f"{env}_FILE={path}: cannot read it: {reason}") from None
            if name == "nats_creds":
                out[name] = path  # a credentials file is used as a file: read here only to fail early
                continue
            value = text.removesuffix("\n").removesuffix("\r")
            if not value:
                raise SecretFileError(f"{env}_FILE={path}: the file is empty")
            out[name] = value
        return out

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("nats_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        for server in value.split(","):
            parts = urlsplit(server.strip())
            if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
                # Only what follows "@": a URL may carry user:password, and this message gets printed.
                shown = server.strip().rsplit("@", 1)[-1]
                raise ValueError(f"not a NATS URL: {shown!r} (expected nats://host:port)")
        return value

    @field_validator("js_backoff_s", mode="before")
    @classmethod
    def _split_backoff(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(x) for x in value.split(",") if x.strip())
        return value

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]
