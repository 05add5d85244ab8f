"""Spec documents (AsyncAPI, OpenAPI) as files: ``spark-ml asyncapi --output`` and ``spark-ml openapi --output``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["document_text", "write_document"]


def document_text(doc: Any) -> str:
    """The document as pretty JSON (no NaN), ending with a newline."""
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def write_document(path: Path, doc: Any) -> Path:
    """Write ``doc`` as :func:`document_text`; the folder is made when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document_text(doc))
    return path
