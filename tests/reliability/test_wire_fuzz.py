"""Wire-level fuzzing: raw ``PUB``/``HPUB`` frames, from a seeded generator, against a real ``spark-ml worker``.

Frames carry arbitrary subjects (valid ones, bytes that are not UTF-8), reply subjects, header blocks (valid,
``NATS/1.0`` alone, status lines of any bytes, lines of any bytes) and payloads of any size up to the server's
``max_payload`` (the sizes at and just under it included). They are written over a bare socket, so nothing
client-side cleans them up. After each batch the worker must predict a good snapshot and answer ``ml.predict``
within a second, or have exited non-zero with its one clear line (issue 14: never a silent, healthy-looking
stop). Bounded: a fixed seed, a fixed number of batches, well under 90 s for the file on a laptop.
"""

from __future__ import annotations

import random

import msgpack
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from tests.support.connections import RawPublisher
from tests.support.messages import SEED, Collector
from tests.support.processes import SpawnWorker, WorkerProcess, http_status

SEED_WIRE = 20261203
BATCHES = 20
FRAMES_PER_BATCH = 12
PROMPT_S = 1.0
"""How soon after a batch the worker must predict a good snapshot and answer ml.predict."""
_LOST = "nats connection lost for good"


def _token(rng: random.Random) -> bytes:
    """A subject token: plain, or any bytes but whitespace, dots and wildcards (the server routes those)."""
    if rng.random() < 0.5:
        return b"S%d" % rng.randrange(1000)
    alphabet = [b for b in range(0x21, 0x100) if b not in b".*>"]
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))


def _subject(rng: random.Random) -> bytes:
    head = rng.choice([b"market.snapshot.", b"market.snapshot.", b"ml.predict", b"analytics.pnl.", b"ml.model.info"])
    return head + _token(rng) if head.endswith(b".") else head


def _reply(rng: random.Random) -> bytes:
    return rng.choice([b"", b"", b"_INBOX.fuzz", b"_INBOX." + _token(rng)])


def _header(rng: random.Random) -> bytes | None:
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))).replace(b"\r", b"").replace(b"\n", b"")
    return rng.choice(
        [
            None,
            None,
            b"NATS/1.0\r\n\r\n",
            b"NATS/1.0",
            b"NATS/1.0\r\n",
            b"NATS/1.0 " + junk + b"\r\n\r\n",
            b"NATS/1.0 503\r\n\r\n",
            b"NATS/1.0\r\nContent-Type: " + junk + b"\r\n\r\n",
            b"NATS/1.0\r\n" + junk + b": " + junk + b"\r\n\r\n",
            b"NATS/1.0\r\nStatus: 100\r\nNats-Msg-Id: " + junk + b"\r\n\r\n",
        ]
    )


def _payload(rng: random.Random, room: int) -> bytes:
    """Any bytes, a snapshot or a request, or a size at the edge of what fits (``room``: the server's limit
    less the header block)."""
    kind = rng.choice(["bytes", "bytes", "snapshot", "request", "edge"])
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if kind == "snapshot":
        return msgpack.packb({**SEED, "symbol": f"F{rng.randrange(50)}", "ts": SEED["ts"] + rng.randrange(10**6)})
    if kind == "request":
        return msgpack.packb({"snapshot": {**SEED, "symbol": "FREQ"}})
    return b"\x93" + b"x" * max(0, room - rng.choice([0, 1, 2, 10, 100, 160, 200]) - 1)


def frame(rng: random.Random, max_payload: int) -> bytes:
    subject, reply, header = _subject(rng), _reply(rng), _header(rng)
    r = b" " + reply if reply else b""
    if header is None:
        body = _payload(rng, max_payload)
        return b"PUB %s%s %d\r\n%s\r\n" % (subject, r, len(body), body)
    body = _payload(rng, max_payload - len(header))
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (subject, r, len(header), len(header) + len(body), header, body)


async def _send_batch(url: str, frames: list[bytes]) -> None:
    """Write the frames; a frame the server refuses closes only this publisher's connection: open another."""
    pending = list(frames)
    while pending:
        async with RawPublisher.connect(url) as raw:
            while pending:
                try:
                    await raw.send(pending[0])
                except (AssertionError, ConnectionError):
                    pending.pop(0)
                    break
                pending.pop(0)


async def _still_serving(nc: Client, preds: Collector, ts: int) -> str | None:
    """None when a good snapshot is predicted and ml.predict answers, each within PROMPT_S; else what failed."""
    want = len(preds.msgs) + 1
    await nc.publish(subjects.snapshot_for("PROBE"), msgpack.packb({**SEED, "symbol": "PROBE", "ts": ts}))
    try:
        await preds.wait(want, timeout=PROMPT_S)
    except TimeoutError:
        return "no prediction"
    try:
        reply = await nc.request(
            subjects.PREDICT, msgpack.packb({"snapshot": {**SEED, "symbol": "PROBE", "ts": ts}}), timeout=PROMPT_S
        )
    except Exception as exc:
        return f"ml.predict: {type(exc).__name__}"
    return None if "score" in msgpack.unpackb(reply.data) else f"ml.predict answered {reply.data[:100]!r}"


def _exited_clearly(worker: WorkerProcess) -> bool:
    code = worker.proc.poll() if worker.proc is not None else None
    return code is not None and code != 0 and _LOST in worker.log()


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_fuzzed_frames_never_silence_the_worker(
    nats_url: str, nc: Client, spawn_worker: SpawnWorker, mode: str
) -> None:
    # Given a real worker, a collector of predictions, and a seeded frame generator
    worker = await spawn_worker(nats_url, mode=mode, ack_wait_s=2).ready()
    preds = Collector()
    await nc.subscribe(subjects.PREDICTION, cb=preds.cb)
    await nc.flush()
    await nc.flush()
    rng = random.Random(f"{SEED_WIRE}-{mode}")
    ts = SEED["ts"]
    health = worker.metrics_url.removesuffix("/metrics") + "/healthz"
    for batch in range(BATCHES):
        # When a batch of hostile frames arrives
        frames = [frame(rng, nc.max_payload) for _ in range(FRAMES_PER_BATCH)]
        await _send_batch(nats_url, frames)
        # Then the worker predicts and answers at once, or has exited non-zero saying why
        ts += 1
        failed = await _still_serving(nc, preds, ts)
        if failed is not None:
            if _exited_clearly(worker):
                return  # a clear, non-zero exit: its supervisor restarts it
            heads = [f[:80] for f in frames]
            pytest.fail(f"batch {batch}: {failed}; frames {heads}\n{worker.log()[-3000:]}")
    # ... and at the end it is alive and healthy, having seen the frames (dead letters, wire errors)
    assert worker.proc is not None and worker.proc.poll() is None
    assert http_status(health) == 200
    assert "encountered error" not in worker.log()
    scrape = await worker.scrape()
    assert scrape.total("ml_dead_letters_total") > 0
    assert scrape.total("ml_wire_errors_total") > 0
    assert scrape.total("ml_nats_reconnects_total") == 0
