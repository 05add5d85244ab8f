"""The benchmark harness behind ``spark-ml bench`` (entry point: ``scripts/bench.py``).

Modules: ``runner`` (the run and its config), ``measure`` (a bed per target, the phases), ``scenarios``
(the registry of subjects under test: add one with the ``@scenario`` decorator), ``report`` (tables,
JSON, Markdown), ``procs`` (child processes, /proc CPU and memory), and the processes it starts:
``publisher``, ``sink`` (both on the minimal protocol client in ``wire``), ``echo`` (the nats-py ceiling)
and ``fs_peer`` (the FastStream peer).

Nothing is imported here: the publisher and sink processes start once per phase and must stay light.
"""
