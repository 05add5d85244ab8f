"""The dead letter: one frozen value per refused message, and the headers it goes out with.

The headers are the wire contract (``Spark-Ml-*`` names, their order, octet-stream for a payload never read);
the contract tests (``test_intake_contract.py``) check them on every intake, this file pins them exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from spark_ml.core import subjects
from spark_ml.core.partition import part_subject
from spark_ml.worker.pipeline import stream
from spark_ml.worker.pipeline.deadletter import DeadLetter
from spark_ml.worker.pipeline.publish import dead_letter_headers
from tests.support.messages import SEED

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_headers_name_reason_origin_and_trace_in_wire_order() -> None:
    letter = DeadLetter(
        b"\x81",
        reason="schema",
        message="mid:\tmust be > 0\r\n",
        subject=part_subject(3, "EURUSD"),
        stream_seq=42,
        encoding="json",
        trace=TRACE,
    )
    assert list(dead_letter_headers(letter).items()) == [
        ("Content-Type", "application/json"),
        (subjects.H_ERROR, "schema"),
        (subjects.H_ERROR_MESSAGE, "mid: must be > 0  "),
        (subjects.H_SUBJECT, subjects.snapshot_for("EURUSD")),
        (subjects.H_STREAM_SEQ, "42"),
        ("traceparent", TRACE),
    ]


@pytest.mark.parametrize("reason", ["decode", "payload_too_large"])
def test_a_payload_never_read_goes_out_as_octets(reason: str) -> None:
    letter = DeadLetter(b"\xc1", reason=reason, message="m", subject=subjects.SNAPSHOT, encoding="msgpack")
    headers = dead_letter_headers(letter)
    assert headers["Content-Type"] == "application/octet-stream"
    assert subjects.H_STREAM_SEQ not in headers and "traceparent" not in headers


def test_a_dead_letter_is_frozen_and_slotted() -> None:
    letter = DeadLetter(b"x", reason="decode", message="m", subject=subjects.SNAPSHOT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        letter.reason = "schema"  # type: ignore[misc]
    assert not hasattr(letter, "__dict__")


async def test_only_refused_messages_build_a_dead_letter(memory_pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a pipeline whose processor counts the dead letters it builds
    built: list[DeadLetter] = []

    def counting(*args: Any, **kwargs: Any) -> DeadLetter:
        built.append(DeadLetter(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(stream, "DeadLetter", counting)
    p = await memory_pipeline(at_least_once=True)
    # When good snapshots and two refused ones (one at intake, one in its batch) come in
    subject = subjects.snapshot_for("DLQ")
    for i in range(5):
        await p.intake.put(msgpack.packb({**SEED, "ts": SEED["ts"] + i}), subject)
    await p.intake.put(b"\xc1 not a snapshot", subject)
    await p.output.wait(predictions=5, dead_letters=1)
    await p.intake.put(msgpack.packb({**SEED, "ts": SEED["ts"] - 1}), subject)
    await p.output.wait(dead_letters=2)
    # Then one value was built per refused message, none for the good ones, and each went out as built
    assert [(d.reason, d.stream_seq) for d in built] == [("decode", 6), ("out_of_order", 7)]
    assert [d.data for d in p.output.dead_letters] == [d.raw for d in built]
    assert [d.headers for d in p.output.dead_letters] == [dead_letter_headers(d) for d in built]
