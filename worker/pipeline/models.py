"""Where the worker gets its models: the registry's active (and shadow) version, reloaded when they change.

The registry's pointers are read every ``registry_poll_s``; a changed version is loaded in a thread (an
artifact read and checksum can take milliseconds) and swapped in between batches by the app. A version
that fails to load (corrupt artifact, checksum mismatch) is refused with an error log and a counted
``model_load`` error; the current model keeps serving until the pointers change again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from spark_ml.core.errors import RegistryError, SparkMlError
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.models import BASELINE_VERSION, BaselineModel, Model
from spark_ml.worker.settings import Settings

if TYPE_CHECKING:
    from spark_ml.core.io.registry import Registry

__all__ = ["ModelSource"]

log = logging.getLogger(__name__)
Pointers = tuple[str, str | None]


class ModelSource:
    """The live model (and shadow, when set), following the registry.

    Args:
        settings: gives the registry location.
    """

    def __init__(self, settings: Settings) -> None:
        from spark_ml.core.io.registry import Registry

        self.registry: Registry = Registry(settings.registry)
        self.live: Model = BaselineModel()
        self.shadow: Model | None = None
        self.reference: dict[str, dict[str, list[float]]] | None = None
        self._meta: dict[str, Any] = {}
        self._cache: dict[str, Model] = {BASELINE_VERSION: self.live}
        self._pointers: Pointers = (BASELINE_VERSION, None)
        self.load_errors = 0

    def _load(self, version: str) -> Model:
        model = self._cache.get(version)
        if model is None:
            model = self._cache[version] = self.registry.load(version)
        return model

    def _manifest_meta(self, version: str) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]] | None]:
        if version == BASELINE_VERSION:
            return {}, None
        m = self.registry.manifest(version)
        meta = {"created": str(m.created), "metrics": dict(m.metrics), "data": m.data}
        return meta, (dict(m.reference) if m.reference else None)

    def _apply(self, pointers: Pointers) -> bool:
        """Load what the pointers name; True when the live or shadow model changed. Runs in a thread."""
        active, shadow = pointers
        changed = False
        if active != self.live.version:
            try:
                live = self._load(active)
                meta, ref = self._manifest_meta(active)
            except SparkMlError as exc:
                self.load_errors += 1
                log.error("cannot load model %s, keeping %s: %s", active, self.live.version, exc)
            else:
                self.live, self._meta, self.reference = live, meta, ref
                changed = True
        shadow_now = self.shadow.version if self.shadow else None
        if shadow != shadow_now:
            try:
                self.shadow = self._load(shadow) if shadow else None
                changed = True
            except SparkMlError as exc:
                self.load_errors += 1
                log.error("cannot load shadow model %s: %s", shadow, exc)
        self._pointers = pointers
        return changed

    def load_initial(self) -> None:
        """At start: the registry's active and shadow versions (the baseline when there is no registry)."""
        self._apply(self.registry.pointers())

    async def refresh(self) -> bool:
        """Re-read the pointers; True when the live or shadow model changed."""
        pointers = await asyncio.to_thread(self.registry.pointers)
        if pointers == self._pointers:
            return False
        return await asyncio.to_thread(self._apply, pointers)

    def resolve(self, version: str) -> Model:
        """A model by version, for ``ml.predict`` requests that name one."""
        try:
            return self._load(version)
        except RegistryError:
            raise
        except SparkMlError as exc:
            raise RegistryError(str(exc), code="unknown_model") from exc

    def info(self) -> dict[str, Any]:
        m = self.live
        return {
            "version": m.version,
            "kind": m.kind,
            "featureNames": list(m.feature_names),
            "allFeatures": list(FEATURE_NAMES),
            "shadow": self.shadow.version if self.shadow else None,
            **self._meta,
        }
