"""The model registry: content-addressed artifacts, manifests, and the active/shadow pointers on a filesystem.

Layout under ``root``::

    artifacts/<sha256>.json|.txt   model bytes (logistic: JSON coefficients; lgbm: LightGBM text; xgb: XGBoost
                                   JSON), never pickle
    manifests/<version>.json       one Manifest per version
    pointers.json                  {"active": ..., "shadow": ..., "history": [...previous actives...]}
    pointers.last-good.json        a copy of pointers.json as last written, read when pointers.json is unreadable
    .lock                          serializes writers (promote, rollback, shadow, register)

Every file is written to a temporary name and moved into place with ``os.replace``, so a worker polling
:meth:`Registry.pointers` or loading a model never sees half a file. ``baseline`` is always available and
is what is active until something is promoted. A version is ``<kind>-<first 8 hex of the artifact's
sha256>`` (a valid NATS subject token and Prometheus label value); registering the same bytes twice is a
no-op that returns the first manifest.

Damaged files are refused, never served: every write that makes a version active or shadow (promote,
rollback, shadow) verifies its artifact's sha256 first and leaves the pointers unchanged when it fails. What
a worker serves is decided by :meth:`Registry.pointer_state` and :func:`serving_order` from the files alone,
so a worker that starts and one that is running agree on the same registry state.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import uuid
from builtins import list as _list  # Registry.list shadows the builtin in annotations inside the class
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from spark_ml.core.errors import ArtifactCorrupt, MissingExtra, RegistryError
from spark_ml.core.models import BASELINE_VERSION, BaselineModel, Model, TrainedModel, model_from_bytes

__all__ = ["HISTORY_MAX", "Manifest", "PointerState", "Registry", "VERSION_RE", "serving_order"]

VERSION_RE = re.compile(r"[a-z][a-z0-9]*-[0-9a-f]{8,64}")
"""Registered versions: ``kind-hexdigest``; safe as a NATS subject token and a Prometheus label value."""
HISTORY_MAX = 100
"""Previous active versions kept for rollback."""
_EXTENSIONS = {"logistic": "json", "lgbm": "txt", "xgb": "json"}
Stamp = tuple[int, int, int] | None
"""A file's (inode, mtime ns, size), None when absent: what changes when a file is replaced or damaged."""


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass(frozen=True)
class PointerState:
    """The pointers as a worker should follow them.

    Attributes:
        active: the version to serve first.
        shadow: the version to shadow, or None.
        history: previously active versions, most recent last.
        source: where they come from: ``pointers`` (``pointers.json``, or nothing yet: the baseline),
            ``last-good`` (``pointers.json`` is unreadable; its copy as last written) or ``none`` (both are
            unreadable; the baseline is named).
        problem: why ``pointers.json`` was not used, or None.
        stamp: the stamp of ``pointers.json`` when it was read, so that a damage is reported once.
    """

    active: str
    shadow: str | None
    history: tuple[str, ...]
    source: str = "pointers"
    problem: str | None = None
    stamp: Stamp = None


def serving_order(state: PointerState) -> list[str]:
    """The versions to try, in order, for the live model: the active one, then the history from the most
    recent, then the baseline. A worker serves the first whose artifact verifies (the version a rollback
    would return to, and so on), so the choice depends on the registry's files only."""
    out: list[str] = []
    for v in (state.active, *reversed(state.history), BASELINE_VERSION):
        if v not in out:
            out.append(v)
    return out


