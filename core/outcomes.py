"""How a refused message or request is answered and counted: the one mapping from an exception to its outcome.

The stream (dead letter plus counters) and the ``ml.predict`` service (error reply plus counters) both ask
:func:`outcome_of`, so a given error gets the same reason code, metric status and ``error_type`` on every
path:

==================  =============================  =============  ==========================  ============
error               code (reply body, DLQ reason)  status         error_type                  service code
==================  =============================  =============  ==========================  ============
InvalidInput        its code                       invalid        invalid_input               400 (413)
ArtifactCorrupt     artifact_corrupt               error          model_error                 500
RegistryError       unknown_model                  invalid        invalid_input               400
ModelError          its code                       error          model_error | model_output  500
other SparkMlError  its code                       by its status  internal                    its status
anything else       internal                       error          internal                    500
==================  =============================  =============  ==========================  ============

A request that no worker can answer right now, because nobody owns the symbol's partition (a hand-over in
progress, docs/SCALEOUT.md), gets :func:`unavailable`: 503 ``unavailable``, never an answer from another
worker's (partial or empty) state.

:func:`error_of` goes the other way, for callers of the service (:mod:`spark_ml.client`): an error reply's
service code and body become the exception of this tree that the worker mapped to them, so a caller catches
:class:`~spark_ml.core.errors.InvalidInput` or :class:`~spark_ml.core.errors.ModelError` as the worker raised it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from spark_ml.core.errors import (
    ArtifactCorrupt,
    InvalidInput,
    ModelError,
    PayloadTooLarge,
    RegistryError,
    RequestTimeout,
    SparkMlError,
    Unavailable,
    UnknownSymbol,
)

__all__ = ["Outcome", "Status", "error_of", "internal_failure", "outcome_of", "unavailable"]

_MODEL_ERROR_TYPES = frozenset({"model_error", "model_output"})


class Status(StrEnum):
    """The ``status`` label of ml_predict_requests_total."""

    OK = "ok"
    INVALID = "invalid"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one refused input is answered and counted.

    Attributes:
        code: the reason code: ``error.code`` of a reply body, the dead-letter reason and its metric label.
        message: human-readable reason (a reply's ``error.message``, the dead letter's error header).
        status: ``invalid`` (the sender's fault) or ``error`` (ours), for ml_predict_requests_total.
        error_type: the ``error_type`` label of ml_model_errors_total.
        service_code: the ``Nats-Service-Error-Code`` of a request's reply (an HTTP status).
    """

    code: str
    message: str
    status: Status
    error_type: str
    service_code: int


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome of a refusal (see the module docstring); pure, so both transports agree."""
    if isinstance(exc, InvalidInput):
        return Outcome(exc.code, exc.message, Status.INVALID, "invalid_input", exc.status)
    if isinstance(exc, ArtifactCorrupt):
        return Outcome(exc.code, exc.message, Status.ERROR, "model_error", 500)
    if isinstance(exc, RegistryError):  # a registry refusal that reaches a request: the version asked for
        return Outcome("unknown_model", exc.message, Status.INVALID, "invalid_input", 400)
    if isinstance(exc, ModelError):
        error_type = exc.code if exc.code in _MODEL_ERROR_TYPES else "model_error"
        return Outcome(exc.code, exc.message, Status.ERROR, error_type, 500)
    if isinstance(exc, SparkMlError):
        status = Status.INVALID if exc.status < 500 else Status.ERROR
        return Outcome(exc.code, exc.message, status, "internal", exc.status)
    return internal_failure(exc)


def internal_failure(exc: BaseException) -> Outcome:
    """The outcome of an unexpected failure (a bug, not a refusal): 500 ``internal``, quoting the exception."""
    return Outcome("internal", f"{type(exc).__name__}: {exc}", Status.ERROR, "internal", 500)


def unavailable(message: str) -> Outcome:
    """The outcome of a request whose partition has no owner now: 503 ``unavailable`` (retry shortly)."""
    return Outcome("unavailable", message, Status.ERROR, "unavailable", 503)


def error_of(service_code: int, code: str, message: str) -> SparkMlError:
    """The exception an error reply stands for: the inverse of :func:`outcome_of` on its ``service_code``/``code``.

    ``outcome_of(error_of(o.service_code, o.code, o.message))`` gives back ``o``'s code and service code for every
    refusal the service answers (tests/core/test_error_replies.py). A reply outside the tree (another status) is a
    plain :class:`SparkMlError` carrying that status.
    """
    error: SparkMlError
    if service_code == 413 or code == PayloadTooLarge.code:
        error = PayloadTooLarge(message, code=code)
    elif code == "unknown_model":
        error = RegistryError(message, code=code)
    elif code == ArtifactCorrupt.code:
        error = ArtifactCorrupt(message)
    elif service_code == 504:
        error = RequestTimeout(message, code=code)
    elif service_code == 503:
        error = Unavailable(message, code=code)
    elif code == UnknownSymbol.code:
        error = UnknownSymbol(message)
    elif 400 <= service_code < 500:
        error = InvalidInput(message, code=code)
    elif code in _MODEL_ERROR_TYPES:
        error = ModelError(message, code=code)
    else:
        error = SparkMlError(message, code=code)
    if error.status != service_code:
        error.status = service_code
    return error
