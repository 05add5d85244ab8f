"""The one mapping from an exception to how it is answered and counted, and the one error tree."""

from __future__ import annotations

import pytest

from spark_ml.core.errors import (
    ArtifactCorrupt,
    InvalidInput,
    ModelError,
    NatsRefused,
    NotStored,
    PayloadTooLarge,
    RegistryError,
    SparkMlError,
    TransportError,
)
from spark_ml.core.outcomes import Outcome, Status, internal_failure, outcome_of


@pytest.mark.parametrize(
    ("exc", "want"),
    [
        (InvalidInput("mid: bad", code="schema"), Outcome("schema", "mid: bad", Status.INVALID, "invalid_input", 400)),
        (PayloadTooLarge("big"), Outcome("payload_too_large", "big", Status.INVALID, "invalid_input", 413)),
        (ArtifactCorrupt("sha"), Outcome("artifact_corrupt", "sha", Status.ERROR, "model_error", 500)),
        (RegistryError("no v9"), Outcome("unknown_model", "no v9", Status.INVALID, "invalid_input", 400)),
        (ModelError("boom"), Outcome("model_error", "boom", Status.ERROR, "model_error", 500)),
        (ModelError("1.5", code="model_output"), Outcome("model_output", "1.5", Status.ERROR, "model_output", 500)),
        (ModelError("odd", code="odd"), Outcome("odd", "odd", Status.ERROR, "model_error", 500)),
        (SparkMlError("x"), Outcome("error", "x", Status.ERROR, "internal", 500)),
        (KeyError("k"), Outcome("internal", "KeyError: 'k'", Status.ERROR, "internal", 500)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_outcome_of_each_branch(exc: BaseException, want: Outcome) -> None:
    # Given an error of each branch, When it is mapped, Then the code, status, type and reply code are fixed
    assert outcome_of(exc) == want


def test_internal_failure_ignores_the_tree() -> None:
    assert internal_failure(InvalidInput("bad")) == Outcome(
        "internal", "InvalidInput: bad", Status.ERROR, "internal", 500
    )


def test_transport_errors_are_in_the_tree_and_importable_where_they_are_used() -> None:
    from spark_ml.worker.connect import NatsRefused as ConnectNatsRefused
    from spark_ml.worker.natsio.jspub import NotStored as JspubNotStored

    assert ConnectNatsRefused is NatsRefused and JspubNotStored is NotStored
    assert issubclass(NatsRefused, TransportError) and issubclass(NotStored, TransportError)
    assert issubclass(TransportError, SparkMlError)
    err = NotStored([True, False, False], "no leader")
    assert (err.total, err.failed, err.code) == (3, 2, "not_stored")
    assert str(err) == err.message == "2 of 3 predictions not stored: no leader"
