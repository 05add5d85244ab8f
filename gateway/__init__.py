"""The HTTP bridge in front of ``ml.predict`` (rate limit, API key, 503 when no worker answers).

The ``ml.predict`` micro service itself runs inside every worker: :mod:`spark_ml.worker.services.predict`.
"""

from spark_ml.gateway.http import HttpGateway, run_gateway

__all__ = ["HttpGateway", "run_gateway"]
