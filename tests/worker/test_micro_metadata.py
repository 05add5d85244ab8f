"""The micro endpoints' metadata in ``$SRV.INFO``: request, reply and error schemas that real traffic satisfies."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from jsonschema import Draft202012Validator
from nats.aio.client import Client

from spark_ml.core.specs.asyncapi import asyncapi_document
from spark_ml.core.subjects import MODEL_INFO, PREDICT, SERVICE_NAME
from tests.support.predict import SEED_SNAPSHOT, start_service


def _schemas(info: dict[str, Any], name: str) -> dict[str, Any]:
    [endpoint] = [e for e in info["endpoints"] if e["name"] == name]
    meta: dict[str, str] = endpoint["metadata"]
    return {k: json.loads(v) for k, v in meta.items() if k.endswith("_schema")} | {"types": meta["content_types"]}


async def test_info_carries_schemas_that_the_replies_satisfy(nc: Client) -> None:
    # Given the service, When $SRV.INFO is asked
    await start_service(nc)
    info = json.loads((await nc.request(f"$SRV.INFO.{SERVICE_NAME}", b"", timeout=2)).data)
    predict, model_info = _schemas(info, "predict"), _schemas(info, "model-info")
    # Then the schemas are valid JSON Schemas, the same as the AsyncAPI document's
    for schemas in (predict, model_info):
        for key, schema in schemas.items():
            if key != "types":
                Draft202012Validator.check_schema(schema)
    components = asyncapi_document(version="0", partitions=16, servers=[])["components"]["schemas"]
    assert predict["request_schema"]["properties"].keys() == components["PredictRequest"]["properties"].keys()
    assert predict["response_schema"]["required"] == components["Prediction"]["required"]
    assert predict["types"] == "application/msgpack, application/json" and model_info["types"] == "application/json"
    assert "request_schema" not in model_info
    # And real requests and replies satisfy them, refusals included
    request = {"snapshot": {**SEED_SNAPSHOT, "symbol": "META"}}
    Draft202012Validator(predict["request_schema"]).validate(request)
    reply = await nc.request(PREDICT, msgpack.packb(request), timeout=2)
    Draft202012Validator(predict["response_schema"]).validate(msgpack.unpackb(reply.data))
    refused = await nc.request(PREDICT, msgpack.packb({"snapshot": {"mid": "high"}}), timeout=2)
    assert refused.headers and refused.headers["Nats-Service-Error-Code"] == "400"
    assert not Draft202012Validator(predict["request_schema"]).is_valid({"snapshot": {"mid": "high"}})
    Draft202012Validator(predict["error_schema"]).validate(msgpack.unpackb(refused.data))
    answer = await nc.request(MODEL_INFO, b"", timeout=2)
    Draft202012Validator(model_info["response_schema"]).validate(json.loads(answer.data))
