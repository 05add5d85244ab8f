"""A deterministic synthetic market with a planted, tunable signal whose Bayes-optimal AUC is known.

Bar ``t + 1``'s log return is ``sigma * (strength * g(f_t) + eps)`` with ``eps ~ N(0, 1)`` drawn
independently of the past, where ``f_t`` is the feature vector that :class:`spark_ml.core.features.SymbolState`
computes at bar ``t`` (the serving code itself). The probability that the next move is up is therefore
exactly ``p_t = Phi(strength * g(f_t))``: no model, however much history it sees, can do better than
scoring rows by ``p_t``.

``g`` has three parts, each in ``[-1, 1]``:

- ``reversion``: ``-clip(ret_1 / sigma, -2, 2) / 2``, a jump tends to be given back (linear: any model);
- ``rsi_band``: ``+1`` when RSI(14) is within ``band`` of 50, ``-1`` outside: calm markets drift up,
  stretched ones fall back (symmetric in RSI, so a linear model cannot use it);
- ``volume_confirm``: ``sign(ret_1) * sign(log_vol - log_vol_median)``: a move on high volume continues,
  on low volume it reverses (an interaction, also out of reach of a linear model).

Bayes AUC: the labels of rows with score ``p`` are Bernoulli(``p``), so the expected AUC of the ideal
scorer over the rows' ``p`` values is the weighted pair count :func:`bayes_auc` computes exactly;
:func:`bayes_auc_mc` estimates the same number by drawing labels (the tests hold the two together).
Spread (bp) and volume are drawn i.i.d. (lognormal); they carry no signal except through the volume term.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.features import FEATURE_NAMES, WARMUP, SymbolState
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.evaluate import auc

__all__ = ["SyntheticConfig", "bayes_auc", "bayes_auc_mc", "generate", "planted_score"]

_RET_1 = FEATURE_NAMES.index("ret_1")
_RSI = FEATURE_NAMES.index("rsi_14")
_LOG_VOL = FEATURE_NAMES.index("log_vol")


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Parameters of the synthetic bed; the defaults plant a signal with a Bayes AUC near 0.70.

    Args:
        seed: random seed; the same config always yields the same series.
        n_bars: number of bars.
        strength: multiplies the planted score; 0 is a pure random walk (Bayes AUC 0.5).
        sigma_bp: per-bar volatility of the noise, basis points.
        w_reversion: weight of the linear mean-reversion term.
        w_rsi_band: weight of the RSI band term (non-linear).
        w_volume: weight of the volume-confirmation term (interaction).
        band: half-width of the RSI band around 50.
        start_ms: timestamp of the first bar.
        step_ms: time between bars (hourly by default).
        symbol: symbol carried by the snapshots.
    """

    seed: int = 0
    n_bars: int = 40_000
    strength: float = 0.45
    sigma_bp: float = 10.0
    w_reversion: float = 0.4
    w_rsi_band: float = 0.6
    w_volume: float = 0.6
    band: float = 8.0
    start_ms: int = 1_704_067_200_000
    step_ms: int = 3_600_000
    symbol: str = "SYN"

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


_VOL_LOG_MEDIAN = math.log(1e6)
_VOL_LOG_SD = 0.6


def planted_score(features: NDArray[np.float64], cfg: SyntheticConfig) -> NDArray[np.float64]:
    """``strength * g(f)`` for feature rows (columns FEATURE_NAMES); ``Phi`` of it is P(next move up)."""
    f = np.atleast_2d(features)
    ret = f[:, _RET_1]
    reversion = -np.clip(ret / cfg.sigma_bp, -2.0, 2.0) / 2.0
    band = np.where(np.abs(f[:, _RSI] - 50.0) < cfg.band, 1.0, -1.0)
    confirm = np.sign(ret) * np.sign(f[:, _LOG_VOL] - math.log1p(math.exp(_VOL_LOG_MEDIAN)))
    g = cfg.w_reversion * reversion + cfg.w_rsi_band * band + cfg.w_volume * confirm
    out: NDArray[np.float64] = cfg.strength * g
    return out


def _phi(z: NDArray[np.float64]) -> NDArray[np.float64]:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    out: NDArray[np.float64] = 0.5 * (1.0 + erf(z / math.sqrt(2.0)))
    return out


def generate(cfg: SyntheticConfig | None = None) -> Dataset:
    """Simulate the bed; ``extra["p_up"]`` holds each bar's true probability that the next close is higher."""
    cfg = cfg or SyntheticConfig()
    if cfg.n_bars < WARMUP + 2:
        raise ValueError(f"n_bars must be at least {WARMUP + 2}")
    rng = np.random.default_rng(cfg.seed)
    eps = rng.standard_normal(cfg.n_bars)
    spreads = np.exp(rng.normal(math.log(1.5), 0.4, cfg.n_bars))
    volumes = np.exp(rng.normal(_VOL_LOG_MEDIAN, _VOL_LOG_SD, cfg.n_bars))
    state = SymbolState()
    snaps: list[Snapshot] = []
    rows: list[list[float]] = []
    z = np.zeros(cfg.n_bars)
    mid = 100.0
    for t in range(cfg.n_bars):
        snap = Snapshot(
            cfg.start_ms + t * cfg.step_ms, mid, cfg.symbol, spread_bp=float(spreads[t]), vol1m=float(volumes[t])
        )
        row = state.update(snap)
        snaps.append(snap)
        rows.append(row)
        # Before warm-up the indicators are placeholders: no signal there, so p_t is a coin flip.
        zt = float(planted_score(np.asarray(row), cfg)[0]) if t >= WARMUP - 1 else 0.0
        z[t] = zt
        mid *= math.exp(cfg.sigma_bp * 1e-4 * (zt + float(eps[t])))
    features = np.asarray(rows, dtype=np.float64)
    return Dataset("synthetic", cfg.symbol, tuple(snaps), features, {"p_up": _phi(z)})


def bayes_auc(p: ArrayLike) -> float:
    """Expected AUC of the ideal scorer on rows whose labels are Bernoulli(``p``), computed exactly.

    ``sum_{i != j} p_i (1 - p_j) [p_i > p_j] + 1/2 [p_i = p_j]`` divided by ``sum_{i != j} p_i (1 - p_j)``:
    the chance that a positive outranks a negative, pairs weighted by how likely they are to be one.
    """
    pa = np.asarray(p, dtype=np.float64)
    values, inverse = np.unique(pa, return_inverse=True)
    w_pos = np.bincount(inverse, weights=pa, minlength=values.size)
    w_neg = np.bincount(inverse, weights=1.0 - pa, minlength=values.size)
    neg_below = np.cumsum(w_neg) - w_neg
    # A row never pairs with itself: remove its own p(1-p) from the tie and total counts.
    self_pairs = float(np.sum(pa * (1.0 - pa)))
    num = float(np.sum(w_pos * neg_below) + 0.5 * (np.sum(w_pos * w_neg) - self_pairs))
    den = float(w_pos.sum() * w_neg.sum() - self_pairs)
    return num / den if den > 0 else math.nan


def bayes_auc_mc(p: ArrayLike, *, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """Monte Carlo estimate of :func:`bayes_auc`: mean and standard error of the AUC of ``p`` on drawn labels."""
    pa = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = np.array([auc((rng.random(pa.size) < pa).astype(np.int64), pa) for _ in range(draws)])
    return float(np.nanmean(values)), float(np.nanstd(values, ddof=1) / math.sqrt(draws))
