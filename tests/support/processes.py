"""``spark-ml`` commands as child processes, configured only through ``SPARK_ML_*`` variables.

:class:`WorkerProcess` is a ``spark-ml worker`` the fault tests freeze, signal and kill (its metrics address
read from its log); :class:`SparkMl` is any subcommand, run through
:class:`spark_ml.scripts.harness.procs.Child` (own session, output in a file, SIGTERM then SIGKILL on stop)
so its whole output can be searched for secrets afterwards; :func:`predict_end_to_end` proves a running
worker predicts on both paths.
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
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import msgpack
from prometheus_client.parser import text_string_to_metric_families

from spark_ml.core import subjects
from spark_ml.scripts.harness.procs import Child
from tests.support.connections import connected
from tests.support.messages import SEED
from tests.support.ports import free_port

__all__ = [
    "Scrape",
    "SparkMl",
    "SpawnWorker",
    "WorkerProcess",
    "base_env",
    "child_env",
    "http_status",
    "predict_end_to_end",
    "service_env",
    "spark_ml",
    "worker_env",
]

_READY = re.compile(r"worker ready: .* metrics=http://([^/\s]+)/metrics")
_STOPPED = re.compile(r"worker stopped: published=(\d+) dead_lettered=(\d+) abandoned=(\d+)")


def spark_ml() -> str:
    """The ``spark-ml`` script beside this interpreter (the venv's)."""
    return str(Path(sys.executable).parent / "spark-ml")


def base_env() -> dict[str, str]:
    """This process's environment without any ``SPARK_ML_*`` variable or proxy: the child gets only ours."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_") and not k.lower().endswith("_proxy")}


def http_status(url: str) -> int:
    """The status of a GET of ``url`` (a worker's ``/healthz`` or ``/readyz``), an error status included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


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
            [spark_ml(), "worker"],
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


def child_env(**settings: object) -> dict[str, str]:
    """This process's environment without any ``SPARK_ML_*`` variable, plus ``settings`` as ``SPARK_ML_<NAME>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_")}
    env.update({f"SPARK_ML_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def worker_env(nats_url: str, registry: Path, **settings: object) -> dict[str, str]:
    """The environment of a worker child: free metrics and HTTP ports, its registry, then ``settings``."""
    return child_env(**{"nats_url": nats_url, "metrics_port": 0, "http_port": 0, "registry": registry, **settings})


SpawnWorker = Callable[..., WorkerProcess]
"""``spawn(nats_url, **settings)`` -> a started (not yet ready) worker process, killed at teardown."""


def service_env(directory: Path, settings: dict[str, str]) -> dict[str, str]:
    """Settings for a ``spark-ml`` child: ``settings`` plus its own metrics port and an empty registry."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "SPARK_ML_METRICS_PORT": str(free_port()),
        "SPARK_ML_REGISTRY": str(directory / "registry"),
        "SPARK_ML_BIND_HOST": "127.0.0.1",
        **settings,
    }


class SparkMl:
    """``spark-ml <args>`` running with ``env`` (added to :func:`base_env`), output to ``log``.

    Args:
        args: the subcommand and its flags.
        env: ``SPARK_ML_*`` settings.
        log: file receiving stdout and stderr.
    """

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.child = Child(args[0], [spark_ml(), *args], log, env={**base_env(), **env})
        self.log = log
        self.returncode: int | None = None

    def alive(self) -> bool:
        return self.child.alive()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_output(self, needles: tuple[str, ...], timeout: float) -> bool:
        """True once any of ``needles`` is in the output; False after ``timeout`` or when the child exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if any(n in text for n in needles):
                return True
            if not self.alive():
                return any(n in self.output() for n in needles)
            time.sleep(0.05)
        return False

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code if the child ends within ``timeout``, else None (it keeps running)."""
        try:
            self.returncode = self.child.proc.wait(timeout)
        except Exception:
            return None
        return self.returncode

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (then SIGKILL after ``timeout``); returns the exit code."""
        self.child.stop(timeout)
        self.returncode = self.child.proc.returncode
        return self.returncode


async def predict_end_to_end(url: str, client: dict[str, Any], proc: SparkMl, timeout: float = 30.0) -> dict[str, Any]:
    """Publish the seed snapshot until a prediction comes back on ``ml.prediction`` (the worker may still be
    starting), then ask ``ml.predict`` once; returns the streamed prediction and the reply, both decoded."""
    async with connected(url, allow_reconnect=False, connect_timeout=5, **client) as nc:
        streamed: list[bytes] = []
        arrived = asyncio.Event()

        async def cb(msg: Any) -> None:
            streamed.append(msg.data)
            arrived.set()

        await nc.subscribe(subjects.PREDICTION, cb=cb)
        await nc.flush()
        await nc.flush()
        deadline = time.monotonic() + timeout
        ts = SEED["ts"]
        while not streamed:
            if not proc.alive():
                raise AssertionError(f"worker exited with {proc.child.proc.returncode}: {proc.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no prediction within {timeout}s: {proc.output()[-2000:]}")
            await nc.publish(subjects.snapshot_for("SEC"), msgpack.packb({**SEED, "ts": ts}))
            ts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.3)
        # Newer than every streamed snapshot: the service scores on the stream's feature state.
        request = {"snapshot": {**SEED, "ts": ts + 1000, "symbol": "SEC"}}
        reply = await nc.request(subjects.PREDICT, msgpack.packb(request), timeout=5)
        return {
            "streamed": msgpack.unpackb(streamed[0]),
            "reply": msgpack.unpackb(reply.data),
            "reply_headers": reply.headers or {},
            "request_ts": ts + 1000,
        }
