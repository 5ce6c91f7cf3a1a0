"""Wall-time measurement and its statistics, the one implementation used by the
benchmarks, the converter's report and `doctor`.

Percentiles are nearest-rank (always an observed sample); times are microseconds.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Callable, Iterable


def percentile(samples: Iterable[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q% of samples <= it. Pure.

    Always an observed value (no interpolation), so with fewer than 100
    samples p99 is simply the largest, which is what it honestly is.
    """
    values = sorted(float(v) for v in samples)
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    rank = max(1, math.ceil(q / 100.0 * len(values)))
    return values[rank - 1]


def summarize(samples_us: Iterable[float]) -> dict:
    """Median, p95, p99, mean, min, max and count of timings in microseconds. Pure."""
    values = sorted(float(v) for v in samples_us)
    if not values:
        raise ValueError("no timings to summarize")
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return {"median_us": round(median, 2), "p95_us": round(percentile(values, 95), 2),
            "p99_us": round(percentile(values, 99), 2), "mean_us": round(sum(values) / n, 2),
            "min_us": round(values[0], 2), "max_us": round(values[-1], 2), "runs": n}


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 0) -> list[float]:
    """Wall time of `runs` calls of fn() after `warmup` untimed ones, microseconds each.

    The garbage collector is paused while timing so a collection triggered by
    someone else's garbage doesn't land in one sample.
    """
    if runs < 1:
        raise ValueError(f"runs must be 1 or more, got {runs}")
    for _ in range(max(0, warmup)):
        fn()
    times = [0.0] * runs
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        clock = time.perf_counter_ns
        for i in range(runs):
            start = clock()
            fn()
            times[i] = (clock() - start) / 1e3
    finally:
        if was_enabled:
            gc.enable()
    return times


def latency_stats(fn: Callable[[], object], runs: int, warmup: int) -> dict:
    """Warm up, time `runs` calls of fn(): {median_us, p95_us, p99_us, mean_us, min_us, max_us, runs}."""
    return summarize(time_calls(fn, runs, warmup))
