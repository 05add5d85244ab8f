"""Validate data against one schema of a spec document (AsyncAPI or OpenAPI), its ``$ref``s resolved in it."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SpecSchemas", "unresolved_refs"]

_URI = "urn:spark-ml:spec"


class SpecSchemas:
    """The schemas of one document: ``validate("#/components/schemas/Prediction", data)``."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource: Resource[Any] = DRAFT202012.create_resource(document)
        self._registry: Registry[Any] = Registry().with_resource(_URI, resource)

    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": _URI + pointer}, registry=self._registry)

    def errors(self, pointer: str, instance: Any) -> list[str]:
        return [f"{list(e.absolute_path)}: {e.message}" for e in self.validator(pointer).iter_errors(instance)]

    def validate(self, pointer: str, instance: Any) -> None:
        errors = self.errors(pointer, instance)
        assert not errors, f"{pointer}: {errors[:5]} in {instance!r:.500}"


def _resolve(document: Any, pointer: str) -> bool:
    node = document
    for part in pointer.lstrip("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def unresolved_refs(document: dict[str, Any]) -> list[str]:
    """Every local ``$ref`` of ``document`` that points at nothing."""
    missing: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and (not ref.startswith("#/") or not _resolve(document, ref)):
                missing.append(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return missing
