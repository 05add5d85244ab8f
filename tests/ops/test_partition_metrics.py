"""The partition metrics a worker exports from its intake's view at each scrape (docs/OPERATIONS.md, Metrics):
what MLPartitionWithoutOwner and the dashboard's Partitions row read."""

from __future__ import annotations

from spark_ml.worker.metrics import Metrics
from tests.support.processes import Scrape

UNITS = 17


def _scrape(metrics: Metrics) -> Scrape:
    return Scrape(metrics.render().decode())


def test_an_unpartitioned_worker_exports_zero_units() -> None:
    scrape = _scrape(Metrics())
    assert scrape.total("ml_partitions_configured") == 0
    assert scrape.total("ml_partitions_owned") == 0
    assert scrape.each("ml_partition_checkpoint_age_seconds") == []


def test_owned_units_changes_and_checkpoint_ages() -> None:
    metrics = Metrics()
    metrics.checkpointed(3)
    metrics.checkpointed(16)
    # Jetstream mode: it pulls on 3, 5 and the forwarder; 5 has no pin yet (a quiet partition).
    metrics.export_partitions(units=UNITS, held=frozenset({3, 5, 16}), owned=frozenset({3, 16}), changes=2)
    scrape = _scrape(metrics)
    assert scrape.total("ml_partitions_configured") == UNITS
    assert scrape.total("ml_partitions_owned") == 3
    assert scrape.total("ml_partition_ownership_changes_total") == 2
    ages = {lab["partition"]: v for n, lab, v in scrape.samples if n == "ml_partition_checkpoint_age_seconds"}
    assert set(ages) == {"3", "fwd"} and all(0 <= age < 5 for age in ages.values())

    # The forwarder handed over: its age series goes, the counter only moves up by the intake's delta.
    metrics.export_partitions(units=UNITS, held=frozenset({3, 5}), owned=frozenset({3}), changes=3)
    metrics.export_partitions(units=UNITS, held=frozenset({3, 5}), owned=frozenset({3}), changes=3)
    scrape = _scrape(metrics)
    assert scrape.total("ml_partitions_owned") == 2
    assert scrape.total("ml_partition_ownership_changes_total") == 3
    assert [lab["partition"] for n, lab, _ in scrape.samples if n == "ml_partition_checkpoint_age_seconds"] == ["3"]

    # Taken over again later: no age until its first checkpoint under the new ownership.
    metrics.export_partitions(units=UNITS, held=frozenset({3, 5, 16}), owned=frozenset({3, 16}), changes=4)
    scrape = _scrape(metrics)
    assert [lab["partition"] for n, lab, _ in scrape.samples if n == "ml_partition_checkpoint_age_seconds"] == ["3"]
