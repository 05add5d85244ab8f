"""BatchHistogram against its reference, prometheus_client.Histogram: same observations, same exposition."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from spark_ml.worker.histogram import BatchHistogram

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 80.0, 200.0, 1000.0)


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#") and "_created" not in ln]


@given(
    st.lists(st.lists(st.floats(min_value=-10, max_value=5000, allow_nan=False), max_size=40), max_size=6),
    st.booleans(),
)
def test_same_exposition_as_prometheus_client(batches: list[list[float]], as_list: bool) -> None:
    ref_reg, our_reg = CollectorRegistry(), CollectorRegistry()
    ref = Histogram("lat_ms", "doc", ["model_version"], buckets=BUCKETS, registry=ref_reg)
    ours = BatchHistogram("lat_ms", "doc", buckets=BUCKETS, labelnames=["model_version"], registry=our_reg)
    ref.labels("v1")
    ours.labels("v1")
    for batch in batches:
        for v in batch:
            ref.labels("v1").observe(v)
        ours.labels("v1").observe_many(batch if as_list else np.array(batch))
    ref_lines, our_lines = _lines(ref_reg), _lines(our_reg)

    # sums may differ in the last bits (numpy sums pairwise): compare them numerically
    def split(lines: list[str]) -> tuple[list[str], float]:
        s = [ln for ln in lines if "_sum" in ln]
        return [ln for ln in lines if "_sum" not in ln], float(s[0].rsplit(" ", 1)[1])

    (ref_rest, ref_sum), (our_rest, our_sum) = split(ref_lines), split(our_lines)
    assert our_rest == ref_rest
    assert abs(our_sum - ref_sum) <= 1e-9 * max(1.0, abs(ref_sum))


def test_boundary_value_falls_in_its_bucket() -> None:
    reg = CollectorRegistry()
    h = BatchHistogram("h", "doc", buckets=(1.0, 2.0), registry=reg)
    h.observe_many([1.0, 2.0, 2.0000001])
    h.observe(0.5)
    lines = _lines(reg)
    assert (
        'h_bucket{le="1.0"} 2.0' in lines and 'h_bucket{le="2.0"} 3.0' in lines and 'h_bucket{le="+Inf"} 4.0' in lines
    )
