"""The one exception tree of spark-ml.

Grouped by who handles them::

    SparkMlError
     ├── InvalidInput            bad bytes or a bad snapshot: HTTP 400, Nats-Service-Error-Code 400, DLQ
     │    └── PayloadTooLarge    over the size limit: HTTP 413
     ├── ModelError              the model failed or produced an out-of-range score: 500
     └── RegistryError           a registry operation was refused (unknown version, corrupt artifact)
          └── ArtifactCorrupt    checksum mismatch or unreadable artifact

`InvalidInput.code` is the short machine-readable reason that travels in headers and error bodies.
"""

from __future__ import annotations

__all__ = ["ArtifactCorrupt", "InvalidInput", "ModelError", "PayloadTooLarge", "RegistryError", "SparkMlError"]


class SparkMlError(Exception):
    """Root of every error spark-ml raises on purpose."""

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
