"""The gateway's OpenAPI document: valid OpenAPI 3.1 (openapi-spec-validator), every reference resolves, the
schemas are the contracts', and the API key's presence decides its security."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import Unresolvable

from spark_ml.core.specs.openapi import openapi_document
from tests.support.specs import SpecSchemas, unresolved_refs


def document(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "version": "1.2.3",
        "api_key": False,
        "max_payload": 65536,
        "rate_limit": "20/second",
        "request_timeout_s": 2.0,
    }
    return openapi_document(**{**args, **overrides})


@pytest.mark.parametrize("api_key", [False, True])
def test_valid_openapi_3_1(api_key: bool) -> None:
    doc = document(api_key=api_key)
    validate(doc)
    assert doc["openapi"] == "3.1.0" and unresolved_refs(doc) == []


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("a dangling reference", lambda d: d["components"]["schemas"].pop("Prediction")),
        ("a response without a description", lambda d: d["paths"]["/ml/metrics"]["get"]["responses"]["200"].clear()),
        ("a bad status key", lambda d: d["paths"]["/ml/health"]["get"]["responses"].update({"2000": {}})),
    ],
)
def test_the_validator_refuses_a_broken_document(what: str, change: Any) -> None:
    doc = copy.deepcopy(document())
    change(doc)
    with pytest.raises((OpenAPIValidationError, Unresolvable)):
        validate(doc)


def test_security_follows_the_api_key() -> None:
    open_doc, keyed = document(), document(api_key=True)
    assert "security" not in open_doc and "401" not in open_doc["paths"]["/ml/predict"]["post"]["responses"]
    assert keyed["security"] == [{"apiKey": []}, {"bearer": []}]
    assert keyed["paths"]["/ml/predict"]["post"]["responses"]["401"]
    # The liveness probe and the document itself are served without the key
    assert (
        keyed["paths"]["/ml/health"]["get"]["security"] == []
        and keyed["paths"]["/openapi.json"]["get"]["security"] == []
    )


def test_bodies_are_the_contracts() -> None:
    schemas = SpecSchemas(document())
    seed = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}
    schemas.validate("#/components/schemas/PredictRequest", {"snapshot": seed})
    assert schemas.errors("#/components/schemas/PredictRequest", {"snapshot": {**seed, "mid": "45000"}})
    schemas.validate("#/components/schemas/GatewayHealth", {"status": "ok", "nats": True, "worker": True})
    assert schemas.errors("#/components/schemas/GatewayHealth", {"status": "fine", "nats": True, "worker": True})
