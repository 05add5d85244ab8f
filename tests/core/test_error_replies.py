"""Error replies back to exceptions (:func:`error_of`, what the client raises): the inverse of :func:`outcome_of`."""

from __future__ import annotations

import pytest

from spark_ml.core.errors import (
    ArtifactCorrupt,
    InvalidInput,
    ModelError,
    PayloadTooLarge,
    RegistryError,
    RequestTimeout,
    SparkMlError,
    Unavailable,
)
from spark_ml.core.outcomes import error_of, internal_failure, outcome_of, unavailable

REFUSALS: list[BaseException] = [
    InvalidInput("mid: must be finite and > 0", code="schema"),
    InvalidInput("not valid msgpack", code="decode"),
    InvalidInput("ts older than the last", code="out_of_order"),
    InvalidInput("features overflow", code="non_finite_features"),
    PayloadTooLarge("payload is 70000 bytes"),
    RegistryError("no model version 'v9'", code="unknown_model"),
    ArtifactCorrupt("sha256 mismatch"),
    ModelError("weights went missing"),
    ModelError("score 1.5", code="model_output"),
    Unavailable("no owner of partition 3"),
    RequestTimeout("no reply within 2s"),
    SparkMlError("odd", code="odd"),
]


@pytest.mark.parametrize("exc", REFUSALS, ids=lambda e: f"{type(e).__name__}-{getattr(e, 'code', '')}")
def test_an_error_reply_raises_the_error_the_worker_mapped_to_it(exc: BaseException) -> None:
    # Given the reply the service sends for an error
    sent = outcome_of(exc)
    # When a caller turns it back into an exception
    got = error_of(sent.service_code, sent.code, sent.message)
    # Then it is of the same class, with the same code, message and status, and maps to the same reply
    assert type(got) is type(exc)
    assert (got.code, got.message, got.status) == (sent.code, sent.message, sent.service_code)
    back = outcome_of(got)
    assert (back.code, back.service_code, back.message) == (sent.code, sent.service_code, sent.message)


def test_unavailable_and_internal_replies() -> None:
    sent = unavailable("symbol 'X' (partition 3 of 16): no owner")
    got = error_of(sent.service_code, sent.code, sent.message)
    assert isinstance(got, Unavailable) and not isinstance(got, TimeoutError) and got.code == "unavailable"
    internal = internal_failure(KeyError("k"))
    got = error_of(internal.service_code, internal.code, internal.message)
    assert type(got) is SparkMlError and (got.status, got.code) == (500, "internal")


def test_a_timeout_is_also_the_stdlib_timeout() -> None:
    err = error_of(504, "timeout", "late")
    assert isinstance(err, RequestTimeout) and isinstance(err, TimeoutError) and isinstance(err, Unavailable)
    # An unknown 4xx is still the sender's fault, with its own status
    err = error_of(401, "unauthorized", "missing key")
    assert isinstance(err, InvalidInput) and err.status == 401 and InvalidInput.status == 400
