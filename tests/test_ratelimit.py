"""The token bucket behind RATE_LIMIT_PER_MINUTE / RATE_LIMIT_BURST, on a fake clock."""

from __future__ import annotations

from festora.middleware.ratelimit import TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_steady_rate() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(per_minute=60, burst=2, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert 0.9 <= wait <= 1.0
    clock.now += 1.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


def test_clients_have_their_own_buckets() -> None:
    limiter = TokenBucketLimiter(per_minute=60, burst=0, clock=Clock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(per_minute=60, burst=1, clock=clock)
    for client in range(1000):
        limiter.acquire(str(client))
    clock.now += 60
    limiter.acquire("new")
    assert len(limiter._buckets) == 1
