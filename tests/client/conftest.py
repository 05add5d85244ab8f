"""Client tests run against a real nats-server and a real in-process worker (the worker tests' fixtures)."""

from tests.worker.conftest import collect, settings_factory, worker_factory

__all__ = ["collect", "settings_factory", "worker_factory"]
