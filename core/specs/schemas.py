"""JSON Schemas of the wire contracts, generated from the pydantic models of :mod:`spark_ml.core.contracts`.

One generation for every document (AsyncAPI, OpenAPI, the NATS micro endpoints' metadata), so the specs cannot
drift from the models the code validates with. Schemas use the wire (camelCase) names; those the workers read
are in pydantic's validation mode (what is accepted), those they write in serialization mode (what is sent).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from spark_ml.core.contracts import (
    AnalyticsQuery,
    ErrorReply,
    GatewayHealth,
    MarketSnapshot,
    ModelInfo,
    ModelQuality,
    ModelQualityRequest,
    PnlUpdate,
    PortfolioExport,
    PortfolioFiguresReply,
    Prediction,
    PredictRequest,
    SymbolExport,
    SymbolFiguresReply,
)

__all__ = ["CONTRACTS", "component_schemas", "header_schema", "inline_schema"]

CONTRACTS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (MarketSnapshot, "validation"),
    (PredictRequest, "validation"),
    (Prediction, "serialization"),
    (ErrorReply, "serialization"),
    (ModelInfo, "serialization"),
    (PnlUpdate, "serialization"),
    (ModelQualityRequest, "validation"),
    (AnalyticsQuery, "validation"),
    (GatewayHealth, "serialization"),
    (ModelQuality, "serialization"),
    (SymbolFiguresReply, "serialization"),
    (PortfolioFiguresReply, "serialization"),
    (SymbolExport, "serialization"),
    (PortfolioExport, "serialization"),
)
"""Every contract that crosses the wire, with the side that reads it."""


def component_schemas(ref_prefix: str) -> dict[str, dict[str, Any]]:
    """Every contract's schema by model name, referring to each other as ``<ref_prefix><Name>``.

    ``ref_prefix`` is where the document keeps them: ``#/components/schemas/`` in AsyncAPI and OpenAPI.
    """
    _, top = models_json_schema(CONTRACTS, by_alias=True, ref_template=ref_prefix + "{model}")
    defs: dict[str, dict[str, Any]] = top.get("$defs", {})
    return defs


def inline_schema(contract: Any, mode: JsonSchemaMode) -> dict[str, Any]:
    """One contract's schema standing alone (its nested models under ``$defs``), for a micro endpoint's metadata.

    ``contract`` is a model, or a union of models (``SymbolExport | PortfolioExport``: an ``anyOf``).
    """
    return TypeAdapter(contract).json_schema(by_alias=True, mode=mode)


def header_schema(required: dict[str, dict[str, Any]], optional: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The schema of a message's NATS headers (string values), some always present and some not."""
    properties = {name: {"type": "string", **rule} for name, rule in {**required, **optional}.items()}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = sorted(required)
    return schema
