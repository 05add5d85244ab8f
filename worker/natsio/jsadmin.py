"""JetStream API requests nats-py 2.16 cannot make: a stream's subject transform, pinned priority groups, RESET, UNPIN.

nats-py's ``StreamConfig`` has ``subject_transform`` but its ``ConsumerConfig`` has no ``priority_groups``,
``priority_policy`` or ``priority_timeout``, and its ``ConsumerInfo`` drops the pin state the server reports;
consumer ``RESET`` (nats-server >= 2.14) and ``UNPIN`` (>= 2.11) have no call at all. These are plain JSON
requests on ``$JS.API``, made here and checked here.

A server older than the feature accepts the unknown JSON fields and drops them, so every create reads the
config the server echoes back and raises :class:`~spark_ml.core.errors.ClusterRefused`, naming what is
missing, when it differs from what was asked: working on a stream without the partition transform, or on a
consumer without a pinned priority group, would compute wrong features without a sign.
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from spark_ml.core.errors import ClusterRefused

__all__ = [
    "NS",
    "PinnedConsumer",
    "consumer_info",
    "ensure_pinned_consumer",
    "ensure_stream",
    "pinned_client_id",
    "reset",
    "unpin",
]

NS = 1_000_000_000
"""Durations on the JetStream API are nanoseconds."""

_API = "$JS.API"
_PIN_SERVER = ("nats-server >= 2.11 (priority groups with pinned_client)", (2, 11))
_RESET_SERVER = ("nats-server >= 2.14 (consumer RESET)", (2, 14))
_TRANSFORM_SERVER = "nats-server >= 2.10 (stream subject transforms)"

JsonObj = dict[str, Any]


def _older(nc: Client, version: tuple[int, int]) -> bool:
    """Whether the server ``nc`` is connected to says it is older than ``version`` (unknown: not older)."""
    try:
        held = nc.connected_server_version
        return (held.major, held.minor) < version
    except Exception:
        return False


async def _request(
    nc: Client, subject: str, body: JsonObj, *, timeout: float, feature: tuple[str, tuple[int, int]] | None = None
) -> JsonObj:
    """One API request; an error reply raises nats-py's own APIError subclass (NotFoundError, ...).

    ``feature`` names the server version an API subject needs: a server without it does not answer at all. A
    request that is not answered is refused as needing it only when the server is older; on a recent one it is
    a plain timeout (a busy or recovering server), for the caller to retry.
    """
    try:
        msg = await nc.request(subject, json.dumps(body, separators=(",", ":")).encode(), timeout=timeout)
    except nats.errors.NoRespondersError as exc:
        raise ServiceUnavailableError from exc
    except nats.errors.TimeoutError as exc:
        if feature is None or not _older(nc, feature[1]):
            raise
        raise ClusterRefused(f"{subject} was not answered in {timeout}s: it needs {feature[0]}") from exc
    reply: JsonObj = json.loads(msg.data)
    if "error" in reply:
        APIError.from_error(reply["error"])  # raises
    return reply


# ---- streams ---------------------------------------------------------------------------------------


async def ensure_stream(
    nc: Client,
    name: str,
    *,
    subjects: list[str],
    transform: dict[str, str],
    replicas: int = 1,
    duplicate_window_s: float = 120.0,
    timeout: float = 5.0,
) -> JsonObj:
    """Create stream ``name`` with ``subjects`` and the subject ``transform`` ``{"src", "dest"}``, or add them.

    An existing stream without the transform gets it (and any missing subject) through an update: messages
    stored before keep their subjects. One with a *different* transform is refused (another partition count:
    moving to it needs a migration, not a silent re-partition). Returns the stream's config as the server
    holds it; raises :class:`ClusterRefused` when the server dropped the transform.
    """
    try:
        info = await _request(nc, f"{_API}.STREAM.INFO.{name}", {}, timeout=timeout)
    except NotFoundError:
        config: JsonObj = {
            "name": name,
            "subjects": list(subjects),
            "subject_transform": dict(transform),
            "storage": "file",
            "num_replicas": replicas,
            "duplicate_window": int(duplicate_window_s * NS),
        }
        try:
            created = await _request(nc, f"{_API}.STREAM.CREATE.{name}", config, timeout=timeout)
        except APIError as exc:
            if exc.err_code != 10058:  # "stream name already in use": another worker was first
                raise
            created = await _request(nc, f"{_API}.STREAM.INFO.{name}", {}, timeout=timeout)
        return _checked_stream(name, created["config"], transform)
    config = info["config"]
    held = config.get("subject_transform")
    if held and (held.get("src"), held.get("dest")) != (transform["src"], transform["dest"]):
        raise ClusterRefused(
            f"stream {name} partitions with {held.get('dest')!r}, these settings with {transform['dest']!r}:"
            " the partition count differs from the one the stream was made with"
        )
    missing = [s for s in subjects if s not in config.get("subjects", [])]
    if held and not missing:
        return _checked_stream(name, config, transform)
    config = dict(config, subjects=list(config.get("subjects", [])) + missing, subject_transform=dict(transform))
    updated = await _request(nc, f"{_API}.STREAM.UPDATE.{name}", config, timeout=timeout)
    return _checked_stream(name, updated["config"], transform)


def _checked_stream(name: str, config: JsonObj, transform: dict[str, str]) -> JsonObj:
    held = config.get("subject_transform") or {}
    if (held.get("src"), held.get("dest")) != (transform["src"], transform["dest"]):
        raise ClusterRefused(
            f"stream {name} came back without its subject transform {transform['src']} -> {transform['dest']}:"
            f" partitioned jetstream mode needs {_TRANSFORM_SERVER}"
        )
    return config


# ---- consumers -------------------------------------------------------------------------------------


class PinnedConsumer:
    """The config of a durable pull consumer in one pinned priority group (ADR-42 ``pinned_client``).

    Args:
        name: the durable name.
        filter_subject: the subjects it delivers.
        group: the priority group (letters, digits, ``/_=-``, at most 16).
        pin_ttl_s: ``priority_timeout``: the server unpins a client that sent no pull request with its pin
            id for this long.
        ack_wait_s, max_deliver, max_ack_pending, backoff_s: as for any pull consumer.
    """

    def __init__(
        self,
        name: str,
        filter_subject: str,
        *,
        group: str,
        pin_ttl_s: float,
        ack_wait_s: float,
        max_deliver: int = -1,
        max_ack_pending: int = 1000,
        backoff_s: tuple[float, ...] = (),
    ) -> None:
        self.name = name
        self.filter_subject = filter_subject
        self.group = group
        self.pin_ttl_s = pin_ttl_s
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.backoff_s = backoff_s

    def config(self) -> JsonObj:
        """The ``config`` object of a CONSUMER.CREATE request."""
        config: JsonObj = {
            "durable_name": self.name,
            "filter_subject": self.filter_subject,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": int(self.ack_wait_s * NS),
            "max_deliver": self.max_deliver,
            "max_ack_pending": self.max_ack_pending,
            "priority_groups": [self.group],
            "priority_policy": "pinned_client",
            "priority_timeout": int(self.pin_ttl_s * NS),
        }
        if self.backoff_s:
            config["backoff"] = [int(b * NS) for b in self.backoff_s]
        return config


async def ensure_pinned_consumer(nc: Client, stream: str, consumer: PinnedConsumer, *, timeout: float = 5.0) -> JsonObj:
    """Create (or update to) ``consumer`` on ``stream``; returns its info, checked to be pinned as asked.

    Raises :class:`ClusterRefused` when the server dropped the priority group or the ``pinned_client``
    policy (a server before 2.11 does so silently).
    """
    body = {"stream_name": stream, "config": consumer.config()}
    info = await _request(nc, f"{_API}.CONSUMER.CREATE.{stream}.{consumer.name}", body, timeout=timeout)
    held = info.get("config", {})
    if held.get("priority_policy") != "pinned_client" or held.get("priority_groups") != [consumer.group]:
        raise ClusterRefused(
            f"consumer {consumer.name} on {stream} came back without the priority group {consumer.group!r}"
            f" and policy pinned_client (it has {held.get('priority_groups')!r}, {held.get('priority_policy')!r}):"
            f" partitioned jetstream mode needs {_PIN_SERVER[0]}"
        )
    return info


async def consumer_info(nc: Client, stream: str, consumer: str, *, timeout: float = 5.0) -> JsonObj:
    """The consumer's info as the server sends it (with ``priority_groups`` state, which nats-py drops)."""
    return await _request(nc, f"{_API}.CONSUMER.INFO.{stream}.{consumer}", {}, timeout=timeout)


