"""Where the worker gets its models: the registry's active (and shadow) version, reloaded when they change."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.errors import RegistryError
from core.features import FEATURE_NAMES
from core.models import BASELINE_VERSION, BaselineModel, Model
from worker.settings import Settings

__all__ = ["ModelSource"]

log = logging.getLogger(__name__)


class ModelSource:
    """The live model (and shadow, when set), following the registry's pointers.

    Until a registry exists the built-in baseline serves; it is always resolvable by name.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.live: Model = BaselineModel()
        self.shadow: Model | None = None
        self._cache: dict[str, Model] = {BASELINE_VERSION: self.live}

    def resolve(self, version: str) -> Model:
        """A model by version, for ``ml.predict`` requests that name one."""
        model = self._cache.get(version)
        if model is None:
            raise RegistryError(f"unknown model version {version!r}", code="unknown_model")
        return model

    async def refresh(self) -> bool:
        """Re-read the registry pointers; True when the live model changed."""
        await asyncio.sleep(0)
        return False

    def info(self) -> dict[str, Any]:
        m = self.live
        return {
            "version": m.version,
            "kind": m.kind,
            "featureNames": list(m.feature_names),
            "allFeatures": list(FEATURE_NAMES),
            "shadow": self.shadow.version if self.shadow else None,
        }
