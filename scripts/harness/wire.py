"""A minimal, synchronous NATS protocol client for the benchmark's measuring instruments.

The publisher and the sink must cost far less CPU per message than the workers they measure, on a
machine where every process shares two cores. nats-py builds a ``Msg`` object, an asyncio queue entry
and a callback call per message (several microseconds); this client reads raw ``MSG``/``HMSG`` frames
with one timestamp per socket read (the moment those bytes reached the process) and sends pre-framed
``PUB`` commands in large writes. It speaks just enough of the protocol for that: CONNECT, SUB, PUB,
PING/PONG. It is not a general client and nothing outside ``spark_ml.scripts.harness`` should use it.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from urllib.parse import urlsplit

__all__ = ["RawNats", "hpub_frame", "pub_frame"]

_CRLF = b"\r\n"
_RECV_SIZE = 1 << 18


def pub_frame(subject: str, payload: bytes) -> bytes:
    """One ``PUB`` command, ready to be concatenated with others and written in one go."""
    return b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)


def hpub_frame(subject: str, headers: dict[str, str], payload: bytes) -> bytes:
    """One ``HPUB`` command: ``payload`` with a header block."""
    block = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + _CRLF
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (subject.encode(), len(block), len(block) + len(payload), block, payload)


class RawNats:
    """A blocking connection to one nats-server.

    Args:
        url: ``nats://host:port`` (loopback in the benchmark).
        timeout: seconds to wait for the server's INFO and for the PONG that confirms CONNECT.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.payloads: list[bytes] = []
        """Payloads of the messages received so far (headers stripped), in arrival order."""
        self.times: list[float] = []
        """``time.perf_counter()`` of the socket read that completed each payload."""
        self._pongs = 0
        self.closed = False
        self._read_info(timeout)
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": False, "protocol": 1}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + _CRLF)
        self.ping(timeout)
        self.sock.setblocking(False)

    def _read_info(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _CRLF not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no INFO from nats-server")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self._buf += chunk
        line, _, rest = bytes(self._buf).partition(_CRLF)
        if not line.startswith(b"INFO "):
            raise ConnectionError(f"unexpected greeting: {line[:80]!r}")
        self._buf = bytearray(rest)

    def ping(self, timeout: float = 10.0) -> None:
        """Round trip to the server: everything sent before it (SUB, PUB) has been processed on return."""
        want = self._pongs + 1
        self._send(b"PING\r\n")
        deadline = time.monotonic() + timeout
        while self._pongs < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no PONG from nats-server")
            self.poll(left)

    def subscribe(self, subject: str, sid: int = 1, queue: str = "") -> None:
        self._send(b"SUB %s %s%d\r\n" % (subject.encode(), (queue + " ").encode() if queue else b"", sid))

    def _send(self, data: bytes | memoryview) -> None:
        blocking = self.sock.getblocking()
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(blocking)

    def send(self, data: bytes | memoryview) -> None:
        """Write pre-framed commands (see :func:`pub_frame`), blocking until the kernel took them all."""
        self._send(data)

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for data, read what is there, and parse it; returns messages read."""
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            ready = sel.select(timeout)
        finally:
            sel.close()
        return self.read_available() if ready else 0

    def read_available(self) -> int:
        """Read everything the socket holds now without blocking; returns the number of messages parsed."""
        got = 0
        blocking = self.sock.getblocking()
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    chunk = self.sock.recv(_RECV_SIZE)
                except BlockingIOError:
                    break
                if not chunk:
                    self.closed = True
                    break
                self._buf += chunk
                got += self._parse(time.perf_counter())
                if len(chunk) < _RECV_SIZE:
                    break
        finally:
            self.sock.setblocking(blocking)
        return got

    def _parse(self, now: float) -> int:
        buf, pos, got = self._buf, 0, 0
        payloads, times = self.payloads, self.times
        while True:
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"MSG ":
                size = int(buf[buf.rfind(b" ", pos, eol) + 1 : eol])
                end = eol + 2 + size
                if len(buf) < end + 2:
                    break
                payloads.append(bytes(buf[eol + 2 : end]))
                times.append(now)
                pos, got = end + 2, got + 1
            elif op == b"HMSG":
                fields = buf[pos:eol].split()
                hdr, total = int(fields[-2]), int(fields[-1])
                end = eol + 2 + total
                if len(buf) < end + 2:
                    break
                payloads.append(bytes(buf[eol + 2 + hdr : end]))
                times.append(now)
                pos, got = end + 2, got + 1
            else:
                if op == b"PING":
                    self._send(b"PONG\r\n")
                elif op == b"PONG":
                    self._pongs += 1
                elif op == b"-ERR":
                    raise ConnectionError(bytes(buf[pos:eol]).decode(errors="replace"))
                pos = eol + 2
        del buf[:pos]
        return got

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.closed = True
