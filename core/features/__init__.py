"""The feature vector: one implementation for training (a whole series) and serving (snapshot by snapshot).

:class:`SymbolState` holds one symbol's streaming indicators; :meth:`SymbolState.update` turns the next
snapshot into the full vector named by :data:`FEATURE_NAMES`. Training runs the same ``update`` over a
series (:func:`series_features`), so there is no second implementation to drift from the first.

Units are chosen so that one model works across price levels: returns, volatility and MACD are in
basis points of the mid, bandwidth in basis points of the middle band. During warm-up (the first
:data:`WARMUP` updates of a symbol) indicators report neutral values; training drops those rows.
"""

from spark_ml.core.features.fast import SymbolState
from spark_ml.core.features.reference import ReferenceState
from spark_ml.core.features.spec import FEATURE_NAMES, N_FEATURES, WARMUP
from spark_ml.core.features.store import KERNEL, FeatureState, FeatureStore, new_state, restore_state, series_features

__all__ = [
    "FEATURE_NAMES",
    "KERNEL",
    "N_FEATURES",
    "WARMUP",
    "FeatureState",
    "FeatureStore",
    "ReferenceState",
    "SymbolState",
    "new_state",
    "restore_state",
    "series_features",
]
