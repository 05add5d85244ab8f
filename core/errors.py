"""The one exception tree of spark-ml.

Grouped by who handles them::

    SparkMlError
     ├── InvalidInput            the sender's fault: 400 in replies, status=invalid, dead-lettered unchanged
     │    └── PayloadTooLarge    over the size limit: 413
     ├── ModelError              the model failed or produced an out-of-range score: 500, status=error
     ├── RegistryError           a registry operation was refused (unknown version, nothing to roll back to)
     │    └── ArtifactCorrupt    checksum mismatch or unreadable artifact
     ├── Unavailable             no worker can answer now (no owner, no responder): 503, retry shortly
     │    └── RequestTimeout     no reply in time: 504 (also a TimeoutError)
     ├── MissingExtra            an optional dependency is not installed: the message names the extra to install
     ├── SecretFileError         a SPARK_ML_*_FILE names a file that cannot be read: the process exits 1 with the reason
     ├── UnknownSymbol           a query named a symbol nobody has data for: 404
     └── TransportError          NATS refused or lost something; the worker runtime handles it, no reply carries it
          ├── NatsRefused        credentials or certificate refused: the process exits with the reason
          ├── NotStored          JetStream did not confirm storing some predictions: their inputs are nak'ed
          ├── OwnershipLost      another worker owns a partition now (stale lease or checkpoint revision)
          └── ClusterRefused     the server cannot keep partitions correct (no mapping, no JetStream): exit 1

`SparkMlError.code` is the short machine-readable reason that travels in headers and error bodies. How each
error is answered and counted (reply code, metric status, ``error_type``, dead-letter reason) is decided in
one place: :func:`spark_ml.core.outcomes.outcome_of`.
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorrupt",
    "ClusterRefused",
    "InvalidInput",
    "MissingExtra",
    "ModelError",
    "NatsRefused",
    "NotStored",
    "OwnershipLost",
    "PayloadTooLarge",
    "RegistryError",
    "RequestTimeout",
    "SecretFileError",
    "SparkMlError",
    "TransportError",
    "Unavailable",
    "UnknownSymbol",
]


class SparkMlError(Exception):
    """Root of every error spark-ml raises on purpose.

    Args:
        message: human-readable reason.
        code: short reason code, overriding the class's default.
    """

    status: int = 500
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(SparkMlError, ValueError):
    """A message that cannot become a snapshot; carries the raw bytes so they can be dead-lettered unchanged.

    Args:
        message: human-readable reason.
        code: short reason code (``decode``, ``schema``, ``out_of_order``, ...).
        raw: the payload as received, when there was one.
    """

    status = 400
    code = "invalid_input"

    def __init__(self, message: str, *, code: str | None = None, raw: bytes | None = None) -> None:
        super().__init__(message, code=code)
        self.raw = raw


class PayloadTooLarge(InvalidInput):
    """The payload is larger than the configured maximum."""

    status = 413
    code = "payload_too_large"


class ModelError(SparkMlError, RuntimeError):
    """The model raised, or its output was not a finite probability."""

    status = 500
    code = "model_error"


class RegistryError(SparkMlError):
    """A registry operation could not be carried out (unknown version, nothing to roll back to, ...)."""

    status = 400
    code = "registry"


class ArtifactCorrupt(RegistryError):
    """A model artifact does not match its manifest's checksum, or cannot be loaded."""

    code = "artifact_corrupt"


class Unavailable(SparkMlError):
    """No worker can answer a request now: nobody owns the symbol's partition (a hand-over in progress), no worker
    is subscribed, or the gateway is not connected. Retrying shortly may succeed.

    Raised by :mod:`spark_ml.client` for a 503 reply (code ``unavailable``) or when NATS finds no responder.
    """

    status = 503
    code = "unavailable"


class RequestTimeout(Unavailable, TimeoutError):
    """No reply arrived within the caller's timeout (504); also a :class:`TimeoutError`."""

    status = 504
    code = "timeout"


class MissingExtra(SparkMlError, ImportError):
    """A feature needs a package of an optional extra that is not installed (``pip install 'spark-ml[EXTRA]'``).

    Args:
        package: the missing import name (``lightgbm``, ``backtesting``, ...).
        extra: the extra that installs it (``train``, ``data``, ``otel``).
        purpose: what needed it, as the start of a sentence (``reading a CSV``).
    """

    code = "missing_extra"

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{purpose} needs {package}, which is not installed: pip install 'spark-ml[{extra}]'")


class UnknownSymbol(SparkMlError):
    """A query (``analytics.get``, ``GET /ml/analytics/{symbol}``) named a symbol with no analytics state."""

    status = 404
    code = "unknown_symbol"


class SecretFileError(SparkMlError, OSError):
    """A secret's ``SPARK_ML_<NAME>_FILE`` cannot be used: unreadable, empty, or set beside ``SPARK_ML_<NAME>``.

    A configuration fault, not bad input: the command exits 1 with this message (never the file's content).
    """

    code = "secret_file"


class TransportError(SparkMlError):
    """NATS refused this process or did not confirm what it was given; handled by the worker runtime."""

    code = "transport"


class NatsRefused(TransportError):
    """The server refused this client's credentials or certificate: retrying cannot help."""

    code = "nats_refused"


class NotStored(TransportError):
    """Some predictions of a batch were not confirmed stored by the stream.

    Args:
        stored: per message of the batch, whether the stream confirmed storing it.
        reason: the first refusal's description, or that the PubAcks did not come in time.

    Attributes:
        failed: how many were refused or not confirmed in time.
        total: size of the batch.
    """

    code = "not_stored"

    def __init__(self, stored: list[bool], reason: str) -> None:
        self.stored = stored
        self.total = len(stored)
        self.failed = self.total - sum(stored)
        self.reason = reason
        super().__init__(f"{self.failed} of {self.total} predictions not stored: {reason}")


class OwnershipLost(TransportError):
    """Another worker owns a unit now: its lease is gone or its checkpoint was written by someone else.

    Args:
        unit: the partition (or the forwarder unit).
        reason: what showed it (a stale revision, an expired lease, ...).
    """

    code = "ownership_lost"

    def __init__(self, unit: int, reason: str) -> None:
        self.unit = unit
        self.reason = reason
        super().__init__(f"unit {unit}: ownership lost ({reason})")


class ClusterRefused(TransportError):
    """The server cannot keep per-symbol state correct for this deployment; the worker refuses to start.

    The message names what is missing (the mapping line for the server config, JetStream, ...).
    """

    code = "cluster_refused"
