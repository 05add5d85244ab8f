"""``spark-ml`` commands as child processes configured only through ``SPARK_ML_*`` variables, and the probe
that proves one predicts end to end.

Children run through :class:`spark_ml.scripts.harness.procs.Child` (own session, output in a file, SIGTERM then SIGKILL
on stop), so their whole output can be searched for secrets afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import nats

from spark_ml.core import subjects
from spark_ml.scripts.harness.procs import Child

__all__ = ["SEED", "SparkMl", "base_env", "predict_end_to_end", "spark_ml"]

SEED = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}


def spark_ml() -> str:
    return str(Path(sys.executable).parent / "spark-ml")


def base_env() -> dict[str, str]:
    """This process's environment without any ``SPARK_ML_*`` variable or proxy: the child gets only ours."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_") and not k.lower().endswith("_proxy")}


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
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **client)
    try:
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
    finally:
        await nc.close()
