"""JetStream wire helpers: ack subjects in both layouts (held to nats-py's parser), statuses, request bodies, frames."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.worker.natsio.jspull import _Requests
from spark_ml.worker.natsio.jswire import ACK, nak_body, next_request, parse_ack, status_of, stream_seq
from spark_ml.worker.natsio.writer import ack_frames

_token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij0123456789-_", min_size=1, max_size=12)
_num = st.integers(min_value=0, max_value=2**63 - 1)


@given(stream=_token, consumer=_token, nums=st.tuples(_num, _num, _num, _num, _num))
def test_v1_ack_subject_reads_like_nats_py(stream: str, consumer: str, nums: tuple[int, ...]) -> None:
    delivered, sseq, cseq, ts, pending = nums
    reply = f"$JS.ACK.{stream}.{consumer}.{delivered}.{sseq}.{cseq}.{ts}.{pending}"
    meta = Msg(None, reply=reply).metadata  # type: ignore[arg-type]  # metadata needs no client
    info = parse_ack(reply)
    assert (info.stream, info.consumer) == (meta.stream, meta.consumer)
    assert (info.delivered, info.stream_seq, info.consumer_seq) == (
        meta.num_delivered,
        meta.sequence.stream,
        meta.sequence.consumer,
    )
    assert info.pending == meta.num_pending and info.timestamp_ns == ts
    assert stream_seq(reply) == sseq


@given(
    domain=_token,
    acc=_token,
    stream=_token,
    consumer=_token,
    nums=st.tuples(_num, _num, _num, _num, _num),
    random=st.one_of(st.none(), _token),
)
def test_v2_ack_subject_with_domain_and_account_hash(
    domain: str, acc: str, stream: str, consumer: str, nums: tuple[int, ...], random: str | None
) -> None:
    delivered, sseq, cseq, ts, pending = nums
    reply = f"$JS.ACK.{domain}.{acc}.{stream}.{consumer}.{delivered}.{sseq}.{cseq}.{ts}.{pending}"
    if random is not None:
        reply += f".{random}"
    meta = Msg(None, reply=reply).metadata  # type: ignore[arg-type]
    info = parse_ack(reply)
    assert (info.stream, info.consumer, info.stream_seq, info.consumer_seq) == (
        meta.stream,
        meta.consumer,
        meta.sequence.stream,
        meta.sequence.consumer,
    )
    assert info.delivered == delivered and info.pending == pending
    assert stream_seq(reply) == sseq


@pytest.mark.parametrize(
    "reply", ["", "_INBOX.abc.1", "$JS.ACK.S.C.1.2.3", "$JS.ACK.S.C.1.2.3.4.5.6", "$JS.NAK.S.C.1.2.3.4.5"]
)
def test_other_subjects_are_refused(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_ack(reply)
    if reply.count(".") != 8:  # a 9-token subject is read positionally on the hot path
        with pytest.raises(ValueError):
            stream_seq(reply)


def test_status_messages_and_ordinary_ones() -> None:
    # headers as nats-py's _process_headers returns them for "NATS/1.0 408 Request Timeout" + pending counts
    timeout = {"Status": "408", "Description": "Request Timeout", "Nats-Pending-Messages": "12"}
    assert status_of(b"", timeout) == (408, "Request Timeout", 12)
    assert status_of(b"", {"Status": "100", "Description": "Idle Heartbeat"}) == (100, "Idle Heartbeat", None)
    assert status_of(b"", {"Status": "409", "Description": "Exceeded MaxWaiting"}).code == 409  # type: ignore[union-attr]
    # a message with a payload, or without a numeric status, is data
    assert status_of(b"x", timeout) is None
    assert status_of(b"", None) is None
    assert status_of(b"", {"Nats-Msg-Id": "1"}) is None


def test_request_body_durations_are_nanoseconds() -> None:
    assert json.loads(next_request(64, expires_s=5.0, heartbeat_s=1.0)) == {
        "batch": 64,
        "expires": 5_000_000_000,
        "idle_heartbeat": 1_000_000_000,
    }
    assert json.loads(next_request(1, expires_s=0, no_wait=True)) == {"batch": 1, "no_wait": True}


def test_nak_with_delay_and_ack_frames() -> None:
    assert nak_body(0) == b"-NAK"
    assert nak_body(1.5) == b'-NAK {"delay":1500000000}'
    assert ack_frames([b"$JS.ACK.a", b"$JS.ACK.b"], ACK) == b"PUB $JS.ACK.a 4\r\n+ACK\r\nPUB $JS.ACK.b 4\r\n+ACK\r\n"
    assert ack_frames([], ACK) == b""


def test_request_accounting_is_clamped_by_open_requests() -> None:
    r = _Requests()
    r.add(1, 10, deadline=1.0)
    r.add(2, 10, deadline=2.0)
    assert r.requested == 20
    for _ in range(15):  # deliveries do not say which request they fill
        r.delivered()
    assert r.requested == 5
    r.ended(1, unfilled=0)  # request 1 ended full: nothing more from it
    assert (r.requested, r.open_total) == (5, 10)
    r.ended(99, unfilled=3)  # an unknown request changes nothing
    assert r.requested == 5
    r.expire(now=2.5)  # request 2 is past its deadline: nothing more can come
    assert (r.requested, r.open_total, r.sizes) == (0, 0, {})
    for _ in range(3):
        r.delivered()  # late deliveries never make it negative
    assert r.requested == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"NATS/1.0 409 Exceeded MaxWaiting\r\n\r\n", (409, "Exceeded MaxWaiting", None)),
        (
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 7\r\nNats-Pending-Bytes: 0\r\n\r\n",
            (408, "Request Timeout", 7),
        ),
        (
            b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\nNats-Last-Stream: 0\r\n\r\n",
            (100, "Idle Heartbeat", None),
        ),
        (b"NATS/1.0 503\r\n\r\n", (503, "", None)),
    ],
)
async def test_status_from_headers_as_nats_py_parses_them(raw: bytes, expected: tuple[int, str, int | None]) -> None:
    # nats-py keys the inline description by an enum member: the status must still read its text
    headers = await Client()._process_headers(raw)
    assert status_of(b"", headers) == expected
