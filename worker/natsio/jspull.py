"""Our own pull requests on a durable JetStream consumer, in place of nats-py's ``fetch()``.

nats-py's ``fetch(n)`` creates a task, a uuid and a ``wait_for`` per message, and a pending ``fetch`` lingers
to fill its batch (measured: about 17k msgs/s and 50 us of CPU per message through the whole worker).
:class:`PullConsumer` publishes ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` requests itself, to
one wildcard inbox whose frames go straight from the protocol parser to the processor
(:mod:`spark_ml.worker.natsio.jsroute`), and settles a batch of messages with one socket write
(:mod:`spark_ml.worker.natsio.writer`).

Flow control: ``requested`` (asked for, not yet delivered) plus ``unsettled`` (delivered, not yet
acked, nak'ed or terminated) stays under ``max_in_flight``, so the pool always has the next batch on its
way while the un-acked messages of this process stay bounded. New requests go out as settling frees
room. Deliveries do not say which request they fill (the server round-robins its waiting requests and
keeps each message's own subject), so ``requested`` is kept as a total: each delivery takes one off,
each ``408``/``409`` takes off what its request left unfilled, and it is clamped to what the requests
not yet expired could still bring. A reconnect or a silence longer than three idle heartbeats while
requests are open means the server forgot them: start over.

A message that stays unsettled past the ack wait (its batch failed, or the pool abandoned it at
shutdown) no longer counts against ``max_in_flight``: the server redelivers it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.worker.natsio import writer
from spark_ml.worker.natsio.jsroute import subscribe_raw
from spark_ml.worker.natsio.jswire import ACK, NAK, Status, next_request, status_of, stream_seq

__all__ = ["JsMsg", "PullConsumer"]

log = logging.getLogger(__name__)
_now = time.monotonic
_TICK_S = 0.25
_SILENCE_HEARTBEATS = 3
_QUIET_S = 0.03


class JsMsg(Msg):
    """A message delivered to one of our pull requests.

    A :class:`~nats.aio.msg.Msg` (``reply`` is its ack subject, ``metadata`` works), so code that reads a
    JetStream message's sequence from a ``Msg`` reads it from this too; built without the dataclass's
    ``__init__``, and with the stream sequence parsed once.
    """

    def __init__(self, nc: Client, subject: str, ack: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        self._client = nc
        self.subject = subject
        self.reply = ack.decode()
        self.data = data
        self.headers = headers
        self.ack_subject = ack
        self.seq = stream_seq(self.reply)
        """The message's stream sequence."""
        self.live = True
        """Counted in the consumer's ``unsettled``: not yet acked, nak'ed or terminated, nor given up on."""
        self.received = _now()


class _Requests:
    """Pull requests the server may still be filling: ``requested`` in total, and an upper bound on it."""

    __slots__ = ("deadlines", "open_total", "requested", "sizes")

    def __init__(self) -> None:
        self.requested = 0
        self.sizes: dict[int, int] = {}
        self.deadlines: dict[int, float] = {}
        self.open_total = 0

    def add(self, rid: int, n: int, deadline: float) -> None:
        self.sizes[rid] = n
        self.deadlines[rid] = deadline
        self.open_total += n
        self.requested += n

    def delivered(self) -> None:
        if self.requested > 0:
            self.requested -= 1

    def ended(self, rid: int, unfilled: int | None) -> None:
        """The server ended request ``rid`` with ``unfilled`` messages of it never sent."""
        n = self.sizes.pop(rid, None)
        self.deadlines.pop(rid, None)
        if n is None:
            return
        self.open_total -= n
        self.requested = max(0, self.requested - (n if unfilled is None else min(unfilled, n)))
        self.requested = min(self.requested, self.open_total)

    def expire(self, now: float) -> None:
        # Deadlines grow with insertion order (one expiry for every request), so the oldest come first.
        deadlines = self.deadlines
        while deadlines:
            rid = next(iter(deadlines))
            if deadlines[rid] > now:
                break
            del deadlines[rid]
            self.open_total -= self.sizes.pop(rid)
        self.requested = min(self.requested, self.open_total)

    def clear(self) -> None:
        self.sizes.clear()
        self.deadlines.clear()
        self.open_total = self.requested = 0


