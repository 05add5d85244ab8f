"""A cluster of nats-server processes with JetStream, for the fault tests that kill a stream's leader.

Readiness is read from the nodes' own logs: each node's "Server is ready" (through
:class:`~spark_ml.worker.natsserver.NatsServer`), then a JetStream metadata leader known to every node.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import TracebackType

from spark_ml.worker.natsserver import NatsServer
from tests.support.ports import free_port

__all__ = ["NatsCluster"]

# "Self is new JetStream cluster metadata leader" on the leader, "JetStream cluster new metadata leader: n2/..."
# on the others.
_META_LEADER = re.compile(r"new JetStream cluster metadata leader|JetStream cluster new metadata leader")


class NatsCluster:
    """A cluster of nats-server processes on loopback: routes between all nodes, JetStream in each.

    Each node has its own name (``n1``, ``n2``...), store and log under ``base_dir``; client ports are
    random, route ports are picked free at start. A stopped or killed node can be started again (same
    ports, same store) with ``cluster.nodes[i].start()``.

    Args:
        size: number of nodes (3 keeps a JetStream quorum when one is lost).
        base_dir: parent of the nodes' stores and logs (the test's own directory).
        name: the cluster name.
        host: interface for client and route ports.
        ready_timeout: bound on each node being ready and on every node knowing a JetStream metadata leader.
        mappings: subject mappings of every node (the partition mapping of core mode, for one).
    """

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: Path,
        name: str = "spark-ml",
        host: str = "127.0.0.1",
        ready_timeout: float = 20.0,
        mappings: dict[str, str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = size
        self.name = name
        self.host = host
        self.ready_timeout = ready_timeout
        self.base_dir = base_dir
        self.mappings = dict(mappings or {})
        self.names = [f"n{i + 1}" for i in range(size)]
        self.nodes: list[NatsServer] = []

    def __repr__(self) -> str:
        return f"NatsCluster({self.name}, nodes={self.nodes!r})"

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
        # Route ports must be known before any node starts (each node lists all routes), so they are picked
        # here; the window in which another process could take one is the few milliseconds until start.
        route_ports = [free_port(self.host) for _ in range(self.size)]
        routes = ",".join(f"nats://{self.host}:{port}" for port in route_ports)
        self.nodes = [
            NatsServer(
                host=self.host,
                store_dir=self.base_dir / name,
                ready_timeout=self.ready_timeout,
                mappings=self.mappings,
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

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        # Every node's store is under base_dir, which the caller owns: stopping is the whole cleanup.
        self.stop()
