"""Test-only helpers shared by the test folders; fixtures stay in the conftests (``tests/conftest.py`` for those
used by more than one folder).

- ``messages``: the seeds' snapshot, numbered snapshots, and the sinks that collect what comes back.
- ``connections``: nats-py clients that always close (reconnecting ones for the fault tests), a raw publisher.
- ``jetstream``: streams the tests create, publishing through outages, reading a stream back.
- ``lifecycle``: a group that stops what a factory fixture started; a bounded wait.
- ``processes``: ``spark-ml`` child processes and their environment; the end-to-end predict probe.
- ``predict``: the ``ml.predict`` service with stand-in models.
- ``featseries``: snapshot series and bit-for-bit runs for the C kernel against the Python feature state.
- ``cluster``: a routed nats-server cluster with JetStream; ``auth_servers`` and ``credentials``: servers that
  require each authentication method, and the throwaway keys they use.
- ``monitoring``: the rules, dashboard and Prometheus tools the ops tests read; ``ports``: free loopback ports.
- ``tearsheet``: a tear sheet's HTML read back (sections, images, links, metric cells).
"""
