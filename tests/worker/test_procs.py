"""``spark-ml worker --procs 3`` (core and jetstream mode) on a server with the partition mapping: three
partitioned workers on consecutive metrics ports that split every unit between them, and a SIGTERM to the parent
(or a terminal's Ctrl-C) stops them all cleanly, each handing its units over once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from spark_ml.core.partition import DEFAULT_PARTITIONS, units
from tests.support.ports import free_port
from tests.support.processes import Scrape, spark_ml, worker_env

pytestmark = pytest.mark.timeout(120)

PROCS = 3
_CHILD = re.compile(r"worker process \d+: pid (\d+)")
_READY = re.compile(r"worker ready: .* metrics=http://([^/\s]+)/metrics")
_STOPPED = re.compile(r"worker stopped: published=\d+")


def _free_run(n: int) -> int:
    """A base port with ``n`` free loopback ports from it up."""
    for _ in range(50):
        base = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + n):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise AssertionError(f"no {n} consecutive free ports")


def _ours(pid: int) -> bool:
    """``pid`` is still a spark-ml process (not a later process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spark" in cmdline and b"worker" in cmdline


def _scrape(address: str) -> Scrape:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return Scrape(body.decode())


def _wait(what: str, log: Path, done: Callable[[], bool], timeout: float, parent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if parent.poll() is not None:
            raise AssertionError(f"spark-ml worker --procs exited with {parent.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


@pytest.mark.parametrize(("mode", "stop"), [("core", "sigterm"), ("core", "ctrl-c"), ("jetstream", "sigterm")])
def test_procs_split_the_units_on_distinct_ports_and_stop_cleanly(
    nats_url: str, tmp_path: Path, mode: str, stop: str
) -> None:
    base = _free_run(PROCS)
    env = worker_env(nats_url, tmp_path / "registry", metrics_port=base, bind_host="127.0.0.1", mode=mode)
    log = tmp_path / "procs.log"
    with log.open("wb") as out:
        parent = subprocess.Popen(
            [spark_ml(), "worker", "--procs", str(PROCS)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children: list[int] = []
    try:
        _wait("three ready workers", log, lambda: len(_READY.findall(log.read_text())) == PROCS, 60, parent)
        text = log.read_text()
        children = [int(pid) for pid in _CHILD.findall(text)]
        addresses = _READY.findall(text)
        assert len(children) == PROCS
        assert sorted(int(a.rsplit(":", 1)[1]) for a in addresses) == list(range(base, base + PROCS))

        # Every unit owned, by exactly the three workers together, each with a share.
        total = units(DEFAULT_PARTITIONS)
        owned: list[float] = []

        def spread() -> bool:
            nonlocal owned
            scrapes = [_scrape(a) for a in addresses]
            owned = [s.total("ml_partitions_owned") for s in scrapes]
            configured = {s.total("ml_partitions_configured") for s in scrapes}
            # Balanced, not only all owned: while the first worker still hands its extra units over, every unit
            # can be owned with a share each but unevenly (8, 4, 5 was seen).
            balanced = bool(owned) and max(owned) - min(owned) <= 1
            return configured == {total} and sum(owned) == total and all(n > 0 for n in owned) and balanced

        _wait(f"the {total} units spread evenly over the workers (owned: {owned})", log, spread, 45, parent)

        if stop == "sigterm":
            parent.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C: SIGINT to the foreground process group, the workers hear it once
            os.killpg(parent.pid, signal.SIGINT)
        assert parent.wait(40) == 0, log.read_text()[-4000:]
        text = log.read_text()
        assert len(_STOPPED.findall(text)) == PROCS, text[-4000:]
        assert "exiting at once" not in text, "the SIGTERM reached a worker twice"
        assert not [pid for pid in children if _ours(pid)], "worker processes left running"
    finally:
        for pid in [parent.pid, *children]:
            if _ours(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            parent.wait(10)
