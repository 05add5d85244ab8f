"""Connections a test opens: plain nats-py clients that always close, and a bare protocol publisher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
from nats.aio.client import Client

__all__ = ["RawPublisher", "client", "connected"]


@contextlib.asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[Client]:
    """A nats-py connection to ``url`` (comma-separated servers allowed), closed on exit."""
    nc = await nats.connect(servers=url.split(","), **options)
    try:
        yield nc
    finally:
        await nc.close()


async def _quiet(_: Exception) -> None:  # disconnects are the point of the fault tests
    return None


def client(url: str, **options: Any) -> contextlib.AbstractAsyncContextManager[Client]:
    """A test-side connection that reconnects quickly (servers are restarted and killed under it)."""
    opts: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1, "connect_timeout": 2}
    return connected(url, **{**opts, "error_cb": _quiet, **options})


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
            writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
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
