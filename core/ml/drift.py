"""Feature drift: Population Stability Index of live features against a model's reference distribution.

The reference (stored in the model's manifest) holds, per feature, the bin edges of the training data's
quantiles and the share of training rows in each bin. :class:`DriftMonitor` keeps the bin of every row
in a sliding window, so adding a batch and reading the PSI are both cheap and exact for the window.

PSI = sum over bins of (a - e) * ln(a / e), with a and e the live and reference shares, each floored at
``eps`` so an empty bin gives a large but finite value.

Bins follow :func:`spark_ml.core.ml.training.bin_fractions`, which builds the references in the registry: bin ``i``
is ``(e[i], e[i+1]]`` (the first one closed), values beyond the outer edges fall in the outer bins, and a
constant feature has a single edge and one bin. The window and the alert levels live in ``core/drift.toml``
(:func:`load_thresholds`); ``spark-ml drift calibrate`` measures them (docs/DRIFT.md).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DriftMonitor",
    "DriftThresholds",
    "Reference",
    "bin_index",
    "first_crossing",
    "inner_edges",
    "load_thresholds",
    "psi",
    "reference_from",
    "stressed_closes",
    "window_psi",
]

Reference = Mapping[str, Mapping[str, Sequence[float]]]
"""feature -> {"edges": [...], "fractions": [...]}"""


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64], eps: float = 1e-4) -> float:
    """Population Stability Index between two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def inner_edges(edges: Sequence[float] | NDArray[np.float64], n_bins: int) -> NDArray[np.float64]:
    """Cut points between bins, whether ``edges`` lists the outer bounds too (n+1 values) or not (n-1).

    A constant feature (one edge, one bin) has no cut point.
    """
    arr = np.asarray(edges, dtype=np.float64)
    if n_bins == 1 and len(arr) <= 2:
        return arr[:0]
    if len(arr) == n_bins + 1:
        return arr[1:-1]
    if len(arr) == n_bins - 1:
        return arr
    raise ValueError(f"{len(arr)} edges do not fit {n_bins} bins")


