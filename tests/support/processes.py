"""Helpers of the fault tests: `spark-ml worker` child processes, metric scrapes, sinks, stream reads.

Every input snapshot carries a unique ``ts`` (its id), so reconciliation is set arithmetic over ids found
in the predictions, in the dead letters, and in the counted drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, PubAck
from prometheus_client.parser import text_string_to_metric_families

from spark_ml.core import subjects

SPARK_ML = Path(sys.executable).parent / "spark-ml"
_READY = re.compile(r"worker ready: .* metrics=http://([^/\s]+)/metrics")
_STOPPED = re.compile(r"worker stopped: published=(\d+) dead_lettered=(\d+) abandoned=(\d+)")

Raw = tuple[bytes, dict[str, str] | None]


def snapshot(i: int, symbol: str) -> bytes:
    """Input number ``i``: its ``ts`` is its id."""
    return msgpack.packb({"ts": i, "mid": 100.0 + i % 7, "symbol": symbol})


def ts_of(data: bytes) -> int:
    value = msgpack.unpackb(data)["ts"]
    assert isinstance(value, int)
    return value


async def until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Wait for ``predicate`` (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(step)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[Client]:
    """A test-side connection that reconnects quickly (servers are restarted and killed under it)."""
    opts: dict[str, Any] = {
        "servers": url.split(","),
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.1,
        "connect_timeout": 2,
    }

    async def quiet(_: Exception) -> None:  # disconnects are the point of these tests
        return None

    opts.update(error_cb=quiet, **options)
    nc = await nats.connect(**opts)
    try:
        yield nc
    finally:
        await nc.close()


class Sink:
    """Every message of one subject, kept raw, with no pending limits: the sink never drops."""

    def __init__(self) -> None:
        self.msgs: list[Raw] = []

    async def _cb(self, msg: Msg) -> None:
        self.msgs.append((msg.data, msg.headers))

    @classmethod
    async def on(cls, nc: Client, subject: str) -> Sink:
        sink = cls()
        await nc.subscribe(subject, cb=sink._cb, pending_msgs_limit=0, pending_bytes_limit=0)
        await nc.flush()
        await nc.flush()  # nats-py 2.16: one flush can overtake a SUB still in the client's buffer
        return sink

    def ids(self) -> list[int]:
        return [ts_of(data) for data, _ in self.msgs]

    def reasons(self) -> dict[int, str]:
        """Dead letters: input id -> ``Spark-Ml-Error`` reason."""
        return {ts_of(data): (h or {}).get(subjects.H_ERROR, "?") for data, h in self.msgs}


async def read_stream(js: JetStreamContext, stream: str, subject: str, timeout: float = 20.0) -> list[Raw]:
    """Every message now in ``stream``, through an ephemeral pull consumer without acks."""
    expected = (await js.stream_info(stream)).state.messages
    psub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    got: list[Raw] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected:
            assert time.monotonic() < deadline, f"read {len(got)} of {expected} messages of {stream}"
            with contextlib.suppress(nats.errors.TimeoutError):
                got += [(m.data, m.headers) for m in await psub.fetch(min(expected - len(got), 1000), timeout=1)]
    finally:
        await psub.unsubscribe()
    return got


async def publish_until_acked(
    js: JetStreamContext, subject: str, payload: bytes, msg_id: str, deadline: float
) -> PubAck:
    """Publish with ``Nats-Msg-Id``, retrying through outages until a PubAck (retries deduplicate)."""
    while True:
        try:
            return await js.publish(subject, payload, timeout=1.0, headers={"Nats-Msg-Id": msg_id})
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


class RawPublisher:
    """A bare NATS protocol connection that writes a prebuilt block of PUBs at once: the fastest burst a
    single client can produce (nats-py's publish loop is several times slower than the server ingests)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RawPublisher]:
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        pub = cls(reader, writer)
        try:
            await reader.readline()  # INFO
            writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
            await pub.sync()
            yield pub
        finally:
            writer.close()
            await writer.wait_closed()

    async def sync(self, timeout: float = 30.0) -> None:
        """PING and wait for the PONG: the server has processed everything written before."""
        self._writer.write(b"PING\r\n")
        await self._writer.drain()
        async with asyncio.timeout(timeout):
            while (line := await self._reader.readline()) != b"PONG\r\n":
                assert line, "server closed the connection"

    @staticmethod
    def block(messages: list[tuple[str, bytes]]) -> bytes:
        return b"".join(b"PUB %s %d\r\n%s\r\n" % (s.encode(), len(p), p) for s, p in messages)

    async def send(self, block: bytes) -> None:
        self._writer.write(block)
        await self.sync()


class Scrape:
    """One scrape of a worker's ``/metrics``: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def each(self, name: str) -> list[float]:
        return [v for n, _, v in self.samples if n == name]


class WorkerProcess:
    """A ``spark-ml worker`` child process (its own session), its log in a file, its metrics port from the log.

    Args:
        env: the child's whole environment (settings as ``SPARK_ML_*``).
        log_path: where stdout and stderr go.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(SPARK_ML), "worker"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def ready(self, timeout: float = 20.0) -> WorkerProcess:
        """Wait for the "worker ready" line (connected and consuming); read the metrics address from it."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (match := _READY.search(self.log())) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker not ready (exit {self.proc.returncode}):\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        self.metrics_url = f"http://{match.group(1)}/metrics"
        return self

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """The exit code, polled every 10 ms so exit latencies are measured to that resolution."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker still running after {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.01)
        return code

    def stopped(self) -> tuple[int, int, int] | None:
        """(published, dead_lettered, abandoned) from the final log line, None when it was not written."""
        match = _STOPPED.search(self.log())
        return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None

    def status_kb(self, field: str) -> int:
        """A ``/proc/<pid>/status`` memory field in kB (``VmRSS``, ``VmHWM``: peak resident set)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise KeyError(field)

    async def scrape(self, timeout: float = 10.0) -> Scrape:
        def get() -> str:
            with urllib.request.urlopen(self.metrics_url, timeout=timeout) as resp:
                body: bytes = resp.read()
                return body.decode()

        return Scrape(await asyncio.to_thread(get))

    def kill(self) -> None:
        """SIGKILL if still running (a stopped process dies too), then reap it and close its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


def worker_env(nats_url: str, registry: Path, **settings: object) -> dict[str, str]:
    """The environment of a worker child: this one's (already cleaned of SPARK_ML_*) plus its settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_")}
    env.update(
        SPARK_ML_NATS_URL=nats_url,
        SPARK_ML_METRICS_PORT="0",
        SPARK_ML_HTTP_PORT="0",
        SPARK_ML_REGISTRY=str(registry),
    )
    env.update({f"SPARK_ML_{name.upper()}": str(value) for name, value in settings.items()})
    return env


SpawnWorker = Callable[..., WorkerProcess]
"""``spawn(nats_url, **settings)`` -> a started (not yet ready) worker process, killed at teardown."""
