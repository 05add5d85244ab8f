"""The moving-window limiter with a fake clock: exact counts, per-client buckets, bounded memory."""

from __future__ import annotations

import pytest

from spark_ml.gateway.ratelimit import ClientRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_limit_per_window_then_refuses_with_the_wait():
    clock = FakeClock()
    limiter = ClientRateLimiter("3/second", clock=clock)
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    clock.now += 0.25
    assert limiter.hit("a") == pytest.approx(0.75)
    assert ClientRateLimiter.retry_after(0.75) == "1"


def test_window_moves_one_hit_at_a_time():
    clock = FakeClock()
    limiter = ClientRateLimiter("2/second", clock=clock)
    assert limiter.hit("a") is None  # t=0
    clock.now += 0.6
    assert limiter.hit("a") is None  # t=0.6
    clock.now += 0.5
    assert limiter.hit("a") is None  # t=1.1: the t=0 hit has left the window
    assert limiter.hit("a") == pytest.approx(0.5)  # the t=0.6 hit is still in it until t=1.6
    clock.now += 0.5
    assert limiter.hit("a") is None  # t=1.6


def test_refused_hits_do_not_extend_the_window():
    clock = FakeClock()
    limiter = ClientRateLimiter("1/second", clock=clock)
    assert limiter.hit("a") is None
    for _ in range(10):
        clock.now += 0.05
        assert limiter.hit("a") is not None
    clock.now += 0.51  # t=1.01 since the only granted hit
    assert limiter.hit("a") is None


def test_clients_are_counted_apart_and_memory_is_bounded():
    clock = FakeClock()
    limiter = ClientRateLimiter("1/minute", max_clients=3, clock=clock)
    assert limiter.hit("a") is None
    assert limiter.hit("b") is None
    assert limiter.hit("a") == pytest.approx(60.0)
    assert ClientRateLimiter.retry_after(60.0) == "60"
    for client in ("c", "d", "e"):
        assert limiter.hit(client) is None
    assert len(limiter) == 3


@pytest.mark.parametrize("rate", ["", "fast", "20/fortnight"])
def test_bad_notation_is_refused_with_the_setting_name(rate):
    with pytest.raises(ValueError, match="rate_limit"):
        ClientRateLimiter(rate)
