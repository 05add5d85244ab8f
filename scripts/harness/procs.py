"""Child processes of the benchmark: start, wait for a line, stop for sure; CPU and memory from /proc.

Every child runs in its own session so that stopping it also stops whatever it started (a worker with
``--procs N``). Stopping is SIGTERM to that process group, then SIGKILL after a bound. CPU time and
resident memory are summed over the process and its descendants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["Child", "cpu_seconds", "rss_bytes", "tree_pids"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Child:
    """One started process with its output in a log file.

    Args:
        name: label for messages.
        argv: the command.
        log: file receiving stdout and stderr (unless ``pipe`` is set: then stdout is a pipe).
        env: the full environment.
        pipe: give the child a stdin pipe and read its stdout (the sink's READY and JSON lines).
    """

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, pipe: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self._log_fh: IO[bytes] = open(log, "wb")
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else self._log_fh,
            stderr=self._log_fh,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def readline(self, timeout: float) -> str:
        """Next stdout line of a ``pipe`` child, or TimeoutError/RuntimeError when it does not come."""
        assert self.proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"{self.name}: no output within {timeout:.0f}s; {self.tail()}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; {self.tail()}")
        return line.strip()

    def tell(self, text: str) -> None:
        """Write a line to a ``pipe`` child's stdin and close it (its cue to finish)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout:.0f}s; {self.tail()}") from None

    def tail(self, chars: int = 800) -> str:
        with contextlib.suppress(OSError):
            self._log_fh.flush()
            text = self.log.read_text(errors="replace")
            if text.strip():
                return f"log tail: {text[-chars:].strip()}"
        return "no log output"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout``; always reaps and closes."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            else:
                # The leader is gone; anything it left in its group goes too.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._log_fh.close()


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its live descendants (from /proc/<pid>/stat)."""
    total = 0
    for p in tree_pids(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLK_TCK


def rss_bytes(pid: int) -> tuple[int, int]:
    """(sum of VmRSS over ``pid`` and its live descendants, number of processes) from /proc/<pid>/status."""
    total, n = 0, 0
    for p in tree_pids(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                n += 1
                break
    return total, n
