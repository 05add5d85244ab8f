"""``spark-ml asyncapi``: print (or write) the AsyncAPI 3.0 document of every spark-ml subject.

Usage::

    spark-ml asyncapi [--output PATH] [--partitions N] [--server URL ...]

Generated from the wire contracts by :func:`spark_ml.core.specs.asyncapi.asyncapi_document`. The partition count
and the servers default to the settings (``SPARK_ML_PARTITIONS``, ``SPARK_ML_NATS_URL``; credentials in a URL are
left out). Exit codes: 0 done, 2 refused (a bad setting or an unwritable path) with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from spark_ml.core.io.documents import document_text, write_document
from spark_ml.core.specs.asyncapi import asyncapi_document
from spark_ml.scripts._args import REFUSED, refuse

__all__ = ["build_parser", "main", "package_version"]

_PROG = "spark-ml asyncapi"


def package_version() -> str:
    """spark-ml's installed version (``0.0.0`` from a source tree that was never installed)."""
    try:
        return version("spark-ml")
    except PackageNotFoundError:
        return "0.0.0"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Print the AsyncAPI 3.0 document of spark-ml's NATS subjects.")
    p.add_argument("--output", "-o", type=Path, default=None, help="write it to this file instead of stdout")
    p.add_argument("--partitions", type=int, default=None, help="symbol partitions (default: SPARK_ML_PARTITIONS, 16)")
    p.add_argument(
        "--server",
        action="append",
        default=None,
        metavar="URL",
        help="a NATS server of the document, repeatable (default: SPARK_ML_NATS_URL)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        partitions, servers = args.partitions, args.server
        if partitions is None or servers is None:
            from spark_ml.worker.settings import Settings

            settings = Settings()
            partitions = settings.partitions if partitions is None else partitions
            servers = list(settings.servers) if servers is None else servers
        doc = asyncapi_document(version=package_version(), partitions=partitions, servers=servers)
        if args.output is None:
            sys.stdout.write(document_text(doc))
        else:
            print(f"wrote {write_document(args.output, doc)}", file=sys.stderr)
    except REFUSED as exc:
        return refuse(_PROG, exc)
    return 0
