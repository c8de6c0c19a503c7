"""Shared pieces of ``flashmarkov demo``: a demo-grade timer and the error metric (benchmarks
live in ``flashmarkov.bench``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64; inf when ``actual`` has NaN or inf."""
    a, b = actual.detach().double(), expected.detach().double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def median_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Median wall time of 5 calls after one warm-up, in ms (a demo figure, not a benchmark)."""
    fn()
    times = []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]
