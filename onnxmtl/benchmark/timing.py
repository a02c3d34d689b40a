"""Timing: warm-up, then repeats timed in turn across the compared functions."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_times(
    fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 0
) -> dict[str, list[float]]:
    """Seconds of every call of each function, timed in turn within every repeat so that
    drift in the machine's speed affects all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 0
) -> dict[str, float]:
    """Median seconds of each function, timed as `interleaved_times` does."""
    times = interleaved_times(fns, repeats, warmup)
    return {name: statistics.median(t) for name, t in times.items()}


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median seconds of `fn` over `repeats` calls after `warmup` untimed ones."""
    return interleaved_medians({"fn": fn}, repeats, warmup)["fn"]
