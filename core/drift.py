"""Feature drift: Population Stability Index of live features against a model's reference distribution.

The reference (stored in the model's manifest) holds, per feature, the bin edges of the training data's
quantiles and the share of training rows in each bin. :class:`DriftMonitor` keeps the bin of every row
in a sliding window, so adding a batch and reading the PSI are both cheap and exact for the window.

PSI = sum over bins of (a - e) * ln(a / e), with a and e the live and reference shares, each floored at
``eps`` so an empty bin gives a large but finite value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["DriftMonitor", "Reference", "inner_edges", "psi", "reference_from"]

Reference = Mapping[str, Mapping[str, Sequence[float]]]
"""feature -> {"edges": [...], "fractions": [...]}"""


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64], eps: float = 1e-4) -> float:
    """Population Stability Index between two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def inner_edges(edges: Sequence[float], n_bins: int) -> NDArray[np.float64]:
    """Cut points between bins, whether ``edges`` lists the outer bounds too (n+1 values) or not (n-1)."""
    arr = np.asarray(edges, dtype=np.float64)
    if len(arr) == n_bins + 1:
        return arr[1:-1]
    if len(arr) == n_bins - 1:
        return arr
    raise ValueError(f"{len(arr)} edges do not fit {n_bins} bins")


def reference_from(x: NDArray[np.float64], names: Sequence[str], bins: int = 10) -> dict[str, dict[str, list[float]]]:
    """Quantile bins of each column of ``x`` (outer bounds included) and the share of rows in each."""
    out: dict[str, dict[str, list[float]]] = {}
    for j, name in enumerate(names):
        col = x[:, j]
        edges = np.unique(np.quantile(col, np.linspace(0.0, 1.0, bins + 1)))
        if len(edges) < 2:
            edges = np.array([col.min(), col.min()])
        inner = edges[1:-1]
        counts = np.bincount(np.searchsorted(inner, col, side="right"), minlength=len(edges) - 1)
        out[name] = {"edges": edges.tolist(), "fractions": (counts / max(len(col), 1)).tolist()}
    return out


class DriftMonitor:
    """PSI of each referenced feature over the last ``window`` rows.

    Args:
        reference: the model's reference distributions.
        columns: feature name -> column index in the rows given to :meth:`update`.
        window: rows in the sliding window.
    """

    def __init__(self, reference: Reference, columns: Mapping[str, int], *, window: int = 5000) -> None:
        self.names = [n for n in reference if n in columns]
        self._cols = np.array([columns[n] for n in self.names], dtype=np.int64)
        self._inner = [inner_edges(reference[n]["edges"], len(reference[n]["fractions"])) for n in self.names]
        self._expected = [np.asarray(reference[n]["fractions"], dtype=np.float64) for n in self.names]
        self.window = window
        self._bins = np.zeros((window, len(self.names)), dtype=np.int64)
        self._occupied = np.zeros(window, dtype=bool)
        self._counts = [np.zeros(len(e), dtype=np.int64) for e in self._expected]
        self._next = 0
        self.seen = 0

    def update(self, rows: NDArray[np.float64]) -> None:
        """Add a batch of rows (older rows leave the window)."""
        if not self.names or len(rows) == 0:
            return
        rows = rows[-self.window :]
        bins = np.stack(
            [
                np.searchsorted(inner, rows[:, c], side="right")
                for inner, c in zip(self._inner, self._cols, strict=True)
            ],
            axis=1,
        )
        n = len(bins)
        idx = (self._next + np.arange(n)) % self.window
        leaving = idx[self._occupied[idx]]
        if len(leaving):
            old = self._bins[leaving]
            for j, counts in enumerate(self._counts):
                counts -= np.bincount(old[:, j], minlength=len(counts))
        self._occupied[idx] = True
        self._bins[idx] = bins
        for j, counts in enumerate(self._counts):
            counts += np.bincount(bins[:, j], minlength=len(counts))
        self._next = int((self._next + n) % self.window)
        self.seen += n

    def psi(self) -> dict[str, float]:
        """Current PSI per feature (empty until the first row)."""
        total = min(self.seen, self.window)
        if total == 0:
            return {}
        return {
            name: psi(expected, counts / total)
            for name, expected, counts in zip(self.names, self._expected, self._counts, strict=True)
        }
