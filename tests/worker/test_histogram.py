"""BatchHistogram against its reference, prometheus_client.Histogram: same observations, same exposition."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from spark_ml.worker.histogram import BatchHistogram, ScaledHistogram
from spark_ml.worker.metrics import HTTP_LATENCY_BUCKETS_MS

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


@given(
    st.lists(
        st.one_of(st.floats(min_value=0, max_value=20000, allow_nan=False), st.sampled_from(HTTP_LATENCY_BUCKETS_MS)),
        max_size=60,
    )
)
def test_seconds_twin_is_the_millisecond_histogram_in_seconds(values: list[float]) -> None:
    # Given a millisecond histogram with its seconds twin, and a reference observing the same values in seconds
    ref_reg, our_reg = CollectorRegistry(), CollectorRegistry()
    seconds_buckets = [float(f"{b / 1000:.12g}") for b in HTTP_LATENCY_BUCKETS_MS]
    ref = Histogram("lat_seconds", "doc", ["route"], buckets=seconds_buckets, registry=ref_reg)
    ms = BatchHistogram("lat_ms", "doc", buckets=HTTP_LATENCY_BUCKETS_MS, labelnames=["route"])
    ScaledHistogram(ms, "lat_seconds", "doc", scale=1e-3, registry=our_reg)
    ref.labels("/r")
    # When each value is observed once, in milliseconds on ours and in seconds on the reference
    ms.labels("/r").observe_many(values)
    for v in values:
        ref.labels("/r").observe(v / 1000)
    # Then the seconds exposition equals the reference's, bucket for bucket (the sum to rounding)
    ref_lines, our_lines = _lines(ref_reg), _lines(our_reg)
    assert [ln for ln in our_lines if "_sum" not in ln] == [ln for ln in ref_lines if "_sum" not in ln]
    (ref_sum,) = (float(ln.rsplit(" ", 1)[1]) for ln in ref_lines if "_sum" in ln)
    (our_sum,) = (float(ln.rsplit(" ", 1)[1]) for ln in our_lines if "_sum" in ln)
    assert abs(our_sum - ref_sum) <= 1e-9 * max(1.0, ref_sum)


def test_every_registry_has_process_metrics_and_build_info_once() -> None:
    from importlib import metadata

    from spark_ml.core.features import KERNEL
    from spark_ml.worker.metrics import HttpMetrics, Metrics

    # Given the worker's and the gateway's containers on one registry, as `spark-ml up` builds them
    worker = Metrics()
    HttpMetrics(worker.registry)  # a second container on the same registry must not register them again
    text = worker.render().decode()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    # Then the process collector reports this process's memory, and the build info names the installed version
    (rss,) = (float(ln.split()[-1]) for ln in lines if ln.startswith("process_resident_memory_bytes "))
    assert rss > 10e6
    (info,) = (ln for ln in lines if ln.startswith("spark_ml_build_info{"))
    assert f'version="{metadata.version("spark-ml")}"' in info and f'feature_kernel="{KERNEL}"' in info
    assert info.endswith(" 1.0")
    assert sum(ln.startswith("python_info{") for ln in lines) == 1
    # And the seconds twins exist beside the seeds' millisecond names
    assert "# TYPE ml_predict_latency_seconds histogram" in text and "# TYPE ml_predict_latency_ms histogram" in text
    assert "# TYPE ml_http_request_duration_seconds histogram" in text
