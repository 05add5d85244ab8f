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

Pinned pulls (a consumer with a ``pinned_client`` priority group, ADR-42): every request names the group,
and the pin id once the server gave one (``Nats-Pin-Id`` on each message). The server keeps a pin only while
requests with its id keep coming, so a request with the id goes out at least every third of the pin TTL,
whether or not there is room for more messages, from a loop that does not wait for processing. A message
carrying a new pin id starts a takeover *before* it is handed on: deliveries are held, the old inbox is
closed (the server forgets its requests), ``on_pinned`` runs (it may reset the consumer), then requests go
out from a fresh inbox and the held messages are dropped (reset) or handed on (not reset). A ``423`` says
the pin went to another client: the id is forgotten, ``on_pin_lost`` is told, and no request goes out
until :meth:`PullConsumer.reacquire`; an ``on_pinned`` that raises is treated the same way (its held
messages dropped).

A process that stalls (SIGSTOP, a long GC or blocking call, a lost connection) sends no request with its pin id
meanwhile, and the server may give the pin to another client. So once no request with the id went out for
longer than the pin TTL minus the keep-alive interval, the pin is presumed lost, as on a ``423``
(:meth:`PullConsumer.stalled` says so even before the loop runs: an intake must not publish, ack or UNPIN then).
Messages still arriving with a pin id this client gave up (read from the socket after a stall) are dropped,
never taken for a new pin.

A message whose subject is not UTF-8 (stored from a hostile publisher) goes to ``on_undecodable`` instead of
``on_msg``, its subject escaped and :attr:`JsMsg.undecodable` set: the intake dead-letters it as ``decode`` and
terminates it (every redelivery would fail the same way).
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

from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.worker.lifecycle import cancel_all
from spark_ml.worker.natsio import writer
from spark_ml.worker.natsio.fastparser import wire_error
from spark_ml.worker.natsio.jsroute import subscribe_raw, unroute
from spark_ml.worker.natsio.jswire import ACK, NAK, PIN_ID, Status, next_request, status_of, stream_seq

__all__ = ["JsMsg", "OnPinLost", "OnPinned", "PullConsumer"]

log = logging.getLogger(__name__)
_now = time.monotonic
_TICK_S = 0.25
_SILENCE_HEARTBEATS = 3
_QUIET_S = 0.03
_PIN_LOST = 423

OnPinned = Callable[["PullConsumer", str], Awaitable[bool]]
"""``await on_pinned(consumer, pin_id)`` before anything delivered under a new pin is handed on; True when it
reset the consumer (the held deliveries are dropped: the server sends them again)."""
OnPinLost = Callable[["PullConsumer"], None]
"""``on_pin_lost(consumer)`` on a ``423``: another client holds the pin now; the consumer stopped pulling."""


