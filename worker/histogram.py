"""A Prometheus histogram that takes a whole batch of observations in one call.

``prometheus_client.Histogram.observe`` costs about a microsecond per value, which is a tenth of the
per-message budget of the stream; this one bins a numpy array with ``searchsorted`` and ``bincount``.
Its exposition is sample-for-sample that of ``prometheus_client.Histogram`` (``tests/worker/test_histogram.py``
holds it to that reference). Not thread-safe: it is updated and scraped on one event loop.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate

import numpy as np
from numpy.typing import NDArray
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

__all__ = ["BatchHistogram", "HistogramChild", "ScaledHistogram"]


class HistogramChild:
    """One labelled series: bucket counts and the sum."""

    __slots__ = ("_bounds", "_counts", "_edges", "_sum")

    def __init__(self, edges: NDArray[np.float64]) -> None:
        self._edges = edges
        self._bounds: list[float] = edges.tolist()
        self._counts = [0] * (len(edges) + 1)
        self._sum = 0.0

    def observe_many(self, values: Sequence[float] | NDArray[np.float64]) -> None:
        if isinstance(values, np.ndarray) and values.size <= _SMALL:
            values = values.ravel().tolist()
        if isinstance(values, list) and len(values) <= _SMALL:
            # numpy's fixed cost exceeds a few bisects: small batches (the common case at low load) stay in Python
            counts, bounds = self._counts, self._bounds
            for v in values:
                # bisect_left: a value equal to an upper bound falls in that bucket (le is inclusive); NaN goes last.
                counts[bisect_left(bounds, v) if v == v else -1] += 1
            self._sum += sum(values)
            return
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        idx = np.searchsorted(self._edges, arr, side="left")
        counts = self._counts
        for i, c in enumerate(np.bincount(idx, minlength=len(counts)).tolist()):
            counts[i] += c
        self._sum += float(arr.sum())

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value) if value == value else -1] += 1
        self._sum += value

    def cumulative(self) -> list[int]:
        return list(accumulate(self._counts))

    @property
    def sum(self) -> float:
        return self._sum


_SMALL = 32


class BatchHistogram(Collector):
    """Histogram with explicit buckets and batch observation.

    Args:
        name: metric name.
        documentation: help text.
        buckets: finite upper bounds, ascending (``+Inf`` is added).
        labelnames: label names; use :meth:`labels` to get a child when there are any.
        registry: where to register; None to stay unregistered.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        labelnames: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if bounds != sorted(set(bounds)) or not bounds:
            raise ValueError("buckets must be ascending and unique")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._edges = np.array(bounds, dtype=np.float64)
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        if not self.labelnames:
            self._children[()] = HistogramChild(self._edges)
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramChild(self._edges)
        return child

    @property
    def bounds(self) -> list[float]:
        """The finite upper bounds, ascending."""
        bounds: list[float] = self._edges.tolist()
        return bounds

    def children(self) -> list[tuple[tuple[str, ...], HistogramChild]]:
        """Every labelled series now (a copy: safe to iterate while new series are added)."""
        return list(self._children.items())

    def observe_many(self, values: Sequence[float] | NDArray[np.float64]) -> None:
        self._children[()].observe_many(values)

    def observe(self, value: float) -> None:
        self._children[()].observe(value)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [floatToGoString(b) for b in self._edges.tolist()] + ["+Inf"]  # type: ignore[no-untyped-call]
        for values, child in list(self._children.items()):
            family.add_metric(list(values), list(zip(les, child.cumulative(), strict=True)), child.sum)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class ScaledHistogram(Collector):
    """Another histogram's observations in another unit: the same counts, bounds and sum times ``scale``.

    ``ml_predict_latency_seconds`` is ``ml_predict_latency_ms`` divided by 1000: the base unit Prometheus asks
    for, beside the name the customer's alerts use, at no cost on the hot path (nothing is observed twice;
    the conversion happens at scrape time).

    Args:
        source: the histogram observed in the original unit.
        name: metric name.
        documentation: help text.
        scale: factor from the source's unit to this one (``1e-3`` for milliseconds to seconds).
        registry: where to register; None to stay unregistered.
    """

    def __init__(
        self,
        source: BatchHistogram,
        name: str,
        documentation: str,
        *,
        scale: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.documentation = documentation
        self.scale = scale
        # Rounded to 12 significant digits: 0.1 ms is le="0.0001", not "0.00010000000000000002".
        self._les = [floatToGoString(float(f"{b * scale:.12g}")) for b in source.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.source.labelnames)
        for values, child in self.source.children():
            family.add_metric(
                list(values), list(zip(self._les, child.cumulative(), strict=True)), child.sum * self.scale
            )
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.source.labelnames)
