"""What the offline commands share: their common flags, the registry and data they name, refusals and progress.

Nothing here computes or writes: the commands' work is in ``core/``, their files are written by ``core/io/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from spark_ml.core.errors import SparkMlError
from spark_ml.core.io.documents import document_text, write_document
from spark_ml.core.ml.sources import BUILTIN

__all__ = [
    "REFUSED",
    "Bar",
    "add_registry",
    "data_name",
    "package_version",
    "print_document",
    "refuse",
    "registry_path",
    "warn",
]

REFUSED = (SparkMlError, ValueError, OSError)
"""What a command reports as bad input (exit code 2) instead of a traceback."""


def add_registry(p: argparse.ArgumentParser, *, out: str | None = None, json_help: str | None = None) -> None:
    """``--registry``; ``--out`` with the help ``out`` and ``--json`` with the help ``json_help`` when given."""
    p.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="registry directory [env SPARK_ML_REGISTRY; default .spark-ml/registry]",
    )
    if out is not None:
        p.add_argument("--out", type=Path, default=None, help=out)
    if json_help is not None:
        p.add_argument("--json", action="store_true", help=json_help)


def registry_path(arg: Path | None) -> Path:
    """``--registry`` or the settings' registry (``SPARK_ML_REGISTRY``)."""
    if arg is not None:
        return arg
    from spark_ml.worker.settings import Settings

    return Path(Settings().registry)


def data_name(arg: str) -> str:
    """Built-in names as given; a file as its absolute path, so ``spark-ml eval`` finds it from anywhere."""
    if arg == "synthetic" or arg in BUILTIN or not Path(arg).exists():
        return arg
    return str(Path(arg).resolve())


def refuse(prog: str, exc: BaseException) -> int:
    """Say why on stderr, on one line whatever the exception's text; exit code 2."""
    print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2


def package_version() -> str:
    """spark-ml's installed version (``0.0.0`` from a source tree that was never installed)."""
    try:
        return version("spark-ml")
    except PackageNotFoundError:
        return "0.0.0"


def print_document(prog: str, output: Path | None, build: Callable[[str], Any]) -> int:
    """``build(version)``'s document on stdout, or written to ``output``; a refusal (exit code 2) on bad input."""
    try:
        doc = build(package_version())
        if output is None:
            sys.stdout.write(document_text(doc))
        else:
            print(f"wrote {write_document(output, doc)}", file=sys.stderr)
    except REFUSED as exc:
        return refuse(prog, exc)
    return 0


def warn(prog: str, message: str) -> None:
    """One warning line on stderr (stdout stays the command's output, JSON included)."""
    print(f"{prog}: warning: {' '.join(message.split())}", file=sys.stderr)


class Bar:
    """A tqdm bar on stderr when it is a terminal; a no-op otherwise.

    Args:
        total: steps expected.
        desc: label in front of the bar.
        unit: what a step is.
        enabled: False silences it whatever stderr is.
    """

    def __init__(self, total: int, *, desc: str, unit: str = "step", enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=sys.stderr, desc=desc, unit=unit, leave=False)

    def __call__(self, label: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