class JsMsg(Msg):
    """A message delivered to one of our pull requests.

    A :class:`~nats.aio.msg.Msg` (``reply`` is its ack subject, ``metadata`` works), so code that reads a
    JetStream message's sequence from a ``Msg`` reads it from this too; built without the dataclass's
    ``__init__``, and with the stream sequence parsed once.
    """

    def __init__(
        self,
        nc: Client,
        subject: str,
        ack: bytes,
        data: bytes,
        headers: dict[str, str] | None,
        undecodable: SparkMlError | None = None,
    ) -> None:
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
        self.consumer: PullConsumer | None = None
        """The pull consumer that received it (it settles it)."""
        self.undecodable = undecodable
        """Why it cannot be processed as delivered (its subject is not UTF-8; ``subject`` is escaped), or None."""


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
        group: the consumer's ``pinned_client`` priority group: pull with pins (module docstring).
        pin_ttl_s: the consumer's ``priority_timeout``; requests expire after at most half of it and one
            with the pin id goes out at least every third of it.
        on_pinned: awaited when a message carries a new pin id, before it is handed on (:data:`OnPinned`).
        on_pin_lost: called on a ``423`` (:data:`OnPinLost`).
        on_undecodable: ``await on_undecodable(msg)`` in place of ``on_msg`` for a message whose subject is not
            UTF-8 (:attr:`JsMsg.undecodable` says why); without it such a message is left unsettled.
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
        group: str | None = None,
        pin_ttl_s: float = 0.0,
        on_pinned: OnPinned | None = None,
        on_pin_lost: OnPinLost | None = None,
        on_undecodable: Callable[[JsMsg], Awaitable[None]] | None = None,
    ) -> None:
        if max_in_flight < 1 or batch < 1:
            raise ValueError("max_in_flight and batch must be >= 1")
        if group is not None and pin_ttl_s <= 0:
            raise ValueError("a pinned consumer needs its pin_ttl_s")
        self.nc = nc
        self.stream = stream
        self.name = consumer
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_msg = on_msg
        self.max_in_flight = max_in_flight
        self.batch = min(batch, max_in_flight)
        self.min_request = max(1, self.batch // 4)
        """Smaller gaps wait for more room: one request per few messages would cost more than it brings."""
        self.ack_wait_s = ack_wait_s
        self.group = group
        self.pin_id: str | None = None
        """The pin the server gave this client (pinned pulls), once a message said so."""
        self._keepalive_s = pin_ttl_s / 3 if group is not None else 0.0
        self._tick_s = min(_TICK_S, self._keepalive_s / 2) if group is not None else _TICK_S
        if group is not None:
            expires_s = min(expires_s, pin_ttl_s / 2)
            heartbeat_s = min(heartbeat_s, expires_s / 2)
        self.expires_s = expires_s
        self.heartbeat_s = heartbeat_s
        self._on_pinned = on_pinned
        self._on_pin_lost = on_pin_lost
        self._on_undecodable = on_undecodable
        self._held: list[JsMsg] | None = None
        self._lost = False
        self._last_pin_request = 0.0
        self._stall_s = pin_ttl_s - self._keepalive_s if group is not None else 0.0
        self._forgotten: deque[str] = deque(maxlen=8)
        self._takeover: asyncio.Task[None] | None = None
        self.pins = 0
        """How many new pins this consumer was given."""
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

    @property
    def pulling(self) -> bool:
        """Requests go out (started, not stopped, and not stopped by a lost pin)."""
        return self._running and not self._lost

    async def start(self) -> None:
        await self._open_inbox()
        self._reconnects = self.nc.stats.get("reconnects", 0)
        self._running = True
        self._last_frame = _now()
        self._task = asyncio.create_task(self._run(), name="spark-ml-js-pull")

    async def _open_inbox(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._prefix = len(self._inbox) + 1
        self._sub, direct = await subscribe_raw(self.nc, f"{self._inbox}.*", self._on_frame)
        if not direct:
            log.warning("nats-py internals changed: jetstream intake runs through plain callbacks (slower)")

    def reacquire(self) -> None:
        """Pull again after a lost pin, without a pin id: the server pins this client once the pin is free."""
        if self._lost:
            self._lost = False
            self._wake.set()

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
        if self._takeover is not None:
            await cancel_all([self._takeover])
            self._takeover = None
        if self._task is not None:
            await cancel_all([self._task])
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
        undecodable: SparkMlError | None = None
        try:
            text = subject.decode()
        except UnicodeDecodeError as exc:
            wire_error(self.nc, "subject", exc)
            text = subject.decode("utf-8", "backslashreplace")
            undecodable = InvalidInput(f"subject is not UTF-8: {exc}", code="decode")
        try:
            msg = JsMsg(self.nc, text, reply, data, headers, undecodable)
        except ValueError:
            log.warning("ignoring a message on the pull inbox with reply %r", reply[:80])
            return
        msg.consumer = self
        self.delivered += 1
        self.unsettled += 1
        self._live.append(msg)
        if self.group is not None and not self._pinned_delivery(msg, headers):
            return
        await self._deliver(msg)

    async def _deliver(self, msg: JsMsg) -> None:
        try:
            if msg.undecodable is None:
                await self._on_msg(msg)
            elif self._on_undecodable is not None:
                await self._on_undecodable(msg)
        except Exception as exc:  # closing pool: give it straight back for another worker
            log.debug("delivery refused (%s); nak", exc)
            await self.settle((msg,), NAK)

    # ---- pins ------------------------------------------------------------------------------------

    def _pinned_delivery(self, msg: JsMsg, headers: dict[str, str] | None) -> bool:
        """Whether ``msg`` goes on to ``on_msg`` now; else it is held for (or starts) a takeover."""
        if self._held is not None:
            self._held.append(msg)
            return False
        pin = headers.get(PIN_ID) if headers else None
        if pin is None or pin == self.pin_id:
            return True
        if pin in self._forgotten:  # sent under a pin given up since: another client may hold the unit now
            self.drop((msg,))
            return False
        self.pin_id = pin
        self.pins += 1
        self._lost = False
        self._last_pin_request = _now()  # the server (re)started the pin's timer at most this long ago
        self._held = [msg]
        log.info("consumer %s: pinned (%s)", self.name, pin)
        self._takeover = asyncio.get_running_loop().create_task(self._take_over(pin), name="spark-ml-js-pin")
        return False

    async def _take_over(self, pin: str) -> None:
        """Close the old inbox, let ``on_pinned`` run, pull from a fresh inbox; drop or hand on what was held."""
        reset = False
        try:
            old = self._sub
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.unsubscribe()
                # The round trip makes the server forget the old requests: every frame of the old inbox
                # that is still coming is read before the flush returns (and held). Twice: nats-py 2.16 writes
                # flush's PING straight to the socket, ahead of the UNSUB still in its pending buffer, so the
                # first PONG can come back before the server has seen the UNSUB; the second PING follows it.
                with contextlib.suppress(Exception):
                    await self.nc.flush(timeout=2)
                    await self.nc.flush(timeout=2)
                unroute(self.nc, old)
            self._requests.clear()
            if self._on_pinned is not None:
                try:
                    reset = await self._on_pinned(self, pin)
                except Exception:
                    # Whatever the takeover had to prepare is missing: what was held is dropped (the server
                    # sends it again after the ack wait) and the pin given up, as on a 423.
                    log.exception("consumer %s: the takeover failed; giving the pin up", self.name)
                    reset = True
                    self._pin_lost("takeover failed")
            if self._running:
                await self._open_inbox()
        finally:
            held, self._held = self._held or [], None
            self._takeover = None
            self._wake.set()
        if reset:
            self.drop(held)
            return
        for msg in held:
            await self._deliver(msg)

    def retake(self) -> bool:
        """Run the takeover again under the current pin (its owner's state went wrong); False when not pinned."""
        pin = self.pin_id
        if pin is None or self._held is not None or not self._running or self.stalled():
            return False
        self._held = []
        self._takeover = asyncio.get_running_loop().create_task(self._take_over(pin), name="spark-ml-js-pin")
        return True

    def drop(self, msgs: Iterable[JsMsg]) -> None:
        """Forget ``msgs`` without settling them (the consumer was reset: the server sends them again)."""
        for m in msgs:
            if m.live:
                m.live = False
                self.unsettled -= 1
            m._ackd = True

    def _pin_lost(self, description: str) -> None:
        if self.pin_id is None and self._lost:
            return
        log.info("consumer %s: pin lost (%s)", self.name, description)
        if self.pin_id is not None:
            self._forgotten.append(self.pin_id)
        self.pin_id = None
        self._lost = True
        self._requests.clear()
        if self._on_pin_lost is not None:
            try:
                self._on_pin_lost(self)
            except Exception:
                log.exception("on_pin_lost failed")

    def _on_status(self, subject: bytes, status: Status) -> None:
        code = status.code
        self.statuses[code] = self.statuses.get(code, 0) + 1
        if code == 100:  # idle heartbeat: the request is alive
            return
        if code == _PIN_LOST:
            self._pin_lost(f"423 {status.description}")
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

    def stalled(self) -> bool:
        """Whether this client may have lost its pin without hearing of it: pinned, and no request with the id
        went out for longer than the pin TTL minus the keep-alive interval (stalled, stopped or disconnected)."""
        return self.pin_id is not None and self._stall_s > 0 and _now() - self._last_pin_request > self._stall_s

    async def _run(self) -> None:
        while self._running:
            self._wake.clear()
            now = _now()
            if self._held is None and self.stalled():
                self._pin_lost(f"no request with it for {now - self._last_pin_request:.1f}s: it may have lapsed")
            self._housekeeping(now)
            if now >= self._pause_until and self.nc.is_connected:
                try:
                    await self._refill(now)
                except Exception as exc:
                    log.warning("pull request failed: %s: %s", type(exc).__name__, exc)
                    self._pause(0.5)
            tick = self._tick_s
            wait = tick if now >= self._pause_until else min(tick, self._pause_until - now)
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
        if self._lost or self._held is not None:
            return
        room = self.max_in_flight - self.unsettled - self._requests.requested
        if room < self.min_request and self.pin_id is not None and now - self._last_pin_request >= self._keepalive_s:
            # The pin lives only as long as requests with its id keep coming: one goes out even when full.
            room = self.min_request
        while room >= self.min_request and self._running:
            n = min(room, self.batch)
            await self._request(n, now)
            room -= n

    async def _request(self, n: int, now: float) -> None:
        requests = self._requests
        self._next_rid += 1
        rid = self._next_rid
        pin = self.pin_id
        body = next_request(n, expires_s=self.expires_s, heartbeat_s=self.heartbeat_s, group=self.group, pin_id=pin)
        requests.add(rid, n, now + self.expires_s + max(1.0, 2 * self.heartbeat_s))
        if not requests.requested - n:
            self._last_frame = now  # silence is measured from the first open request
        if pin is not None:
            self._last_pin_request = now
        await self.nc.publish(self._api, body, reply=f"{self._inbox}.{rid}")
