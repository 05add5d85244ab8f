"""Request-reply transport: the ``ml.predict`` NATS micro service and the HTTP bridge in front of it."""

from spark_ml.gateway.http import HttpGateway, run_gateway
from spark_ml.worker.services.predict import MODEL_INFO, PredictService

__all__ = ["MODEL_INFO", "HttpGateway", "PredictService", "run_gateway"]
