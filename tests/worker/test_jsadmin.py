"""Raw JetStream API requests on a real nats-server: the partitioning stream, pinned consumers, RESET, UNPIN."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig

from spark_ml.core import subjects
from spark_ml.core.errors import ClusterRefused
from spark_ml.core.partition import part_filter, partition_of, stream_transform
from spark_ml.worker.natsio import jsadmin
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import connected

STREAM = subjects.JS_STREAM
SUBJECTS = [subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD]


async def _subjects_stored(nc: Client) -> dict[str, int]:
    reply = await nc.request(f"$JS.API.STREAM.INFO.{STREAM}", json.dumps({"subjects_filter": ">"}).encode())
    return dict(json.loads(reply.data)["state"].get("subjects") or {})


@pytest.fixture
async def unmapped(tmp_path) -> AsyncIterator[Client]:
    """A connection to a server without the partition mapping (the fixture's maps market.snapshot.* itself)."""
    with NatsServer(store_dir=tmp_path / "plain") as server:
        async with connected(server.url, allow_reconnect=False) as client:
            yield client


async def test_the_stream_stores_symbol_subjects_partitioned_and_bare_ones_as_they_are(unmapped: Client) -> None:
    nc = unmapped
    # Given the stream made with the transform of 8 partitions (on a server without a mapping of its own)
    config = await jsadmin.ensure_stream(nc, STREAM, subjects=SUBJECTS, transform=stream_transform(8))
    assert config["subject_transform"] == stream_transform(8)
    # When snapshots are published on market.snapshot.<X> and on bare market.snapshot
    js = nc.jetstream()
    for symbol in ("BTCUSDT", "EURUSD", "AAPL"):
        await js.publish(f"{subjects.SNAPSHOT}.{symbol}", b"{}")
    await js.publish(subjects.SNAPSHOT, b"{}")
    # Then each symbol is stored on its partition's subject (NATS's own hash), the bare one unchanged
    stored = await _subjects_stored(nc)
    want = {f"market.snapshot.part.{partition_of(s, 8)}.{s}": 1 for s in ("BTCUSDT", "EURUSD", "AAPL")}
    assert stored == {**want, subjects.SNAPSHOT: 1}
    # And ensuring it again changes nothing
    assert await jsadmin.ensure_stream(nc, STREAM, subjects=SUBJECTS, transform=stream_transform(8)) == config


async def test_an_existing_stream_gets_the_transform_and_another_partition_count_is_refused(nc: Client) -> None:
    # Given the stream as the unpartitioned intake made it (no transform)
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=SUBJECTS, storage=StorageType.FILE))
    # When it is ensured with the transform: it is updated
    config = await jsadmin.ensure_stream(nc, STREAM, subjects=SUBJECTS, transform=stream_transform(4))
    assert config["subject_transform"] == stream_transform(4) and config["subjects"] == SUBJECTS
    # Then a worker configured with another partition count refuses, naming both
    with pytest.raises(ClusterRefused, match=r"partition\(4,1\).*partition\(16,1\)"):
        await jsadmin.ensure_stream(nc, STREAM, subjects=SUBJECTS, transform=stream_transform(16))


def test_a_stream_that_came_back_without_the_transform_is_refused() -> None:
    # An old server drops the unknown field and echoes the config without it
    with pytest.raises(ClusterRefused, match=r"without its subject transform.*2\.10"):
        jsadmin._checked_stream(STREAM, {"name": STREAM, "subjects": SUBJECTS}, stream_transform(4))


async def test_pinned_consumer_info_reset_and_unpin(nc: Client) -> None:
    await jsadmin.ensure_stream(nc, STREAM, subjects=SUBJECTS, transform=stream_transform(1))
    consumer = jsadmin.PinnedConsumer("ml-workers-p0", part_filter(0), group="ml", pin_ttl_s=2.5, ack_wait_s=10)
    # Given a pinned consumer: the server holds the group, the policy and the TTL in nanoseconds
    info = await jsadmin.ensure_pinned_consumer(nc, STREAM, consumer)
    held = info["config"]
    assert held["priority_groups"] == ["ml"] and held["priority_policy"] == "pinned_client"
    assert held["priority_timeout"] == 2_500_000_000 and held["filter_subject"] == "market.snapshot.part.0.*"
    assert jsadmin.pinned_client_id(info, "ml") is None
    # When a pull request takes a message, that client is pinned, and the info says with which id
    js = nc.jetstream()
    for i in range(5):
        await js.publish("market.snapshot.part.0.X", str(i).encode())
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(
        "$JS.API.CONSUMER.MSG.NEXT.MARKET_SNAPSHOTS.ml-workers-p0",
        json.dumps({"batch": 3, "expires": 1_000_000_000, "group": "ml"}).encode(),
        reply=inbox,
    )
    msgs = [await sub.next_msg(timeout=2) for _ in range(3)]
    pins = {m.headers["Nats-Pin-Id"] for m in msgs if m.headers}
    info = await jsadmin.consumer_info(nc, STREAM, consumer.name)
    assert pins == {jsadmin.pinned_client_id(info, "ml")} and info["num_ack_pending"] == 3
    # Then RESET to sequence 2 forgets what is pending, delivers from 2 on and puts the ack floor at 1
    assert await jsadmin.reset(nc, STREAM, consumer.name, 2) == 2
    info = await jsadmin.consumer_info(nc, STREAM, consumer.name)
    assert info["num_ack_pending"] == 0 and info["num_pending"] == 4 and info["ack_floor"]["stream_seq"] == 1
    # And RESET 0 goes to the ack floor + 1
    assert await jsadmin.reset(nc, STREAM, consumer.name, 0) == 2
    # And UNPIN releases the pin; an unknown group is an API error
    await jsadmin.unpin(nc, STREAM, consumer.name, "ml")
    assert jsadmin.pinned_client_id(await jsadmin.consumer_info(nc, STREAM, consumer.name), "ml") is None
    with pytest.raises(Exception, match="priority group"):
        await jsadmin.unpin(nc, STREAM, consumer.name, "other")


async def test_a_consumer_that_came_back_unpinned_is_refused(nc: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a server that ignores the priority fields (as before 2.11): simulated by not sending them
    await jsadmin.ensure_stream(nc, STREAM, subjects=SUBJECTS, transform=stream_transform(1))
    consumer = jsadmin.PinnedConsumer("ml-workers-p0", part_filter(0), group="ml", pin_ttl_s=2, ack_wait_s=10)
    plain = {k: v for k, v in consumer.config().items() if not k.startswith("priority_")}
    monkeypatch.setattr(consumer, "config", lambda: plain)
    # Then the echoed config gives it away
    with pytest.raises(ClusterRefused, match=r"without the priority group 'ml'.*2\.11"):
        await jsadmin.ensure_pinned_consumer(nc, STREAM, consumer)
