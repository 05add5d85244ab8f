"""Reading a tear sheet's HTML back: its sections, images, links and the exact value of every metric cell."""

from __future__ import annotations

import json
from html.parser import HTMLParser

__all__ = ["SECTIONS", "TearSheetHtml"]

SECTIONS = ("headline", "metrics", "equity", "drawdowns", "monthly", "rolling-sharpe", "returns")
"""The ids of a tear sheet's sections, in order (:mod:`spark_ml.core.io.tearsheet`)."""


class TearSheetHtml(HTMLParser):
    """Collects the sections, the image sources, every link-like attribute and the metric cells."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.srcs: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.cells: dict[tuple[str, str], object] = {}
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(str(a["id"]))
        if tag == "img":
            self.srcs.append(str(a["src"]))
        self.links += [str(v) for k, v in attrs if k in ("href", "src", "action", "data", "poster")]
        if tag == "tr":
            self._row = a.get("data-row")
        if tag == "td" and self._row is not None and "data-key" in a:
            self.cells[(self._row, str(a["data-key"]))] = json.loads(str(a["data-value"]))
