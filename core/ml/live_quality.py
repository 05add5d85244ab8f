"""Live model quality: each prediction labelled by its symbol's next snapshot, scored over rolling windows.

The label is the one training uses (:func:`spark_ml.core.ml.dataset.next_up_labels`): a prediction made on a
snapshot is "up" when the same symbol's next snapshot has a strictly higher ``mid``. So the label of a
prediction is known as soon as that next snapshot is scored, and :class:`LabelJoin` keeps, per symbol, only
the last prediction still waiting for it.

What is counted, and why:

- Only published predictions take part: a refused snapshot (``out_of_order``, bad features) is neither a
  prediction nor a "next snapshot", as it is no bar of the series the model sees.
- A prediction made before its symbol's state is warm (its first :data:`~spark_ml.core.features.WARMUP`
  snapshots) is left out, as walk-forward evaluation leaves those rows out (:meth:`Dataset.rows`); the
  count comes from the feature state itself (``count_of``) for a symbol the join meets for the first time,
  so a symbol whose warm state moved here from another worker is not warmed up again.
- The windows hold the last ``window`` labelled predictions of each model version; their figures are the
  offline definitions of :mod:`spark_ml.core.ml.evaluate` (AUC, accuracy, log loss, Brier score).

Memory is bounded whatever the number of symbols: the join keeps two generations of about ``max_symbols``
entries each (a generation is closed after the batch that fills it), so a symbol seen within the last
``max_symbols`` distinct symbols is always kept, as in an LRU of that size; an evicted symbol loses only its
pending label. Batches wait in a bounded backlog until their shadow scores arrive (the shadow model scores in
a thread, later than the live one), so live and shadow predictions of the same snapshot get the same label.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from itertools import repeat

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.features import WARMUP
from spark_ml.core.ml.evaluate import accuracy, auc, brier, log_loss

__all__ = ["LIVE_METRICS", "LabelJoin", "LiveQuality", "VersionQuality", "Window", "live_figures", "pool_windows"]

LIVE_METRICS: tuple[str, ...] = ("auc", "accuracy", "log_loss", "brier")
"""The figures of a live window, each as :mod:`spark_ml.core.ml.evaluate` defines it."""


def live_figures(y: NDArray[np.int64], s: NDArray[np.float64]) -> dict[str, float]:
    """:data:`LIVE_METRICS` of labels ``y`` and scores ``s`` (NaN for AUC when one class only)."""
    return {"auc": auc(y, s), "accuracy": accuracy(y, s), "log_loss": log_loss(y, s), "brier": brier(y, s)}


class Window:
    """The last ``size`` labelled predictions of one model version, and how many were ever labelled.

    Args:
        size: rows kept.
    """

    __slots__ = ("labels", "scores", "total")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a window holds at least one row")
        self.labels: deque[bool] = deque(maxlen=size)
        self.scores: deque[float] = deque(maxlen=size)
        self.total = 0
        """Predictions labelled into this window since it was made (a counter's source)."""

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Labels (0/1) and scores, oldest first."""
        n = len(self.labels)
        return np.fromiter(self.labels, dtype=np.int64, count=n), np.fromiter(self.scores, dtype=np.float64, count=n)

    def figures(self) -> dict[str, float]:
        return live_figures(*self.arrays())


_Windows = tuple[Window, Window | None]
_Pending = tuple[int, float, int, float, float | None, _Windows]
"""A symbol's last prediction: ts, mid, the symbol's count of snapshots then, live and shadow score, windows."""


class LabelJoin:
    """Each symbol's last prediction, labelled into its window when the symbol's next snapshot comes.

    Args:
        max_symbols: symbols always remembered (module docstring); at most ``2 * max_symbols`` and one batch are held.
        warmup: a prediction made on a symbol's first ``warmup`` snapshots is not labelled.
    """

    def __init__(self, *, max_symbols: int, warmup: int = WARMUP) -> None:
        if max_symbols < 1:
            raise ValueError("max_symbols must be >= 1")
        self.max_symbols = max_symbols
        self.warmup = warmup
        self._cur: dict[str, _Pending] = {}
        self._old: dict[str, _Pending] = {}
        self._windows: _Windows | None = None

    def __len__(self) -> int:
        """Entries held (a symbol in both generations counts twice): at most ``2 * max_symbols`` + one batch."""
        return len(self._cur) + len(self._old)

    def pending(self, symbol: str) -> bool:
        return symbol in self._cur or symbol in self._old

    def _pair(self, window: Window, shadow: Window | None) -> _Windows:
        # One tuple per pair of windows, so the loop tells "same windows as this batch" by identity.
        pair = self._windows
        if pair is None or pair[0] is not window or pair[1] is not shadow:
            pair = self._windows = (window, shadow)
        return pair

    def feed(
        self,
        snaps: Sequence[Snapshot],
        scores: Sequence[float],
        window: Window,
        shadow_scores: Sequence[float | None] | None = None,
        shadow: Window | None = None,
        *,
        count_of: Callable[[str], int] | None = None,
    ) -> int:
        """Label the pending predictions of these snapshots' symbols, then make these the pending ones.

        Args:
            snaps: one batch of scored snapshots, in the order they were scored.
            scores: the live model's score of each.
            window: where the live model's labelled predictions go.
            shadow_scores: the shadow model's score of each (None where it has none), or None.
            shadow: where the shadow's labelled predictions go.
            count_of: a symbol's count of snapshots in its feature state after this batch; asked only for
                symbols the join does not hold (else the join counts from 1).

        Returns the number of live predictions labelled.
        """
        # The hot path of live quality (every published prediction): plain locals, and the labels of
        # predictions made with this batch's windows (nearly all) gathered in lists, added once at the end.
        cur, old, warm, limit = self._cur, self._old, self.warmup, self.max_symbols
        pair = self._pair(window, shadow)
        ys: list[bool] = []
        ss: list[float] = []
        sys_: list[bool] = []
        sss: list[float] = []
        in_batch: dict[str, int] | None = None
        other = 0
        sscores: Iterable[float | None] = repeat(None) if shadow_scores is None else shadow_scores
        for snap, score, sscore in zip(snaps, scores, sscores, strict=False):  # sscores may be endless
            sym = snap.symbol
            mid = snap.mid
            ts = snap.ts
            prev = cur.get(sym) or old.get(sym)
            if prev is None:
                if count_of is None:
                    n = 1
                else:
                    if in_batch is None:
                        in_batch = _counts(snaps)
                    # This is the symbol's first row in the batch (the join holds it from now on): its count
                    # is the state's after the batch less the symbol's other rows in it.
                    n = count_of(sym) - in_batch[sym] + 1
            else:
                pts, pmid, n, pscore, psscore, ppair = prev
                if ts == pts and mid == pmid:  # the same snapshot again (a redelivery): not the next bar
                    continue
                if n > warm:
                    up = mid > pmid
                    if ppair is pair:
                        ys.append(up)
                        ss.append(pscore)
                        if psscore is not None:
                            sys_.append(up)
                            sss.append(psscore)
                    else:
                        other += 1
                        _add(ppair[0], up, pscore)
                        if psscore is not None and ppair[1] is not None:
                            _add(ppair[1], up, psscore)
                else:
                    n += 1
            cur[sym] = (ts, mid, n, score, sscore, pair)
        if len(cur) >= limit:
            self._old, self._cur = cur, {}
        _extend(window, ys, ss)
        if shadow is not None:
            _extend(shadow, sys_, sss)
        return len(ys) + other

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop these symbols' pending predictions (their partition moved to another worker)."""
        for sym in symbols:
            self._cur.pop(sym, None)
            self._old.pop(sym, None)


def _add(window: Window, up: bool, score: float) -> None:
    window.labels.append(up)
    window.scores.append(score)
    window.total += 1


def _extend(window: Window, ys: list[bool], ss: list[float]) -> None:
    if ys:
        window.labels.extend(ys)
        window.scores.extend(ss)
        window.total += len(ys)


def _counts(snaps: Sequence[Snapshot]) -> dict[str, int]:
    out: dict[str, int] = {}
    for snap in snaps:
        out[snap.symbol] = out.get(snap.symbol, 0) + 1
    return out


@dataclass(frozen=True, slots=True)
class VersionQuality:
    """The live figures of one model version on this worker.

    Args:
        version: the model version.
        role: ``active`` or ``shadow``.
        labelled: predictions labelled since its window was made.
        rows: rows in the window now.
        figures: :data:`LIVE_METRICS` over the window (NaN while it is empty; AUC NaN with one class).
        workers: how many workers' windows these are (pooled by :func:`pool_windows`).
    """

    version: str
    role: str
    labelled: int
    rows: int
    figures: dict[str, float]
    workers: int = 1

    def as_dict(self) -> dict[str, object]:
        """The fields, with the figures flattened in (NaN as None)."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "figures"}
        return {**out, **{k: (None if math.isnan(v) else v) for k, v in self.figures.items()}}


class _Batch:
    __slots__ = ("key", "snaps", "scores", "window", "shadow", "shadow_scores", "waiting")

    def __init__(self, key: object, snaps: Sequence[Snapshot], scores: Sequence[float], window: Window) -> None:
        self.key = key
        self.snaps = snaps
        self.scores = scores
        self.window = window
        self.shadow: Window | None = None
        self.shadow_scores: Sequence[float] | None = None
        self.waiting = False
        """Shadow scores are still to come for this batch."""


class LiveQuality:
    """Windows per model version (the active one and the shadow), fed through one :class:`LabelJoin`.

    Args:
        window: labelled predictions kept per version.
        max_symbols: see :class:`LabelJoin`.
        backlog_rows: rows that may wait for their shadow scores; past it the oldest batches are joined
            without them (a shadow that is that far behind has skipped or failed).
        count_of: a symbol's count of snapshots in its feature state now (after every batch observed so far).
        warmup: see :class:`LabelJoin`.
    """

    def __init__(
        self,
        *,
        window: int,
        max_symbols: int,
        backlog_rows: int = 8192,
        count_of: Callable[[str], int] | None = None,
        warmup: int = WARMUP,
    ) -> None:
        self.window_size = window
        self.join = LabelJoin(max_symbols=max_symbols, warmup=warmup)
        self.backlog_rows = backlog_rows
        self.count_of = count_of
        self.active: str | None = None
        self.shadow: str | None = None
        self.windows: dict[str, Window] = {}
        self._backlog: deque[_Batch] = deque()
        self._backlog_len = 0
        self._later: dict[str, int] | None = None
        """Per symbol, its snapshots in the batches waiting behind the one being joined (see :meth:`_count`)."""

    def set_versions(self, active: str, shadow: str | None) -> list[str]:
        """The versions now served; returns the versions whose windows were dropped (neither any more).

        A version keeps its window when its role changes (a promoted shadow goes on with its figures).
        """
        self.active = active
        self.shadow = shadow if shadow != active else None
        keep = {active, *([self.shadow] if self.shadow else [])}
        dropped = [v for v in self.windows if v not in keep]
        for v in dropped:
            del self.windows[v]
        for v in keep:
            if v not in self.windows:
                self.windows[v] = Window(self.window_size)
        return dropped

    def observe(self, key: object, snaps: Sequence[Snapshot], scores: Sequence[float], version: str) -> None:
        """A published batch scored by ``version``; ``key`` names it for :meth:`shadow_scored`.

        When a shadow is set, the batch waits for :meth:`shadow_scored` (or the backlog bound) before it
        is joined; without one it is joined at once.
        """
        window = self.windows.get(version)
        if window is None:  # a batch of a version no longer served (a swap raced it): its own window
            window = Window(self.window_size)
        shadow = self.windows.get(self.shadow) if self.shadow is not None else None
        if shadow is None and not self._backlog:  # nothing to wait for: joined at once (most batches)
            self._later = None
            self.join.feed(snaps, scores, window, count_of=self._count if self.count_of is not None else None)
            return
        batch = _Batch(key, snaps, scores, window)
        batch.shadow = shadow
        batch.waiting = shadow is not None
        self._backlog.append(batch)
        self._backlog_len += len(snaps)
        self.settle()

    def shadow_scored(self, key: object, version: str, scores: Sequence[float] | None) -> None:
        """The shadow's scores of batch ``key`` (None: skipped or failed), then join what is ready."""
        for batch in reversed(self._backlog):
            if batch.key is key:
                if batch.waiting and version == self.shadow:
                    batch.shadow_scores = scores
                batch.waiting = False
                break
        self.settle()

    def settle(self, *, force: bool = False) -> int:
        """Join the batches that are ready, oldest first (all of them when ``force``); returns rows labelled."""
        labelled = 0
        backlog = self._backlog
        while backlog and (force or not backlog[0].waiting or self._backlog_len > self.backlog_rows):
            b = backlog.popleft()
            self._backlog_len -= len(b.snaps)
            self._later = None
            count_of = self._count if self.count_of is not None else None
            labelled += self.join.feed(b.snaps, b.scores, b.window, b.shadow_scores, b.shadow, count_of=count_of)
        return labelled

    def _count(self, symbol: str) -> int:
        """``count_of`` as of the batch being joined: the batches still waiting have advanced the states since
        (they are counted once per joined batch, and only when a symbol new to the join asks)."""
        assert self.count_of is not None
        later = self._later
        if later is None:
            later = self._later = {}
            for batch in self._backlog:
                for snap in batch.snaps:
                    later[snap.symbol] = later.get(snap.symbol, 0) + 1
        return self.count_of(symbol) - later.get(symbol, 0)

    @property
    def waiting_rows(self) -> int:
        return self._backlog_len

    def forget(self, symbols: Iterable[str]) -> None:
        """These symbols moved to another worker: join what waits, then drop their pending predictions."""
        self.settle(force=True)
        self.join.forget(symbols)

    def report(self) -> list[VersionQuality]:
        """The figures of the active version, then the shadow's (the backlog's ready batches joined first)."""
        self.settle()
        out = []
        for role, version in (("active", self.active), ("shadow", self.shadow)):
            if version is None or version not in self.windows:
                continue
            w = self.windows[version]
            figures = w.figures() if len(w) else dict.fromkeys(LIVE_METRICS, math.nan)
            out.append(VersionQuality(version, role, w.total, len(w), figures))
        return out


def pool_windows(
    parts: Iterable[tuple[str, str, int, NDArray[np.int64], NDArray[np.float64]]],
) -> list[VersionQuality]:
    """Several workers' windows of each (role, version) as one: ``parts`` are (role, version, labelled,
    labels, scores) per worker; the figures are those of the concatenated windows (a pooled AUC is not the
    mean of the workers' AUCs). Active versions first."""
    grouped: dict[tuple[str, str], list[tuple[int, NDArray[np.int64], NDArray[np.float64]]]] = {}
    for role, version, labelled, y, s in parts:
        grouped.setdefault((role, version), []).append((labelled, y, s))
    out = []
    for (role, version), rows in sorted(grouped.items(), key=lambda kv: (kv[0][0] != "active", kv[0])):
        y = np.concatenate([r[1] for r in rows])
        s = np.concatenate([r[2] for r in rows])
        figures = live_figures(y, s) if y.size else dict.fromkeys(LIVE_METRICS, math.nan)
        out.append(VersionQuality(version, role, sum(r[0] for r in rows), int(y.size), figures, len(rows)))
    return out
