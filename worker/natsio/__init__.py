"""The NATS fast path: every use of nats-py internals lives in this package, and only here.

Modules:

- :mod:`.fastparser`: a protocol parser for ``MSG``/``HMSG`` frames swapped into a connected client;
  :mod:`.headerblock` reads, for it, the common header block as nats-py would.
- :mod:`.router`: the one replacement of ``Client._process_msg``, routing a subscription's parsed messages
  straight to a handler; :mod:`.directsub` (core subscriptions) and :mod:`.jsroute` (JetStream inboxes) use it.
- :mod:`.writer`: the one frame writer, ready-made ``PUB``/``HPUB``/ack frames handed to the client in one call;
  :mod:`.batchpub` (core predictions), :mod:`.jspub` (predictions with PubAcks) and :mod:`.jspull` (acks) use it.
- :mod:`.jswire` (JetStream ack subjects and statuses), :mod:`.jspull` (our pull consumer), :mod:`.jspub`.

The nats-py internals relied on (nats-py 2.x; checked against the installed release by
``tests/worker/test_natsio_internals.py``, which names the internal and the version when one is gone):

``nats.aio.client.Client``
    ``_process_msg(sid, subject, reply, data, headers)``: the coroutine the parser calls for every message;
    :mod:`.router` shadows it on one client with an instance attribute, and calls the original for
    subscriptions it does not route. :mod:`.fastparser` calls it for messages it does not take itself.
    ``_process_headers(headers)``: the coroutine turning a raw header block into a dict; an inline status
    (``NATS/1.0 408 Request Timeout``) becomes the keys ``"Status"`` and ``Header.DESCRIPTION`` (read by
    :func:`.jswire.status_of`). For a common block (``NATS/1.0``, then ``Key: Value`` lines) its result is what
    :func:`.headerblock.parse_block` returns (keys as sent, values stripped, the last repeated key wins):
    ``tests/worker/test_headerblock.py`` holds the two together on generated blocks. It raises on some
    malformed blocks, as ``_process_msg`` raises on a subject or reply that is not UTF-8: :mod:`.router` guards
    every call (:func:`.router.guard`, installed by ``spark_ml.worker.connect``), so no frame ends the read loop
    (:func:`.fastparser.wire_error`).
    ``_ps``: the client's protocol parser (:func:`.fastparser.install` replaces it; the read loop calls
    ``_ps.parse(data)`` and a reconnect ``_ps.reset()``).
    ``stats``: the counters dict; ``in_msgs``/``in_bytes`` are kept for routed messages, ``out_msgs``/
    ``out_bytes`` for written frames, ``reconnects`` tells :mod:`.jspull` that its requests died.
    ``_send_command(cmd)``: appends a frame to the outgoing buffer (:func:`.writer.write_raw`).
    ``_flush_pending()`` and ``_flush_queue``: wake the flusher task, only when its queue is empty, as
    ``publish`` does (:func:`.writer.write_raw`).
    ``_max_payload``: the server's payload limit (:func:`.writer.checked_size`; it counts ``HPUB`` header
    blocks too, which ``publish`` does not).
    ``_reading_task``: the read loop's task; done while connected means the reader stopped
    (:func:`.fastparser.reading`, the worker's liveness).
    ``_max_pending_size`` and ``_pending_data_size``: the outgoing buffer's limit and fill while reconnecting
    (:func:`.writer.write_raw` refuses as ``publish`` does).
``nats.aio.client.parse_email``
    None unless the optional ``fast_mail_parser`` is installed, in which case ``_process_headers`` reads header
    lines through it instead of its own routine; :func:`.headerblock.matches_nats_py` checks it, and
    :class:`.fastparser.FastParser` reads header blocks itself only when it is None (else every header-carrying
    message takes ``_process_msg``, as before).
``nats.aio.subscription.Subscription``
    ``_id``: the subscription id in ``MSG`` frames, the key of every route.
``nats.protocol.parser``
    ``Parser`` (subclassed by :class:`.fastparser.FastParser`): ``Parser(nc)``, ``parse(data)`` (handed one
    complete non-``MSG`` line at a time), ``reset()``, and its state ``buf`` (a bytearray), ``state``,
    ``needed``, ``header_needed``, ``msg_arg`` (``subject``, ``sid``, ``reply``); the states
    ``AWAITING_CONTROL_LINE`` and ``AWAITING_MSG_PAYLOAD``.
``nats.aio.msg.Msg``
    :class:`.jspull.JsMsg` subclasses the dataclass without calling its ``__init__``: it sets ``_client``,
    ``subject``, ``reply``, ``data``, ``headers`` itself and relies on the class defaults of ``_metadata``,
    ``_ackd`` and ``_sid`` (so ``metadata`` works); settling marks ``_ackd``.

When they are missing, nothing is lost but speed: :func:`.fastparser.install` returns False and the client
keeps nats-py's parser (the connection logs a warning); without ``parse_email`` (or with it set) header-carrying
messages take nats-py's ``_process_msg``; :func:`.router.route` returns False and the
subscription keeps its plain callback (the pull consumer logs a warning); :func:`.writer.can_write_raw` is
False and every frame goes through ``Client.publish``. Only the names imported at module level
(``Parser`` and the two parser states) fail at import, loudly.
"""
