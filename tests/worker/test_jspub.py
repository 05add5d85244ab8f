"""AckedPublisher on a real nats-server: stored, deduplicated, refused, no stream, no answer; both write paths."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from spark_ml.worker.natsio import writer
from spark_ml.worker.natsio.jspub import AckedPublisher, NotStored
from tests.support.lifecycle import started

SUBJECT = "preds.x"


@pytest.fixture
async def publisher(nc: Client) -> AsyncIterator[Callable[..., Awaitable[AckedPublisher]]]:
    async with started() as group:

        async def make(timeout_s: float = 2.0) -> AckedPublisher:
            return await group.start(AckedPublisher(nc, SUBJECT, timeout_s=timeout_s))

        yield make


async def _stream(nc: Client, **config: object) -> None:
    await nc.jetstream().add_stream(
        StreamConfig(name="PREDS", subjects=[SUBJECT], storage=StorageType.FILE, **config)  # type: ignore[arg-type]
    )


def _batch(n: int, start: int = 0) -> tuple[list[bytes], list[str | None]]:
    return [b"p%d" % i for i in range(start, start + n)], [f"id-{i}" for i in range(start, start + n)]


@pytest.mark.parametrize("raw", [True, False], ids=["one-write", "plain-publish"])
async def test_a_stored_batch_returns_and_a_republished_one_is_deduplicated(
    nc: Client, publisher, monkeypatch: pytest.MonkeyPatch, raw: bool
) -> None:
    if not raw:
        monkeypatch.setattr(writer, "can_write_raw", lambda _: False)
    await _stream(nc)
    pub = await publisher()
    payloads, ids = _batch(300)
    # When a batch is published, the call returns once every message is stored, in order, with its id
    await pub.publish(payloads, ids)
    js = nc.jetstream()
    info = await js.stream_info("PREDS")
    assert info.state.messages == 300
    first, last = await js.get_msg("PREDS", 1), await js.get_msg("PREDS", 300)
    assert (first.data, last.data) == (b"p0", b"p299")
    assert first.headers and first.headers["Nats-Msg-Id"] == "id-0"
    # And publishing it again (a redelivered input) is acknowledged as duplicates and stored once
    await pub.publish(payloads, ids)
    assert (await js.stream_info("PREDS")).state.messages == 300
    assert pub.stored == 600 and pub.refused == 0


async def test_messages_without_an_id_are_stored_too(nc: Client, publisher) -> None:
    await _stream(nc)
    pub = await publisher()
    await pub.publish([b"a", b"b"], [None, "x"])
    assert (await nc.jetstream().stream_info("PREDS")).state.messages == 2


async def test_a_full_stream_refuses_and_the_batch_raises(nc: Client, publisher) -> None:
    # Given a stream with room for 10 that discards new messages when full
    await _stream(nc, max_msgs=10, discard=DiscardPolicy.NEW)
    pub = await publisher()
    payloads, ids = _batch(25)
    # Then a batch of 25 raises, saying that 15 were refused and why
    with pytest.raises(NotStored) as err:
        await pub.publish(payloads, ids)
    assert (err.value.failed, err.value.total) == (15, 25)
    assert err.value.stored == [True] * 10 + [False] * 15
    assert "maximum messages" in err.value.reason
    assert (await nc.jetstream().stream_info("PREDS")).state.messages == 10


async def test_no_stream_on_the_subject_is_refused_at_once(nc: Client, publisher) -> None:
    pub = await publisher(timeout_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(NotStored) as err:
        await pub.publish(*_batch(3))
    # "no responders" comes back per message: no waiting for the timeout
    assert time.monotonic() - t0 < 2.0
    assert err.value.failed == 3 and err.value.reason.startswith("503")


async def test_no_answer_within_the_timeout_is_not_stored(nc: Client, publisher) -> None:
    # Given someone listens on the subject but no stream stores it: no PubAck, and no "no responders"
    await nc.subscribe(SUBJECT, cb=None)
    await nc.flush()
    pub = await publisher(timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(NotStored) as err:
        await pub.publish(*_batch(4))
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert err.value.failed == 4 and "no PubAck" in err.value.reason
