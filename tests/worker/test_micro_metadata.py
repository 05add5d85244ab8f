"""The micro endpoints' metadata in ``$SRV.INFO``: request, reply and error schemas that real traffic satisfies."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgpack
from jsonschema import Draft202012Validator
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.specs.asyncapi import asyncapi_document
from spark_ml.core.subjects import MODEL_INFO, PREDICT, SERVICE_NAME
from spark_ml.worker.services.analytics import AnalyticsService
from tests.support.analytics import T0, H, prediction, snap
from tests.support.lifecycle import started, until
from tests.support.messages import decode_any
from tests.support.predict import SEED_SNAPSHOT, start_service
from tests.support.specs import SpecSchemas


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


def _feed(symbol: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` hourly snapshots of ``symbol``, each followed by a prediction (buy, hold, sell in turn): trades."""
    out = []
    for k in range(n):
        ts = T0 + k * H
        out.append((subjects.snapshot_for(symbol), snap(symbol, 100.0 + k % 5, ts)))
        out.append((subjects.PREDICTION, prediction(symbol, ("buy", "hold", "sell")[k % 3], ts)))
    return out


def _required_missing(reply: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    """A deep copy of ``reply`` without the key at ``path``."""
    broken: Any = copy.deepcopy(reply)
    node = broken
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    out: dict[str, Any] = broken
    return out


async def test_analytics_info_carries_schemas_that_its_replies_satisfy(nc: Client, uid: str) -> None:
    # Given a real analytics service that has seen two symbols' snapshots and signals (trades, an open one too)
    async with started() as group:
        svc = await group.start(AnalyticsService(nc, min_gap_s=0.0, interval_s=60, curve_points=8))
        a, b = f"A{uid}", f"B{uid}.X"
        for subject, body in _feed(a, 40) + _feed(b, 10):
            await nc.publish(subject, body)
        await until(lambda: svc.snapshots == 50 and svc.predictions == 50, 10, "every message handled")
        # When $SRV.INFO is asked, and each endpoint for a symbol and for the portfolio, in JSON and msgpack
        info = json.loads((await nc.request(f"$SRV.INFO.{subjects.ANALYTICS_SERVICE}", b"", timeout=5)).data)
        ask = {
            "symbol": (subjects.ANALYTICS_GET, json.dumps({"symbol": a}).encode()),
            "portfolio": (subjects.ANALYTICS_GET, b""),
            "symbolExport": (subjects.ANALYTICS_EXPORT, msgpack.packb({"symbol": a})),
            "portfolioExport": (subjects.ANALYTICS_EXPORT, b"{}"),
            "unknown": (subjects.ANALYTICS_GET, msgpack.packb({"symbol": "NOPE" + uid})),
        }
        replies = {name: await nc.request(subject, body, timeout=5) for name, (subject, body) in ask.items()}
    get, export = _schemas(info, "get"), _schemas(info, "export")
    doc = asyncapi_document(version="0", partitions=16, servers=[])
    spec, components = SpecSchemas(doc), doc["components"]["schemas"]
    # Then the schemas are valid JSON Schemas, the request's and the replies' models the AsyncAPI document's
    for schemas in (get, export):
        assert schemas["types"] == "application/json, application/msgpack"
        for key, schema in schemas.items():
            if key != "types":
                Draft202012Validator.check_schema(schema)
        assert schemas["request_schema"]["properties"].keys() == components["AnalyticsQuery"]["properties"].keys()
    models = {"get": ("SymbolFiguresReply", "PortfolioFiguresReply"), "export": ("SymbolExport", "PortfolioExport")}
    for schemas, names in ((get, models["get"]), (export, models["export"])):
        assert [r["$ref"] for r in schemas["response_schema"]["anyOf"]] == [f"#/$defs/{n}" for n in names]
        for name in names:
            assert schemas["response_schema"]["$defs"][name]["required"] == components[name]["required"], name
    # And every real reply satisfies its endpoint's schema and the document's message, with exactly its keys
    bodies = {name: decode_any(reply.data) for name, reply in replies.items()}
    for name in ("symbol", "portfolio", "symbolExport", "portfolioExport"):
        assert not (replies[name].headers or {}).get("Nats-Service-Error-Code"), bodies[name]
    assert replies["symbolExport"].data[:1] != b"{" and replies["symbol"].data[:1] == b"{"
    assert bodies["symbolExport"]["trades"] and bodies["symbolExport"]["trades"][-1]["exitTs"] is None
    assert bodies["portfolio"]["symbols"] == 2 and bodies["portfolioExport"]["symbols"] == [a, b]
    checks = {
        "symbol": (get, "AnalyticsFigures", "SymbolFiguresReply"),
        "portfolio": (get, "AnalyticsFigures", "PortfolioFiguresReply"),
        "symbolExport": (export, "AnalyticsExport", "SymbolExport"),
        "portfolioExport": (export, "AnalyticsExport", "PortfolioExport"),
    }
    for name, (schemas, message, model) in checks.items():
        Draft202012Validator(schemas["response_schema"]).validate(bodies[name])
        spec.validate(f"#/components/messages/{message}/payload", bodies[name])
        assert set(bodies[name]) == set(components[model]["properties"]), name
    for name, model in (("symbolExport", "SymbolFigures"), ("portfolioExport", "PortfolioFigures")):
        assert set(bodies[name]["figures"]) == set(components[model]["properties"]), name
    for trade in bodies["symbolExport"]["trades"]:
        assert set(trade) == set(components["ExportedTrade"]["properties"])
    assert replies["unknown"].headers and replies["unknown"].headers["Nats-Service-Error-Code"] == "404"
    Draft202012Validator(get["error_schema"]).validate(bodies["unknown"])
    # And the schemas can fail: a reply without one of its keys is refused by both
    for name, path in (
        ("symbol", ("sharpe",)),
        ("symbol", ("servedAt",)),
        ("portfolio", ("grossPosition",)),
        ("symbolExport", ("tradesTotal",)),
        ("symbolExport", ("figures", "window")),
        ("symbolExport", ("trades", 0, "exitTs")),
        ("portfolioExport", ("symbols",)),
    ):
        schemas, message, _ = checks[name]
        broken = _required_missing(bodies[name], path)
        assert not Draft202012Validator(schemas["response_schema"]).is_valid(broken), (name, path)
        assert spec.errors(f"#/components/messages/{message}/payload", broken), (name, path)
