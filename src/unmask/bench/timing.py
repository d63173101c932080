"""Wall-clock timing with device synchronisation: warm-up excluded, repeats, the median kept.

On a GPU every timed region starts and ends with torch.cuda.synchronize, so queued kernels are counted
where they run, not where they were launched; the decoders already synchronise once per step (poll), so
host timing around a whole generation is exact to within one synchronisation.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from .hardware import synchronize


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(seconds, result) of one call, synchronised on both ends."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def seconds_per_call(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int,
                     min_time: float = 0.2, max_calls: int = 1000) -> list[float]:
    """Per-call seconds of `repeats` timed runs of fn; each run calls fn often enough to last min_time.

    The number of calls per run is fixed after the warm-up (from its slowest call), so every run
    does the same work.
    """
    slowest = 0.0
    for _ in range(max(warmup, 1)):
        t, _ = timed(fn, device)
        slowest = max(slowest, t)
    calls = max(1, min(max_calls, int(min_time / max(slowest, 1e-9))))
    out = []
    for _ in range(repeats):
        def run() -> None:
            for _ in range(calls):
                fn()
        t, _ = timed(run, device)
        out.append(t / calls)
    return out