class Manifest(BaseModel):
    """What the registry knows about one version.

    Attributes:
        version: ``<kind>-<sha8>``.
        created: ISO 8601 UTC time of registration.
        data: the training data name (``synthetic``, ``eurusd``, a path, ...).
        kind: model family (``logistic``, ``lgbm``, ``xgb``, ``baseline``).
        feature_names: the model's input columns, in order.
        metrics: walk-forward out-of-sample metrics (finite values only).
        reference: per feature, the training distribution in 10 quantile bins: ``{"edges", "fractions"}``.
        sha256: hex digest of the artifact bytes.
        artifact: artifact file name under ``artifacts/``.
        extra: anything else the trainer recorded (parameters, seed, fold spread, bayes_auc, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    created: str
    data: str
    kind: str
    feature_names: tuple[str, ...]
    metrics: dict[str, float]
    reference: dict[str, dict[str, list[float]]]
    sha256: str
    artifact: str
    extra: dict[str, Any] = {}


def _baseline_manifest() -> Manifest:
    return Manifest(
        version=BASELINE_VERSION,
        created="1970-01-01T00:00:00Z",
        data="none (fixed weights)",
        kind="baseline",
        feature_names=BaselineModel.feature_names,
        metrics={},
        reference={},
        sha256="",
        artifact="",
    )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"


def _parse_pointers(path: Path) -> dict[str, Any]:
    """A pointers file as ``{"active", "shadow", "history"}``; RegistryError when it is not one."""
    try:
        doc = json.loads(path.read_bytes())
        active, shadow, history = doc["active"], doc.get("shadow"), doc["history"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from exc
    names = [active, *history] + ([] if shadow is None else [shadow])
    if not isinstance(history, _list) or not all(isinstance(v, str) for v in names):
        raise RegistryError(f"{path} is unreadable: versions must be strings and history a list")
    return {"active": active, "shadow": shadow, "history": _list(history)}


class Registry:
    """A model registry in a directory (created on first write).

    Args:
        root: the registry directory (``SPARK_ML_REGISTRY``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._artifacts = self.root / "artifacts"
        self._manifests = self.root / "manifests"
        self._pointers_path = self.root / "pointers.json"
        self._last_good_path = self.root / "pointers.last-good.json"
        self._manifest_cache: dict[str, tuple[Stamp, Manifest]] = {}
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- writing ----------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._artifacts.mkdir(parents=True, exist_ok=True)
        self._manifests.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def register(
        self,
        model: TrainedModel | Model,
        *,
        data: str,
        metrics: Mapping[str, float],
        reference: Mapping[str, Mapping[str, list[float]]],
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Store a trained model's artifact and manifest; returns the existing manifest for known bytes."""
        to_bytes = getattr(model, "to_bytes", None)
        if to_bytes is None or model.kind not in _EXTENSIONS:
            raise RegistryError(f"cannot register a {model.kind!r} model: only {', '.join(_EXTENSIONS)} are stored")
        raw: bytes = to_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        version = model.version
        if not VERSION_RE.fullmatch(version) or not sha.startswith(version.rsplit("-", 1)[1]):
            raise RegistryError(f"version {version!r} is not <kind>-<sha256 prefix> of the artifact")
        manifest = Manifest(
            version=version,
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            data=data,
            kind=model.kind,
            feature_names=tuple(model.feature_names),
            metrics={k: float(v) for k, v in metrics.items() if math.isfinite(v)},
            reference={k: {kk: list(vv) for kk, vv in v.items()} for k, v in reference.items()},
            sha256=sha,
            artifact=f"{sha}.{_EXTENSIONS[model.kind]}",
            extra=dict(extra or {}),
        )
        with self._locked():
            path = self._manifests / f"{version}.json"
            if path.exists():
                existing = self.manifest(version)
                if existing.sha256 != sha:
                    raise RegistryError(f"version {version} already names different bytes ({existing.sha256[:16]})")
                self._ensure_artifact(existing, raw)
                return existing
            self._ensure_artifact(manifest, raw)
            try:
                doc = manifest.model_dump(mode="json")
                body = _json_bytes(doc)
            except ValueError as exc:
                raise RegistryError(f"manifest of {version} is not JSON-serializable: {exc}") from exc
            _atomic_write(path, body)
        return manifest

    def _ensure_artifact(self, manifest: Manifest, raw: bytes) -> None:
        path = self._artifacts / manifest.artifact
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == manifest.sha256:
            return
        _atomic_write(path, raw)

    # -- reading ----------------------------------------------------------------------------------------

    def list(self) -> list[Manifest]:
        """Registered versions, oldest first (``baseline`` is built in and not listed)."""
        if not self._manifests.is_dir():
            return []
        out = [self.manifest(p.stem) for p in self._manifests.glob("*.json")]
        return sorted(out, key=lambda m: (m.created, m.version))

    def manifest(self, version: str) -> Manifest:
        """The manifest of a version; RegistryError when unknown, ArtifactCorrupt when unreadable."""
        if version == BASELINE_VERSION:
            return _baseline_manifest()
        if not VERSION_RE.fullmatch(version):
            raise RegistryError(f"unknown version {version!r}")
        path = self._manifests / f"{version}.json"
        st = _stamp(path)
        cached = self._manifest_cache.get(version)
        if cached is not None and st is not None and cached[0] == st:
            return cached[1]
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"unknown version {version!r}") from None
        except OSError as exc:
            raise ArtifactCorrupt(f"manifest {path} is unreadable: {exc.strerror or exc}") from exc
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "document"
            reason = f"{exc.error_count()} error(s), first at {where}: {first['msg']}"
            raise ArtifactCorrupt(f"manifest {path} is unreadable: {reason}") from exc
        if manifest.version != version or manifest.artifact != f"{manifest.sha256}.{_EXTENSIONS.get(manifest.kind)}":
            raise ArtifactCorrupt(
                f"manifest {path} is unreadable: it describes {manifest.version} ({manifest.artifact})"
            )
        if st is not None:
            self._manifest_cache[version] = (st, manifest)
        return manifest

    def scan(self) -> tuple[_list[Manifest], dict[str, str]]:
        """Every registered version, oldest first, and the unreadable ones with why (``version -> reason``).

        One damaged manifest never hides the others (what ``spark-ml model list`` shows).
        """
        if not self._manifests.is_dir():
            return [], {}
        good: list[Manifest] = []
        corrupt: dict[str, str] = {}
        for p in self._manifests.glob("*.json"):
            if not VERSION_RE.fullmatch(p.stem):
                corrupt[p.stem] = f"{p.name} is not a manifest: its name is not <kind>-<sha256 prefix>.json"
                continue
            try:
                good.append(self.manifest(p.stem))
            except RegistryError as exc:
                corrupt[p.stem] = str(exc)
        return sorted(good, key=lambda m: (m.created, m.version)), dict(sorted(corrupt.items()))

    def stamp(self, version: str) -> tuple[Stamp, Stamp]:
        """Stamps of a version's manifest and artifact: two ``stat`` calls that say whether either changed."""
        if version == BASELINE_VERSION or not VERSION_RE.fullmatch(version):
            return None, None
        path = self._manifests / f"{version}.json"
        st = _stamp(path)
        artifact = None
        if st is not None:
            try:
                artifact = _stamp(self._artifacts / self.manifest(version).artifact)
            except RegistryError:
                pass
        return st, artifact

    def load(self, version: str) -> Model:
        """The model of a version, after checking its artifact against the manifest's sha256."""
        if version == BASELINE_VERSION:
            return BaselineModel()
        manifest = self.manifest(version)
        path = self._artifacts / manifest.artifact
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ArtifactCorrupt(f"artifact of {version} is missing or unreadable: {path}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        if digest != manifest.sha256:
            raise ArtifactCorrupt(
                f"artifact of {version} is corrupt: sha256 {digest[:16]}... != manifest {manifest.sha256[:16]}..."
            )
        try:
            model = model_from_bytes(manifest.kind, raw)
        except (ArtifactCorrupt, MissingExtra):  # the artifact is fine when the library is missing: say which
            raise
        except Exception as exc:  # the bytes match the manifest, yet the library refuses them
            raise ArtifactCorrupt(f"artifact of {version} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        if tuple(model.feature_names) != manifest.feature_names:
            raise ArtifactCorrupt(f"artifact of {version} has features {model.feature_names}, manifest disagrees")
        return model

    # -- pointers ---------------------------------------------------------------------------------------

    def _read_pointers(self) -> dict[str, Any]:
        """Current pointers, parsed again only when the file changed (stat is the whole cost of a poll)."""
        try:
            st = self._pointers_path.stat()
        except FileNotFoundError:
            return {"active": BASELINE_VERSION, "shadow": None, "history": []}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._cache_key:
            doc = _parse_pointers(self._pointers_path)
            self._cache_key, self._cache = key, doc
        return dict(self._cache, history=list(self._cache["history"]))

    def _write_pointers(self, doc: dict[str, Any]) -> None:
        body = _json_bytes(doc)
        _atomic_write(self._pointers_path, body)
        # Second, so that it never names what pointers.json does not: a starting worker reads it only
        # when pointers.json is damaged, and then agrees with the running workers that read it last.
        _atomic_write(self._last_good_path, body)

    def _pointers_to_change(self) -> dict[str, Any]:
        """What a write starts from: the pointers the workers follow, so a write also repairs a damaged
        ``pointers.json`` from its last-good copy; RegistryError when both are unreadable."""
        try:
            return self._read_pointers()
        except RegistryError as exc:
            try:
                return _parse_pointers(self._last_good_path)
            except RegistryError:
                raise exc from None

    def pointer_state(self) -> PointerState:
        """The pointers to serve from; never raises.

        ``pointers.json`` when it is readable (or absent: the baseline); otherwise its last-good copy; when
        that is unreadable too, the baseline with ``source="none"`` (a running worker then keeps what it has).
        """
        try:
            doc = self._read_pointers()
            return PointerState(doc["active"], doc["shadow"], tuple(doc["history"]))
        except RegistryError as exc:
            problem, stamp = str(exc), _stamp(self._pointers_path)
        try:
            doc = _parse_pointers(self._last_good_path)
        except RegistryError as exc:
            return PointerState(BASELINE_VERSION, None, (), "none", f"{problem}; {exc}", stamp)
        return PointerState(doc["active"], doc["shadow"], tuple(doc["history"]), "last-good", problem, stamp)

    def pointers(self) -> tuple[str, str | None]:
        """``(active, shadow)``; cheap enough to call every second."""
        doc = self._read_pointers()
        return doc["active"], doc["shadow"]

    def active_version(self) -> str:
        return self.pointers()[0]

    def shadow_version(self) -> str | None:
        return self.pointers()[1]

    def history(self) -> _list[str]:
        """Previously active versions, most recent last (what :meth:`rollback` returns to)."""
        return [str(v) for v in self._read_pointers()["history"]]

    def promote(self, version: str) -> None:
        """Make a version active after verifying its artifact; the old active goes on the rollback history.

        Promoting the current shadow clears the shadow. Promoting the active version changes nothing.
        """
        self.load(version)
        with self._locked():
            doc = self._pointers_to_change()
            if doc["active"] == version:
                return
            doc["history"] = [*doc["history"], doc["active"]][-HISTORY_MAX:]
            doc["active"] = version
            if doc["shadow"] == version:
                doc["shadow"] = None
            self._write_pointers(doc)

    def rollback(self) -> str:
        """Re-activate the previously active version and return it, after verifying its artifact as
        :meth:`promote` does; RegistryError when there is none, ArtifactCorrupt (pointers unchanged) when
        its artifact fails."""
        with self._locked():
            doc = self._pointers_to_change()
            if not doc["history"]:
                raise RegistryError(f"nothing to roll back to: no version was active before {doc['active']}")
            target = str(doc["history"][-1])
            try:
                self.load(target)
            except ArtifactCorrupt as exc:
                raise ArtifactCorrupt(f"cannot roll back to {target}, {doc['active']} stays active: {exc}") from exc
            doc["active"] = doc["history"].pop()
            self._write_pointers(doc)
            return str(doc["active"])

    def set_shadow(self, version: str | None) -> None:
        """Score every batch with this version too (None stops it); the artifact is verified first."""
        if version is not None:
            self.load(version)
        with self._locked():
            doc = self._pointers_to_change()
            doc["shadow"] = version
            self._write_pointers(doc)
