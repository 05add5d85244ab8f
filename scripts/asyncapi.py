"""``spark-ml asyncapi``: print (or write) the AsyncAPI 3.0 document of every spark-ml subject.

Usage::

    spark-ml asyncapi [--output PATH] [--partitions N] [--server URL ...]

Generated from the wire contracts by :func:`spark_ml.core.specs.asyncapi.asyncapi_document`. The partition count
and the servers default to the settings (``SPARK_ML_PARTITIONS``, ``SPARK_ML_NATS_URL``; credentials in a URL are
left out). Exit codes: 0 done, 2 refused (a bad setting or an unwritable path) with one line on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spark_ml.core.specs.asyncapi import asyncapi_document
from spark_ml.scripts._args import print_document

__all__ = ["build_parser", "main"]

_PROG = "spark-ml asyncapi"


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

    def build(version: str) -> dict[str, Any]:
        partitions, servers = args.partitions, args.server
        if partitions is None or servers is None:
            from spark_ml.worker.settings import Settings

            settings = Settings()
            partitions = settings.partitions if partitions is None else partitions
            servers = list(settings.servers) if servers is None else servers
        return asyncapi_document(version=version, partitions=partitions, servers=servers)

    return print_document(_PROG, args.output, build)
