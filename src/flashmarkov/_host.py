"""Host-side integer helpers for kernel launchers.

``triton.cdiv`` and ``triton.next_power_of_2`` are ``@triton.jit`` functions in Triton 3.6:
called from Python they go through the JIT's dispatcher (~10 µs each on a fast CPU), which
is host time in every launch. These are the plain-Python equivalents.
"""

from __future__ import annotations

import functools


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for non-negative a and positive b."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@functools.cache
def _sm_count(index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: object) -> int:
    """Streaming multiprocessors of a CUDA ``torch.device`` (132, an H100/H200's count, for any
    other device: the interpreter and CPU launches plan as for one of those)."""
    if getattr(device, "type", None) != "cuda":
        return 132
    import torch

    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    import torch

    return torch.cuda.get_device_capability(index)


def capability(device: object) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA ``torch.device``; None for any other device."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    return _capability(device.index if device.index is not None else torch.cuda.current_device())
