"""Where the worker gets its models: the registry's active (and shadow) version, reloaded when they change.

A starting worker and a running one follow the same rule on the same registry files, so that a fleet never
serves two models because some of its workers restarted:

- The pointers are :meth:`Registry.pointer_state`: ``pointers.json``; when it is unreadable, its last-good
  copy (one warning, one counted ``model_load`` error per damage); when that is unreadable too, a starting
  worker serves the baseline and a running one keeps what it serves (the only case where they may differ:
  nothing in the registry says what to serve).
- The live model is the first version of :func:`serving_order` whose artifact verifies (sha256 and load):
  the active version, else the version a rollback would return to, and so on, else the baseline. A refused
  version is logged once and counted once as ``model_load`` per state of its files; a version whose files
  change (damaged or repaired) is verified again, even when it is already serving.
- The shadow is the shadow version when it verifies, else none.

The pointers and the stamps (inode, mtime, size) of the files involved are read every ``registry_poll_s``;
when any changed, the rule is applied in a thread (an artifact read and checksum can take milliseconds) and
the app swaps the models in between batches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from spark_ml.core.errors import RegistryError, SparkMlError
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.io.registry import serving_order
from spark_ml.core.models import BASELINE_VERSION, BaselineModel, Model
from spark_ml.worker.settings import Settings

if TYPE_CHECKING:
    from spark_ml.core.io.registry import PointerState, Registry, Stamp

__all__ = ["ModelSource"]

log = logging.getLogger(__name__)
Pointers = tuple[str, str | None]
_NO_FILES: tuple[Stamp, Stamp] = (None, None)


class ModelSource:
    """The live model (and shadow, when set), following the registry by the rule in the module docstring.

    Args:
        settings: gives the registry location.
    """

    def __init__(self, settings: Settings) -> None:
        from spark_ml.core.io.registry import Registry

        self.registry: Registry = Registry(settings.registry)
        self.live: Model = BaselineModel()
        self.shadow: Model | None = None
        self.reference: dict[str, dict[str, list[float]]] | None = None
        self.offline_auc_lower: dict[str, float] = {}
        """Live and shadow version -> lower bound of its walk-forward 95% AUC interval, when its manifest has one."""
        self.load_errors = 0
        """Refusals so far (a version per state of its files, a pointers damage once): ``model_load``."""
        self._meta: dict[str, Any] = {}
        self._loaded: dict[str, tuple[tuple[Stamp, Stamp], Model]] = {BASELINE_VERSION: (_NO_FILES, self.live)}
        self._refused: dict[str, tuple[tuple[Stamp, Stamp], SparkMlError]] = {}
        self._problem: tuple[Stamp, str] | None = None
        self._seen: object = None
        self._started = False

    def _load(self, version: str, *, record: bool = True) -> Model:
        """A verified model; a refusal is logged and counted once per state of the version's files when
        ``record`` (requests naming a version do not record: they must not grow state or counters)."""
        stamp = self.registry.stamp(version)
        hit = self._loaded.get(version)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        refused = self._refused.get(version)
        if refused is not None and refused[0] == stamp:
            raise refused[1]
        try:
            model = self.registry.load(version)
        except SparkMlError as exc:
            if record:
                self._refused[version] = (stamp, exc)
                self.load_errors += 1
                log.error("model %s refused: %s", version, exc)
            raise
        self._loaded[version] = (stamp, model)
        self._refused.pop(version, None)
        return model

    def _manifest_meta(self, version: str) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]] | None]:
        if version == BASELINE_VERSION:
            return {}, None
        m = self.registry.manifest(version)
        meta = {"created": str(m.created), "metrics": dict(m.metrics), "data": m.data}
        return meta, (dict(m.reference) if m.reference else None)

    def _key(self, state: PointerState) -> object:
        """What the rule read: the pointers and the stamps of every version up to the live one, and the shadow."""
        order = serving_order(state)
        upto = order[: order.index(self.live.version) + 1] if self.live.version in order else order
        versions = [*upto, *([state.shadow] if state.shadow else [])]
        return state, tuple(self.registry.stamp(v) for v in versions)

    def _report(self, state: PointerState) -> None:
        if state.problem is None:
            self._problem = None
            return
        problem = (state.stamp, state.source)
        if problem != self._problem:
            self._problem = problem
            self.load_errors += 1
            if state.source == "last-good":
                log.warning("registry pointers: %s; following its last-good copy", state.problem)
            elif self._started:
                log.warning("registry pointers: %s; keeping %s", state.problem, self.live.version)
            else:
                log.warning("registry pointers: %s; serving %s", state.problem, BASELINE_VERSION)

    def _apply(self, state: PointerState) -> bool:
        """Apply the rule to ``state``; True when the live or shadow model changed. Runs in a thread."""
        self._report(state)
        starting, self._started = not self._started, True
        if state.source == "none" and not starting:
            self._seen = self._key(state)
            return False
        changed = False
        for version in serving_order(state):
            try:
                live = self._load(version)
            except SparkMlError:
                continue
            if live is not self.live:
                try:
                    meta, ref = self._manifest_meta(version)
                except SparkMlError:
                    meta, ref = {}, None
                if version != state.active:
                    log.warning(
                        "active model %s refused, serving %s (what a rollback returns to)", state.active, version
                    )
                self.live, self._meta, self.reference = live, meta, ref
                changed = True
            break
        shadow: Model | None = None
        if state.shadow:
            try:
                shadow = self._load(state.shadow)
            except SparkMlError:
                shadow = None
        if shadow is not self.shadow:
            self.shadow = shadow
            changed = True
        if changed:
            served = [self.live.version, *([self.shadow.version] if self.shadow else [])]
            self.offline_auc_lower = {v: low for v in served if (low := self._auc_lower(v)) is not None}
        self._seen = self._key(state)
        return changed

    def _auc_lower(self, version: str) -> float | None:
        if version == BASELINE_VERSION:
            return None
        try:
            low = self.registry.manifest(version).extra.get("spread", {}).get("auc", {}).get("ci95_low")
        except (SparkMlError, AttributeError):
            return None
        return float(low) if isinstance(low, int | float) else None

    def load_initial(self) -> None:
        """At start: what the rule gives for the registry as it is (the baseline when there is none)."""
        self._apply(self.registry.pointer_state())

    def _changed(self) -> PointerState | None:
        state = self.registry.pointer_state()
        return None if self._key(state) == self._seen else state

    async def refresh(self) -> bool:
        """Re-read the pointers and stamps; True when the live or shadow model changed."""
        state = await asyncio.to_thread(self._changed)
        if state is None:
            return False
        return await asyncio.to_thread(self._apply, state)

    def resolve(self, version: str) -> Model:
        """A model by version, for ``ml.predict`` requests that name one."""
        try:
            return self._load(version, record=False)
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
