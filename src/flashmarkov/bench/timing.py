"""Timing and the measured machine: one timing path for every implementation and the copy bandwidth.

On CUDA, ``triton.testing.do_bench`` (median; it clears L2 before each call) after its warm-up.
On CPU, a median of ``time.perf_counter`` over a few calls: enough to smoke-test the harness, not a
benchmark, and flagged as such in every record (``timer``).
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

DO_BENCH = "triton.testing.do_bench median"
PERF_COUNTER = "time.perf_counter median (CPU smoke test, not a benchmark)"
CPU_CALLS = 5
COPY_BYTES = {"cuda": 1 << 30, "cpu": 16 << 20}
MAX_INPUT_SETS = 16


@dataclass(frozen=True)
class Environment:
    """The machine and software a run measured, and its copy bandwidth (bytes read + written)."""

    device: torch.device
    gpu: str
    torch: str
    triton: str
    commit: str
    date: str
    timer: str
    l2_bytes: int
    copy_bytes: int
    copy_ms: float

    @property
    def copy_gbps(self) -> float:
        return 2 * self.copy_bytes / (self.copy_ms * 1e6)


def median_ms(fns: Sequence[Callable[[], object]], device: torch.device, warmup_ms: int, rep_ms: int) -> float:
    """Median time of one call, cycling through ``fns`` (one per input set) call after call."""
    rotation = itertools.cycle(fns)

    def call() -> object:
        return next(rotation)()

    if device.type == "cuda":
        import triton.testing

        with torch.cuda.device(device):
            return float(triton.testing.do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    call()
    samples = []
    for _ in range(CPU_CALLS):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def input_sets(bytes_moved: int, env: Environment) -> int:
    """How many input sets to rotate: one when a call's bytes exceed L2, else enough to cover 2×L2."""
    if env.l2_bytes == 0 or bytes_moved > env.l2_bytes:
        return 1
    return min(MAX_INPUT_SETS, math.ceil(2 * env.l2_bytes / bytes_moved))


def _commit() -> str:
    """``FLASHMARKOV_COMMIT`` when set (for a copy of the tree without .git), else the checkout's HEAD."""
    if os.environ.get("FLASHMARKOV_COMMIT"):
        return os.environ["FLASHMARKOV_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return triton.__version__


def measure_environment(device: torch.device, warmup_ms: int, rep_ms: int) -> Environment:
    """Provenance of the run and its copy bandwidth: ``dst.copy_(src)`` of 1 GiB on CUDA."""
    cuda = device.type == "cuda"
    copy_bytes = COPY_BYTES["cuda" if cuda else "cpu"]
    src = torch.empty(copy_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = median_ms([lambda: dst.copy_(src)], device, warmup_ms, rep_ms)
    return Environment(
        device=device,
        gpu=torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        torch=torch.__version__,
        triton=_triton_version(),
        commit=_commit(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        timer=DO_BENCH if cuda else PERF_COUNTER,
        l2_bytes=torch.cuda.get_device_properties(device).L2_cache_size if cuda else 0,
        copy_bytes=copy_bytes,
        copy_ms=copy_ms,
    )
