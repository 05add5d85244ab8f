"""The spark-ml Python client: publish snapshots, follow predictions, request predictions, over NATS.

::

    from spark_ml.client import MarketSnapshot, connect

    async with connect("nats://127.0.0.1:4222") as ml:
        prediction = await ml.predict(MarketSnapshot(ts=1696723200000, mid=45000.0, symbol="BTCUSD"))

The same contracts, encodings and errors as the wire (README "Python client"): this package imports only
:mod:`spark_ml.core` and nats-py, so it carries none of the worker's runtime.
"""

from spark_ml.client.client import DEFAULT_URL, SparkMlClient, connect
from spark_ml.client.stream import PredictionStream
from spark_ml.core.contracts import MarketSnapshot, ModelInfo, Prediction
from spark_ml.core.errors import (
    InvalidInput,
    ModelError,
    PayloadTooLarge,
    RegistryError,
    RequestTimeout,
    SparkMlError,
    Unavailable,
)

__all__ = [
    "DEFAULT_URL",
    "InvalidInput",
    "MarketSnapshot",
    "ModelError",
    "ModelInfo",
    "PayloadTooLarge",
    "Prediction",
    "PredictionStream",
    "RegistryError",
    "RequestTimeout",
    "SparkMlClient",
    "SparkMlError",
    "Unavailable",
    "connect",
]
