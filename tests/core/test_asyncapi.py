"""The AsyncAPI document: valid against the official AsyncAPI 3.0.0 JSON Schema (vendored in tests/data), every
reference resolves, every subject of core/subjects.py is a channel, and its schemas are the contracts'."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from spark_ml.core import partition, subjects
from spark_ml.core.specs.asyncapi import asyncapi_document
from tests.support.specs import SpecSchemas, unresolved_refs

OFFICIAL = Path(__file__).resolve().parents[1] / "data" / "asyncapi" / "3.0.0-without-id.json"
SEED = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}


@pytest.fixture(scope="module")
def official() -> Draft7Validator:
    schema = json.loads(OFFICIAL.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def document(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"version": "1.2.3", "partitions": 16, "servers": ["nats://127.0.0.1:4222"]}
    return asyncapi_document(**{**args, **overrides})


@pytest.mark.parametrize("partitions", [1, 16, 64])
def test_valid_against_the_official_schema(official: Draft7Validator, partitions: int) -> None:
    doc = document(partitions=partitions, servers=["nats://u:secret@10.0.0.1:4222", "tls://nats.example:4443"])
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in official.iter_errors(doc)]
    assert not errors, errors
    assert unresolved_refs(doc) == []
    assert doc["servers"]["nats"] == {"host": "10.0.0.1:4222", "protocol": "nats", "description": "NATS server"}
    assert doc["servers"]["nats1"]["description"] == "NATS server over TLS"
    assert "secret" not in json.dumps(doc)


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("no info", lambda d: d.pop("info")),
        ("an AsyncAPI 2 action", lambda d: d["operations"]["sendPrediction"].update(action="publish")),
        ("a broken payload schema", lambda d: d["components"]["schemas"]["Prediction"].update(type=5)),
        ("a channel key of AsyncAPI 2", lambda d: d["channels"]["prediction"].update(subscribe={})),
    ],
)
def test_the_official_schema_refuses_a_broken_document(official: Draft7Validator, what: str, change: Any) -> None:
    # The check can fail: each of these breaks the document
    doc = copy.deepcopy(document())
    change(doc)
    assert list(official.iter_errors(doc)), what


def _subject_constants() -> dict[str, str]:
    names = {n: getattr(subjects, n) for n in subjects.__all__}
    found = {n: v for n, v in names.items() if isinstance(v, str) and "." in v and n.isupper()}
    found.update(PART_PREFIX=partition.PART_PREFIX, PREDICT_PART_PREFIX=partition.PREDICT_PART_PREFIX)
    return found


def _pattern(address: str) -> str:
    return re.sub(r"\{[^}]+\}", "*", address)


def _covers(address: str, subject: str) -> bool:
    """A channel covers a subject constant: equal, a prefix of it (``analytics.pnl`` of ``analytics.pnl.{symbol}``),
    or a wildcard's match (``market.snapshot.>``)."""
    if subject.endswith(".>"):
        return address.startswith(subject[:-1])
    return address == subject or address.startswith(subject + ".")


def test_every_subject_of_core_subjects_is_a_channel() -> None:
    addresses = [c["address"] for c in document()["channels"].values() if c["address"] is not None]
    consts = _subject_constants()
    assert {"PREDICTION", "DLQ", "PREDICT", "MODEL_INFO", "ANALYTICS_PNL_PREFIX", "SNAPSHOT_WILDCARD"} <= consts.keys()
    missing = [f"{n} = {v!r}" for n, v in consts.items() if not any(_covers(a, v) for a in addresses)]
    assert not missing, f"subjects with no channel in core/specs/asyncapi.py: {missing}"


def test_channel_parameters_match_their_addresses() -> None:
    for name, channel in document(partitions=4)["channels"].items():
        placeholders = set(re.findall(r"\{([^}]+)\}", channel["address"] or ""))
        assert placeholders == set(channel.get("parameters", {})), name
    assert document(partitions=4)["channels"]["predictPartition"]["parameters"]["partition"]["enum"] == [
        "0",
        "1",
        "2",
        "3",
    ]


def test_payload_schemas_are_the_contracts() -> None:
    schemas = SpecSchemas(document())
    messages = schemas.document["components"]["messages"]
    # The examples are valid, and the seeds' example is accepted as is
    for name, message in messages.items():
        for example in message.get("examples", []):
            schemas.validate(f"#/components/messages/{name}/payload", example["payload"])
    schemas.validate("#/components/schemas/MarketSnapshot", SEED)
    # The rules of the pydantic contract hold: strict numbers, required fields, ranges, symbol length
    for bad in (
        {**SEED, "ts": "1696723200000"},
        {**SEED, "mid": 0},
        {"ts": 1},
        {**SEED, "rsi14": 101},
        {**SEED, "symbol": ""},
        {**SEED, "symbol": "X" * 65},
        {**SEED, "ts": 2**53 + 1},
    ):
        assert schemas.errors("#/components/schemas/MarketSnapshot", bad), bad
    schemas.validate("#/components/schemas/PredictRequest", {"snapshot": SEED, "model": "lgbm-1234abcd"})
    assert schemas.errors("#/components/schemas/PredictRequest", {"model": "x"})
    pred = {"ts": 1, "symbol": "X", "score": 0.5, "signal": "hold", "confidence": 0.0, "modelVersion": "baseline",
            "features": {"rsi_14": 55.0}, "latencyMs": 0.2}  # fmt: skip
    schemas.validate("#/components/schemas/Prediction", pred)
    assert schemas.errors("#/components/schemas/Prediction", {**pred, "signal": "strong buy"})
    schemas.validate("#/components/schemas/ErrorReply", {"error": {"code": "schema", "message": "mid: bad"}})
