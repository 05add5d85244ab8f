"""spark-ml core: contracts, codec, features, models and the batch engine. Pure: no I/O, no asyncio."""

from spark_ml.core.codec import Encoding, Snapshot, decode, encode, snapshot_from_mapping
from spark_ml.core.contracts import ErrorReply, MarketSnapshot, Prediction, PredictRequest
from spark_ml.core.engine import BatchResult, Engine, SignalPolicy
from spark_ml.core.errors import ArtifactCorrupt, InvalidInput, ModelError, PayloadTooLarge, RegistryError, SparkMlError
from spark_ml.core.features import FEATURE_NAMES, FeatureStore, SymbolState
from spark_ml.core.models import BASELINE_VERSION, BaselineModel, Model

__all__ = [
    "BASELINE_VERSION",
    "FEATURE_NAMES",
    "ArtifactCorrupt",
    "BaselineModel",
    "BatchResult",
    "Encoding",
    "Engine",
    "ErrorReply",
    "FeatureStore",
    "InvalidInput",
    "MarketSnapshot",
    "Model",
    "ModelError",
    "PayloadTooLarge",
    "PredictRequest",
    "Prediction",
    "RegistryError",
    "SignalPolicy",
    "Snapshot",
    "SparkMlError",
    "SymbolState",
    "decode",
    "encode",
    "snapshot_from_mapping",
]
