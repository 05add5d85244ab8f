"""spark-ml core: contracts, codec, features, models and the batch engine. Pure: no I/O, no asyncio."""

from core.codec import Encoding, Snapshot, decode, encode, snapshot_from_mapping
from core.contracts import ErrorReply, MarketSnapshot, Prediction, PredictRequest
from core.engine import BatchResult, Engine, SignalPolicy
from core.errors import ArtifactCorrupt, InvalidInput, ModelError, PayloadTooLarge, RegistryError, SparkMlError
from core.features import FEATURE_NAMES, FeatureStore, SymbolState
from core.models import BASELINE_VERSION, BaselineModel, Model

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
