"""Rates and latency percentiles for heartbeats and benchmarks (pure: time is an input)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RateMeter:
    """Events per second between two readings of a running total."""

    _last_count: int = 0
    _last_t_ns: int | None = None
    rate_hz: float = 0.0

    def update(self, count: int, t_ns: int) -> float:
        """Rate since the previous call; the first call only sets the origin (rate 0)."""
        if self._last_t_ns is not None and t_ns > self._last_t_ns:
            self.rate_hz = (count - self._last_count) * 1e9 / (t_ns - self._last_t_ns)
        self._last_count, self._last_t_ns = count, t_ns
        return self.rate_hz


@dataclass
class LatencyWindow:
    """The last ``capacity`` latencies (ns) in a ring buffer, summarised as percentiles in ms."""

    capacity: int = 4096
    _values_ns: np.ndarray = field(init=False, repr=False)
    _n: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._values_ns = np.zeros(self.capacity, dtype=np.int64)

    def add(self, latency_ns: int) -> None:
        self._values_ns[self._n % self.capacity] = latency_ns
        self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def percentiles_ms(self) -> dict[str, float]:
        """``{"p50", "p99", "p999", "max"}`` in ms over the window; empty if nothing was added."""
        if self._n == 0:
            return {}
        values = self._values_ns[: min(self._n, self.capacity)] / 1e6
        p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
        return {
            "p50": float(p50),
            "p99": float(p99),
            "p999": float(p999),
            "max": float(values.max()),
        }


def advance_schedule(
    next_ns: int, *, period_ns: int, now_ns: int, max_lag_periods: int = 5
) -> tuple[int, bool]:
    """The next sample time of a fixed-rate loop, and whether it skipped ahead.

    The schedule is absolute (``next + period``), so a loop does not drift. A loop more than
    ``max_lag_periods`` behind skips the missed slots rather than bursting stale samples;
    the bool says it did (an overrun, worth a counter).
    """
    next_ns += period_ns
    lag_ns = now_ns - next_ns
    if lag_ns > max_lag_periods * period_ns:
        return next_ns + (lag_ns // period_ns) * period_ns, True
    return next_ns, False
