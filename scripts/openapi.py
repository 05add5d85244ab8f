"""``spark-ml openapi``: print (or write) the HTTP gateway's OpenAPI 3.1 document, as ``GET /openapi.json`` serves it.

Usage::

    spark-ml openapi [--output PATH]

Built by :func:`spark_ml.core.specs.openapi.openapi_document` for the settings a gateway would run with
(``SPARK_ML_API_KEY`` set or not, ``SPARK_ML_MAX_PAYLOAD``, ``SPARK_ML_RATE_LIMIT``, ``SPARK_ML_REQUEST_TIMEOUT_S``);
the key itself never appears. Exit codes: 0 done, 2 refused (a bad setting or an unwritable path).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spark_ml.core.specs.openapi import openapi_document
from spark_ml.scripts._args import print_document

__all__ = ["build_parser", "main"]

_PROG = "spark-ml openapi"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Print the OpenAPI 3.1 document of the HTTP gateway.")
    p.add_argument("--output", "-o", type=Path, default=None, help="write it to this file instead of stdout")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def build(version: str) -> dict[str, Any]:
        from spark_ml.worker.settings import Settings

        s = Settings()
        return openapi_document(
            version=version,
            api_key=s.api_key is not None,
            max_payload=s.max_payload,
            rate_limit=s.rate_limit,
            request_timeout_s=s.request_timeout_s,
        )

    return print_document(_PROG, args.output, build)
