"""The benchmark harness behind ``spark-ml bench`` (entry point: ``scripts/bench.py``).

Modules: ``runner`` (the run and its config), ``measure`` (a bed per target, the phases), ``scenarios``
(the registry of subjects under test: add one with the ``@scenario`` decorator), ``report`` (tables,
JSON, Markdown), ``procs`` (child processes, /proc CPU and memory), ``soak`` (the run behind
``spark-ml soak``), and the processes it starts: ``publisher`` (every phase, and the soak's live
traffic) and ``sink`` (predictions, or the analytics bed's PnL updates), both on the minimal protocol
client in ``wire``; ``caller`` and ``http_caller`` (request-reply), ``echo`` (the nats-py ceiling) and
``fs_peer`` (the FastStream peer).

Nothing is imported here: the publisher and sink processes start once per phase and must stay light.
"""
