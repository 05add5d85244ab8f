"""``spark-ml model``: the registry from the command line.

Usage::

    spark-ml model list [--json]
    spark-ml model info V [--json]
    spark-ml model promote V [--json]
    spark-ml model rollback [--json]
    spark-ml model shadow V|none [--json]
    spark-ml model compare [--wait S] [--json]

Every subcommand takes ``--registry PATH`` (default ``SPARK_ML_REGISTRY``). A running worker picks up a
promotion, rollback or shadow change within its poll interval. Exit codes: 0 done, 2 refused (unknown
version, corrupt manifest or artifact, nothing to roll back to) with one line on stderr; promote, rollback
and shadow verify the artifact's sha256 first and leave the pointers unchanged when they refuse; when
``pointers.json`` is unreadable they start from its last-good copy (what the workers follow) and so repair it.

``compare`` asks every running worker (``ml.model.quality``, NATS settings as ``spark-ml worker``) for its
live-quality windows and prints the active and the shadow version's live figures, each pooled over the
workers, beside the offline walk-forward AUC of its manifest. Exit 1 when no worker answered.

``list`` shows what it can: a version whose manifest is unreadable is listed as ``CORRUPT: <reason>``
(``"corrupt": "<reason>"`` in JSON) and the others as usual; an unreadable ``pointers.json`` is reported
and the pointers shown are those the workers follow (its last-good copy). Both are warned about on stderr
and the exit code stays 0: the listing itself succeeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from spark_ml.core.io.registry import Manifest, Registry
from spark_ml.scripts._args import REFUSED, add_registry, refuse, registry_path, warn

__all__ = ["build_parser", "main"]

_PROG = "spark-ml model"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_registry(common, json_help="print one JSON object")
    p = argparse.ArgumentParser(prog=_PROG, description="List, inspect, promote, roll back and shadow model versions.")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", parents=[common], help="every version, the active and shadow marked")
    sub.add_parser("info", parents=[common], help="a version's manifest").add_argument("version")
    sub.add_parser("promote", parents=[common], help="make a version active").add_argument("version")
    sub.add_parser("rollback", parents=[common], help="re-activate the previously active version")
    sub.add_parser("shadow", parents=[common], help="score batches with V too ('none' stops)").add_argument("version")
    compare = sub.add_parser("compare", parents=[common], help="active vs shadow: live figures from running workers")
    compare.add_argument("--wait", type=float, default=1.0, help="seconds to collect the workers' answers (1)")
    return p


def _row(m: Manifest, active: str, shadow: str | None) -> dict[str, Any]:
    return {
        "version": m.version,
        "kind": m.kind,
        "data": m.data,
        "created": m.created,
        "metrics": m.metrics,
        "active": m.version == active,
        "shadow": m.version == shadow,
    }


def _list(reg: Registry) -> tuple[dict[str, Any], str]:
    state = reg.pointer_state()
    active, shadow = state.active, state.shadow
    manifests, corrupt = reg.scan()
    rows = [_row(m, active, shadow) for m in [reg.manifest("baseline"), *manifests]]
    rows += [{"version": v, "corrupt": why, "active": v == active, "shadow": v == shadow} for v, why in corrupt.items()]
    lines = [f"  {'version':<24}{'kind':<10}{'auc':>7}  {'created':<22}data"]
    for r in rows:
        mark = "*" if r["active"] else "s" if r["shadow"] else " "
        if "corrupt" in r:
            lines.append(f"{mark} {r['version']:<24}CORRUPT: {r['corrupt']}")
            continue
        auc = r["metrics"].get("auc")
        lines.append(
            f"{mark} {r['version']:<24}{r['kind']:<10}{'' if auc is None else format(auc, '.4f'):>7}  "
            f"{r['created']:<22}{r['data']}"
        )
    lines.append("(* active, s shadow)")
    doc: dict[str, Any] = {"active": active, "shadow": shadow, "versions": rows}
    if corrupt:
        warn(f"{_PROG} list", f"{len(corrupt)} corrupt manifest(s): {', '.join(corrupt)}")
    if state.problem is not None:
        doc["pointers_problem"] = state.problem
        warn(f"{_PROG} list", f"{state.problem} (showing {state.source} pointers)")
    return doc, "\n".join(lines)


def _info(reg: Registry, version: str) -> tuple[dict[str, Any], str]:
    m = reg.manifest(version)
    state = reg.pointer_state()
    active, shadow = state.active, state.shadow
    doc = {**m.model_dump(mode="json"), "active": version == active, "shadow": version == shadow}
    brief = {k: v for k, v in doc.items() if k != "reference"}
    return doc, json.dumps(brief, indent=2)


def _act(reg: Registry, action: str, version: str | None) -> tuple[dict[str, Any], str]:
    state = reg.pointer_state()
    before = state.active, state.shadow
    if action == "promote":
        assert version is not None
        reg.promote(version)
        return {"active": version, "previous": before[0]}, f"active: {version} (was {before[0]})"
    if action == "rollback":
        now = reg.rollback()
        return {"active": now, "previous": before[0]}, f"active: {now} (rolled back from {before[0]})"
    target = None if version in (None, "none", "off") else version
    reg.set_shadow(target)
    return {"shadow": target, "previous": before[1]}, f"shadow: {target or 'none'} (was {before[1] or 'none'})"


def _offline_auc(reg: Registry, version: str) -> dict[str, float] | None:
    try:
        spread = reg.manifest(version).extra.get("spread", {}).get("auc")
    except REFUSED:
        return None
    return spread if isinstance(spread, dict) and "mean" in spread else None


def _compare(reg: Registry, wait_s: float) -> tuple[dict[str, Any], str]:
    import asyncio

    from spark_ml.core.ml.live_quality import LIVE_METRICS, pool_windows
    from spark_ml.worker.pipeline.live_quality import decode_window
    from spark_ml.worker.settings import Settings
    from spark_ml.worker.tools.quality import gather

    answers, problems = asyncio.run(gather(Settings(), wait_s=wait_s))
    for problem in problems:
        warn(f"{_PROG} compare", problem)
    if not answers:
        raise _NoWorker(f"no worker answered on ml.model.quality within {wait_s} s")
    parts = []
    for answer in answers:
        for row in answer["versions"]:
            try:
                y, s = decode_window(row["window"])
                parts.append((str(row["role"]), str(row["version"]), int(row["labelled"]), y, s))
            except (KeyError, TypeError, ValueError) as exc:
                warn(f"{_PROG} compare", f"{answer.get('worker', '?')}: a window that cannot be read ({exc})")
    rows = []
    lines = [
        f"live quality from {len(answers)} worker(s), windows pooled (labels: each symbol's next snapshot)",
        f"  {'role':<7}{'version':<24}{'workers':>7}{'labelled':>10}{'window':>8}"
        + "".join(f"{m:>10}" for m in LIVE_METRICS)
        + "   offline auc [95%]",
    ]
    for q in pool_windows(parts):
        offline = _offline_auc(reg, q.version)
        rows.append({**q.as_dict(), "offline_auc": offline})
        figs = "".join(
            f"{'-' if math.isnan(v) else format(v, '.4f'):>10}" for v in (q.figures[m] for m in LIVE_METRICS)
        )
        off = (
            ""
            if offline is None
            else f"   {offline['mean']:.4f} [{offline['ci95_low']:.4f}, {offline['ci95_high']:.4f}]"
        )
        lines.append(f"  {q.role:<7}{q.version:<24}{q.workers:>7}{q.labelled:>10}{q.rows:>8}{figs}{off}")
    if not rows:
        lines.append("  (no labelled predictions yet)")
    return {"workers": [a.get("worker") for a in answers], "versions": rows}, "\n".join(lines)


class _NoWorker(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "compare":
        try:
            doc, text = _compare(Registry(registry_path(args.registry)), args.wait)
        except (_NoWorker, ConnectionError) as exc:
            print(f"{_PROG} compare: {exc}", file=sys.stderr)
            return 1
        except (*REFUSED, OSError) as exc:
            return refuse(f"{_PROG} compare", exc)
        print(json.dumps(doc) if args.json else text)
        return 0
    try:
        reg = Registry(registry_path(args.registry))
        if args.action == "list":
            doc, text = _list(reg)
        elif args.action == "info":
            doc, text = _info(reg, args.version)
        else:
            doc, text = _act(reg, args.action, getattr(args, "version", None))
    except REFUSED as exc:
        return refuse(f"{_PROG} {args.action}", exc)
    print(json.dumps(doc) if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
