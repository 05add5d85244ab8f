"""Request-reply transport: the ``ml.predict`` NATS micro service and the HTTP bridge in front of it."""

from gateway.http import HttpGateway, run_gateway
from gateway.service import MODEL_INFO, PredictService

__all__ = ["MODEL_INFO", "HttpGateway", "PredictService", "run_gateway"]