class PullConsumer:
    """Pull requests on one durable consumer, delivering each message to ``on_msg`` as it arrives.

    Args:
        nc: the connection.
        stream, consumer: the durable pull consumer (it must exist).
        on_msg: ``await on_msg(msg)`` for every delivered message, in arrival order; it settles the message
            later through :meth:`settle` (or leaves it to the server's redelivery).
        max_in_flight: bound on messages requested and not delivered plus delivered and not settled.
        batch: largest pull request.
        ack_wait_s: the consumer's ack wait (after it, an unsettled message no longer counts as in flight).
        expires_s: lifetime of a pull request on the server.
        heartbeat_s: idle heartbeat the server sends on a waiting request (to notice forgotten requests).
        recover: awaited (at most every few seconds) when the consumer seems to be gone, to re-create it.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        on_msg: Callable[[JsMsg], Awaitable[None]],
        *,
        max_in_flight: int,
        batch: int,
        ack_wait_s: float,
        expires_s: float = 5.0,
        heartbeat_s: float = 1.0,
        recover: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if max_in_flight < 1 or batch < 1:
            raise ValueError("max_in_flight and batch must be >= 1")
        self.nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_msg = on_msg
        self.max_in_flight = max_in_flight
        self.batch = min(batch, max_in_flight)
        self.min_request = max(1, self.batch // 4)
        """Smaller gaps wait for more room: one request per few messages would cost more than it brings."""
        self.ack_wait_s = ack_wait_s
        self.expires_s = expires_s
        self.heartbeat_s = heartbeat_s
        self._recover = recover
        self._requests = _Requests()
        self.unsettled = 0
        self._live: deque[JsMsg] = deque()
        self._inbox = ""
        self._prefix = 0
        self._next_rid = 0
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._running = False
        self._last_frame = 0.0
        self._pause_until = 0.0
        self._last_recover = 0.0
        self._reconnects = 0
        self._raw = writer.can_write_raw(nc)
        self.delivered = 0
        self.given_up = 0
        """Messages that stayed unsettled past the ack wait (left to the server's redelivery)."""
        self.statuses: dict[int, int] = {}
        """Status messages received, by code (for tests and logs)."""

    @property
    def requested(self) -> int:
        return self._requests.requested

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._prefix = len(self._inbox) + 1
        self._sub, direct = await subscribe_raw(self.nc, f"{self._inbox}.*", self._on_frame)
        if not direct:
            log.warning("nats-py internals changed: jetstream intake runs through plain callbacks (slower)")
        self._reconnects = self.nc.stats.get("reconnects", 0)
        self._running = True
        self._last_frame = _now()
        self._task = asyncio.create_task(self._run(), name="spark-ml-js-pull")

    async def stop(self, flush_timeout: float = 0.5) -> None:
        """Ask for nothing more, and hand on what was asked for already (bounded by ``flush_timeout``).

        The server hands a consumer's deliveries to our connection asynchronously: a message it delivers
        after it processed our unsubscribe finds no subscriber and waits out the ack wait (measured: a
        few hundred under a backlog when unsubscribing first). So the requests are let run out first:
        under a backlog they fill within milliseconds; idle ones deliver nothing. Once the inbox has
        been quiet for a moment, the unsubscribe makes the server drop the idle ones. The route stays:
        a straggler still reaches ``on_msg`` (and is nak'ed at once if the pool is closed).
        """
        self._running = False
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        sub, self._sub = self._sub, None
        if sub is None:
            return
        deadline = _now() + flush_timeout
        await self._quiet(deadline)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
            if self.nc.is_connected:
                await self.nc.flush(timeout=max(0.05, deadline - _now()))  # type: ignore[arg-type]  # float works
        await self._quiet(deadline)
        self._requests.clear()

    async def _quiet(self, deadline: float) -> None:
        """Wait until nothing arrived on the inbox for a short spell (or the deadline)."""
        while _now() < deadline and _now() - self._last_frame < _QUIET_S:
            await asyncio.sleep(_QUIET_S / 5)

    # ---- settling --------------------------------------------------------------------------------

    async def settle(self, msgs: Iterable[JsMsg], body: bytes = ACK) -> None:
        """Send ``body`` (ack, nak, term) for each message, in one write; a message is settled once."""
        replies: list[bytes] = []
        for m in msgs:
            if m.live:
                m.live = False
                self.unsettled -= 1
            m._ackd = True
            replies.append(m.ack_subject)
        if not replies:
            return
        if self._raw:
            await writer.write_raw(self.nc, writer.ack_frames(replies, body), len(replies), len(body) * len(replies))
        else:
            for r in replies:
                await self.nc.publish(r.decode(), body)
        if self._running and not self._wake.is_set():
            self._wake.set()

    # ---- intake ----------------------------------------------------------------------------------

    async def _on_frame(self, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        self._last_frame = _now()
        if not reply:  # a status: data messages always carry their ack subject
            status = status_of(data, headers)
            if status is not None:
                self._on_status(subject, status)
            return
        self._requests.delivered()
        try:
            msg = JsMsg(self.nc, subject.decode(), reply, data, headers)
        except ValueError:
            log.warning("ignoring a message on the pull inbox with reply %r", reply[:80])
            return
        self.delivered += 1
        self.unsettled += 1
        self._live.append(msg)
        try:
            await self._on_msg(msg)
        except Exception as exc:  # closing pool: give it straight back for another worker
            log.debug("delivery refused (%s); nak", exc)
            await self.settle((msg,), NAK)

    def _on_status(self, subject: bytes, status: Status) -> None:
        code = status.code
        self.statuses[code] = self.statuses.get(code, 0) + 1
        if code == 100:  # idle heartbeat: the request is alive
            return
        try:
            rid = int(subject[self._prefix :])
        except ValueError:
            return
        self._requests.ended(rid, status.pending_msgs)
        if code in (404, 408):  # no messages / expired: ask again
            pass
        elif code == 409:
            self._on_conflict(status.description)
        else:  # 400 bad request, 503 no responders (JetStream or the consumer unavailable), anything else
            log.warning("pull request refused: %d %s", code, status.description)
            self._pause(0.5)
            self._trouble()
        if not self._wake.is_set():
            self._wake.set()

    def _on_conflict(self, description: str) -> None:
        lowered = description.lower()
        if "leadership change" in lowered:
            return  # the new leader takes fresh requests
        log.info("pull request ended: 409 %s", description)
        if "maxrequestbatch" in lowered:
            digits = "".join(ch for ch in description.rsplit(" ", 1)[-1] if ch.isdigit())
            if digits and int(digits) > 0:
                self.batch = min(self.batch, int(digits))
                self.min_request = max(1, min(self.min_request, self.batch))
        elif "deleted" in lowered:
            self._trouble()
        self._pause(0.1)

    def _pause(self, seconds: float) -> None:
        self._pause_until = max(self._pause_until, _now() + seconds)

    def _trouble(self) -> None:
        now = _now()
        if self._recover is not None and now - self._last_recover > 2.0:
            self._last_recover = now
            asyncio.get_running_loop().create_task(self._run_recover())

    async def _run_recover(self) -> None:
        assert self._recover is not None
        try:
            await self._recover()
        except Exception as exc:
            log.warning("could not re-create the consumer: %s: %s", type(exc).__name__, exc)

    # ---- the request loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._running:
            self._wake.clear()
            now = _now()
            self._housekeeping(now)
            if now >= self._pause_until and self.nc.is_connected:
                try:
                    await self._refill(now)
                except Exception as exc:
                    log.warning("pull request failed: %s: %s", type(exc).__name__, exc)
                    self._pause(0.5)
            wait = _TICK_S if now >= self._pause_until else min(_TICK_S, self._pause_until - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _housekeeping(self, now: float) -> None:
        requests = self._requests
        reconnects = self.nc.stats.get("reconnects", 0)
        if reconnects != self._reconnects or not self.nc.is_connected:
            self._reconnects = reconnects
            requests.clear()  # the server dropped our requests with the old connection
        elif requests.requested and now - self._last_frame > _SILENCE_HEARTBEATS * self.heartbeat_s:
            log.info("no heartbeat for %.1fs: pull requests presumed lost", now - self._last_frame)
            requests.clear()
        requests.expire(now)
        live = self._live
        horizon = now - self.ack_wait_s
        while live and (not live[0].live or live[0].received < horizon):
            m = live.popleft()
            if m.live:
                m.live = False
                self.unsettled -= 1
                self.given_up += 1

    async def _refill(self, now: float) -> None:
        requests = self._requests
        room = self.max_in_flight - self.unsettled - requests.requested
        deadline = now + self.expires_s + max(1.0, 2 * self.heartbeat_s)
        while room >= self.min_request and self._running:
            n = min(room, self.batch)
            self._next_rid += 1
            rid = self._next_rid
            body = next_request(n, expires_s=self.expires_s, heartbeat_s=self.heartbeat_s)
            requests.add(rid, n, deadline)
            if not requests.requested - n:
                self._last_frame = now  # silence is measured from the first open request
            await self.nc.publish(self._api, body, reply=f"{self._inbox}.{rid}")
            room -= n
