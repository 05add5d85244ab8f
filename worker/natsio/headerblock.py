"""The common NATS header block, parsed without a coroutine: what our own clients send on every snapshot.

nats-py turns a message's header block into a dict in ``Client._process_headers``, a coroutine reached through
``Client._process_msg``: a header-carrying message cannot take the parser's synchronous route
(:mod:`spark_ml.worker.natsio.fastparser`) through it, and ``spark_ml.client`` sets ``Content-Type`` on every
snapshot (a ``traceparent`` too, when the caller has one). :func:`parse_block` reads the one shape such clients
write, ``NATS/1.0\\r\\n``, then ``Key: Value\\r\\n`` lines, then ``\\r\\n``:

- the first line is exactly ``NATS/1.0`` (an inline status such as ``NATS/1.0 503`` is declined);
- the block is printable ASCII apart from the line ends (no tab, no lone CR or LF, no byte above 0x7E);
- every line is ``Key: Value``: a key without spaces or colons, one space after the colon, a value that neither
  starts nor ends with a space (so nats-py's strip leaves it as it is); no empty line before the last.

For those blocks the result equals ``_process_headers``'s (keys as sent, the last of a repeated key wins, as
nats-py's dict assignment does); :func:`parse_block` returns None for every other block, and the caller takes
nats-py's path, unchanged. ``tests/worker/test_headerblock.py`` holds it to the installed nats-py's routine on
generated blocks, well-formed and malformed.

:func:`matches_nats_py` says whether the installed nats-py parses header lines with its own byte-level routine
(``nats.aio.client.parse_email`` is None: the optional ``fast_mail_parser`` is not installed); only then is the
equivalence above shown, so only then does the fast parser use :func:`parse_block`.
"""

from __future__ import annotations

import nats.aio.client

__all__ = ["matches_nats_py", "parse_block"]

_FIRST = b"NATS/1.0\r\n"
_LAST = b"\r\n\r\n"
_SKIP = len(_FIRST)
_TRIM = len(_LAST)


def parse_block(block: bytes) -> dict[str, str] | None:
    """The headers of a common-shape block (see the module), else None: the block is not one this reads."""
    if not (block.startswith(_FIRST) and block.endswith(_LAST) and block.isascii()):
        return None
    out: dict[str, str] = {}
    for line in block[_SKIP:-_TRIM].decode("ascii").split("\r\n"):
        key, sep, value = line.partition(": ")
        if (
            not (sep and key and value and line.isprintable())
            or " " in key
            or ":" in key
            or value[0] == " "
            or value[-1] == " "
        ):
            return None
        out[key] = value
    return out


def matches_nats_py() -> bool:
    """Whether nats-py reads header lines itself (not through ``fast_mail_parser``), as :func:`parse_block` does."""
    module = vars(nats.aio.client)
    return "parse_email" in module and module["parse_email"] is None
