"""Host-side integer helpers for kernel launchers.

``triton.cdiv`` and ``triton.next_power_of_2`` are ``@triton.jit`` functions in Triton 3.6:
called from Python they go through the JIT's dispatcher (~10 µs each on a fast CPU), which
is host time in every launch. These are the plain-Python equivalents.
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for non-negative a and positive b."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