def pinned_client_id(info: JsonObj, group: str) -> str | None:
    """The pin id the server holds for ``group`` in a consumer's info, or None when nobody is pinned."""
    for state in info.get("priority_groups") or ():
        if isinstance(state, dict) and state.get("group") == group:
            pin = state.get("pinned_client_id")
            return pin if isinstance(pin, str) and pin else None
    return None


async def unpin(nc: Client, stream: str, consumer: str, group: str, *, timeout: float = 5.0) -> None:
    """Release ``group``'s pin at once, so the next waiting pull request without a pin id gets it."""
    await _request(
        nc, f"{_API}.CONSUMER.UNPIN.{stream}.{consumer}", {"group": group}, timeout=timeout, feature=_PIN_SERVER
    )


async def reset(nc: Client, stream: str, consumer: str, seq: int, *, timeout: float = 5.0) -> int:
    """Move the consumer so its next delivery is stream sequence ``seq`` (0: its ack floor + 1); forgets pending.

    Returns the sequence the server reset to. Raises :class:`ClusterRefused` on a server without RESET.
    """
    reply = await _request(
        nc, f"{_API}.CONSUMER.RESET.{stream}.{consumer}", {"seq": seq}, timeout=timeout, feature=_RESET_SERVER
    )
    reset_seq = reply.get("reset_seq")
    if not isinstance(reset_seq, int):
        raise ClusterRefused(f"consumer {consumer} was not reset (reply {reply!r}): it needs {_RESET_SERVER[0]}")
    return reset_seq