def bin_index(inner: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Bin of each value: a value equal to a cut point belongs to the bin below it (as in training)."""
    out: NDArray[np.int64] = np.searchsorted(inner, values, side="left").astype(np.int64)
    return out


def reference_from(x: NDArray[np.float64], names: Sequence[str], bins: int = 10) -> dict[str, dict[str, list[float]]]:
    """Quantile bins of each column of ``x`` (outer bounds included) and the share of rows in each."""
    out: dict[str, dict[str, list[float]]] = {}
    for j, name in enumerate(names):
        col = x[:, j]
        edges = np.unique(np.quantile(col, np.linspace(0.0, 1.0, bins + 1)))
        n_bins = max(1, len(edges) - 1)
        counts = np.bincount(bin_index(inner_edges(edges, n_bins), col), minlength=n_bins)
        out[name] = {"edges": edges.tolist(), "fractions": (counts / max(len(col), 1)).tolist()}
    return out


def window_psi(
    reference: Reference, x: NDArray[np.float64], names: Sequence[str], window: int
) -> dict[str, NDArray[np.float64]]:
    """PSI of every full window of ``window`` consecutive rows of ``x`` (columns ``names``), per feature.

    Element ``k`` of each array is the PSI of rows ``k .. k + window - 1``: what :class:`DriftMonitor`
    reports right after row ``k + window - 1``. Empty arrays when ``x`` is shorter than the window.
    """
    out: dict[str, NDArray[np.float64]] = {}
    for j, name in enumerate(names):
        if name not in reference:
            continue
        expected = np.maximum(np.asarray(reference[name]["fractions"], dtype=np.float64), 1e-4)
        n_bins = len(expected)
        if len(x) < window:
            out[name] = np.empty(0)
            continue
        bins = bin_index(inner_edges(reference[name]["edges"], n_bins), x[:, j])
        onehot = np.zeros((len(x) + 1, n_bins), dtype=np.int64)
        onehot[np.arange(1, len(x) + 1), bins] = 1
        cum = np.cumsum(onehot, axis=0)
        actual = np.maximum((cum[window:] - cum[:-window]) / window, 1e-4)
        out[name] = np.sum((actual - expected) * np.log(actual / expected), axis=1)
    return out


def first_crossing(values: NDArray[np.float64], threshold: float, start: int = 0) -> int | None:
    """First index ``>= start`` whose value is at or above ``threshold``; None when there is none."""
    hits = np.flatnonzero(np.asarray(values)[start:] >= threshold)
    return int(hits[0]) + start if len(hits) else None


def stressed_closes(
    close: NDArray[np.float64], start: int, *, vol_factor: float, trend_bp: float
) -> NDArray[np.float64]:
    """A regime change replayed on a real series: from bar ``start`` on, log returns are multiplied by
    ``vol_factor`` and ``trend_bp`` basis points are added to each; bars before ``start`` are unchanged."""
    logs = np.log(np.asarray(close, dtype=np.float64))
    rets = np.diff(logs)
    k = max(start - 1, 0)
    rets[k:] = rets[k:] * vol_factor + trend_bp * 1e-4
    out: NDArray[np.float64] = np.exp(np.concatenate([logs[:1], logs[0] + np.cumsum(rets)]))
    return out


@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """Sliding window and alert levels of the PSI (``core/drift.toml``).

    Args:
        window: rows in the drift window of a worker.
        warning: feature -> PSI at or above which drift is a warning.
        critical: feature -> PSI at or above which drift is critical.
        default_warning: level for a feature missing from ``warning``.
        default_critical: level for a feature missing from ``critical``.
    """

    window: int = 1000
    warning: dict[str, float] = field(default_factory=dict)
    critical: dict[str, float] = field(default_factory=dict)
    default_warning: float = 0.1
    default_critical: float = 0.25

    def levels(self, feature: str) -> dict[str, float]:
        """``{"warning": w, "critical": c}`` for one feature."""
        return {
            "warning": self.warning.get(feature, self.default_warning),
            "critical": self.critical.get(feature, self.default_critical),
        }


def load_thresholds(path: Path | str | None = None) -> DriftThresholds:
    """Read the drift window and levels; the packaged ``core/drift.toml`` by default. ValueError when malformed."""
    text = (
        resources.files("spark_ml.core.ml").joinpath("drift.toml").read_text()
        if path is None
        else Path(path).read_text()
    )
    try:
        doc = tomllib.loads(text)
        levels = {k: {str(f): float(v) for f, v in doc.get(k, {}).items()} for k in ("warning", "critical")}
        defaults = doc.get("default", {})
        out = DriftThresholds(
            window=int(doc["window"]),
            warning=levels["warning"],
            critical=levels["critical"],
            default_warning=float(defaults.get("warning", 0.1)),
            default_critical=float(defaults.get("critical", 0.25)),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"bad drift thresholds file: {exc}") from exc
    if out.window < 1:
        raise ValueError("bad drift thresholds file: window must be >= 1")
    for f in {*out.warning, *out.critical}:
        w, c = out.levels(f).values()
        if not (math.isfinite(w) and math.isfinite(c) and 0 < w <= c):
            raise ValueError(f"bad drift thresholds file: {f} needs 0 < warning <= critical")
    return out


class DriftMonitor:
    """PSI of each referenced feature over the last ``window`` rows.

    Args:
        reference: the model's reference distributions.
        columns: feature name -> column index in the rows given to :meth:`update`.
        window: rows in the sliding window.
        chunk: rows gathered before they are binned (one vectorized step for all features); :meth:`psi`,
            :meth:`counts` and :attr:`seen` include gathered rows, so results equal binning every batch.

    The stream hands it every batch, often of a few rows at low load; binning each feature with its own
    ``searchsorted`` and ``bincount`` per batch cost about 20 us per message in a LightGBM worker at
    10k/s (py-spy), more than the model. Rows are binned for all features at once (a comparison against
    the cut points padded with +inf to one width) and counted with one ``bincount`` over offset bins.
    """

    def __init__(
        self, reference: Reference, columns: Mapping[str, int], *, window: int = 1000, chunk: int = 64
    ) -> None:
        self.names = [n for n in reference if n in columns]
        self._cols = np.array([columns[n] for n in self.names], dtype=np.int64)
        inner = [inner_edges(reference[n]["edges"], len(reference[n]["fractions"])) for n in self.names]
        self._expected = [np.asarray(reference[n]["fractions"], dtype=np.float64) for n in self.names]
        self.window = window
        self.chunk = chunk
        n_features = len(self.names)
        width = max((len(e) for e in self._expected), default=1)
        cuts = max((len(i) for i in inner), default=0)
        self._edges = np.full((n_features, cuts), np.inf)
        for j, edges in enumerate(inner):
            self._edges[j, : len(edges)] = edges
        self._n_inner = np.array([len(i) for i in inner], dtype=np.int64)
        self._offsets = np.arange(n_features, dtype=np.int64) * width
        self._width = width
        self._flat = np.zeros(n_features * width, dtype=np.int64)
        self._bins = np.zeros((window, n_features), dtype=np.int64)
        self._occupied = np.zeros(window, dtype=bool)
        self._next = 0
        self._seen = 0
        self._pending: list[NDArray[np.float64]] = []
        self._n_pending = 0

    @property
    def seen(self) -> int:
        """Rows added so far."""
        return self._seen + self._n_pending

    def update(self, rows: NDArray[np.float64]) -> None:
        """Add a batch of rows (older rows leave the window)."""
        if not self.names or len(rows) == 0:
            return
        self._pending.append(rows)
        self._n_pending += len(rows)
        if self._n_pending >= self.chunk:
            self._flush()

    def bins(self, rows: NDArray[np.float64]) -> NDArray[np.int64]:
        """Bin of every referenced feature of every row, as :func:`bin_index` gives it feature by feature."""
        x = rows[:, self._cols]
        # The number of cut points below a value is searchsorted(side="left"); +inf padding is never below.
        out: NDArray[np.int64] = (self._edges[None, :, :] < x[:, :, None]).sum(axis=2, dtype=np.int64)
        nan = np.isnan(x)
        if nan.any():  # searchsorted puts NaN after every cut point
            out[nan] = np.broadcast_to(self._n_inner, x.shape)[nan]
        return out

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self._n_pending = 0
        rows = pending[0] if len(pending) == 1 else np.concatenate(pending)
        self._seen += len(rows) - min(len(rows), self.window)
        rows = rows[-self.window :]
        bins = self.bins(rows)
        n = len(bins)
        size = len(self._flat)
        idx = (self._next + np.arange(n)) % self.window
        leaving = idx[self._occupied[idx]]
        if len(leaving):
            self._flat -= np.bincount((self._bins[leaving] + self._offsets).ravel(), minlength=size)
        self._occupied[idx] = True
        self._bins[idx] = bins
        self._flat += np.bincount((bins + self._offsets).ravel(), minlength=size)
        self._next = int((self._next + n) % self.window)
        self._seen += n

    def counts(self) -> list[NDArray[np.int64]]:
        """Rows of the window in each bin, per feature."""
        if self._pending:
            self._flush()
        w = self._width
        return [self._flat[j * w : j * w + len(e)] for j, e in enumerate(self._expected)]

    def psi(self) -> dict[str, float]:
        """Current PSI per feature (empty until the first row)."""
        counts = self.counts()
        total = min(self.seen, self.window)
        if total == 0:
            return {}
        return {
            name: psi(expected, c / total) for name, expected, c in zip(self.names, self._expected, counts, strict=True)
        }
