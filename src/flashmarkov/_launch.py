"""Lean kernel launches: a ``@triton.jit`` kernel bound once per specialisation, then launched
through its compiled launcher with a prepared argument tuple.

``kernel[grid](...)`` (Triton 3.6 ``JITFunction.run``) binds every argument by name, computes the
specialisation of each (type, 16-divisibility, equality to 1), hashes the key, builds launch
metadata and calls the (empty) launch hook chain: ~20 µs of Python per launch on a slow CPU,
and the C launcher then asks the driver about each tensor pointer. ``LeanKernel`` keys its own
cache on everything Triton specialises on:

- ``static``, a hashable value from the caller that determines the constexprs, the launch
  options and the dtype of every tensor argument;
- the integer arguments themselves (Triton specialises on their values);
- whether each pointer is None or 16-byte aligned, and the current device.

On a miss it launches through ``kernel[grid](...)``, which compiles if needed, and keeps the
``CompiledKernel`` it returns; on a hit it calls that kernel's launcher with the pointers as
integers. Float arguments are never specialised (Triton passes Python floats as fp32), so they
are not part of the key. Under the interpreter, with launch hooks installed (profilers) or
when a launch returned no compiled kernel, every launch goes through ``kernel[grid](...)``.

Shared by the attention kernels, the diffmax attention kernels and the scan
(``flashmarkov.scan.kernels``). A call returns the kernel it launched: the ``CompiledKernel``
(registers and spills are on it) on the compiled path, whatever ``kernel[grid](...)`` returned
otherwise (None under the interpreter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from triton import knobs
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

Tensor = torch.Tensor

MAX_BOUND = 256  # distinct (static, integers, alignment, device) keys kept per kernel


def _hooks_idle() -> bool:
    """No launch enter/exit hooks (Triton 3.6 holds them in HookChains, older versions in
    plain attributes that are None when unset)."""
    runtime = knobs.runtime
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        if hook is not None and getattr(hook, "calls", True):
            return False
    return True


class LeanKernel:
    """A Triton (or Gluon) kernel whose parameters are, in order: pointers (tensors, TMA tensor
    descriptors or None), integers, floats, then constexprs. ``lean(grid, static, ptrs, ints,
    floats, options)`` launches it;
    ``options()`` gives the keyword arguments of ``kernel[grid](...)``: every constexpr, and
    num_warps / num_stages; it is called only when the key is not bound yet. ``static`` must
    determine everything ``options()`` returns and the dtype of every tensor in ``ptrs``.
    Returns the kernel launched (see the module's docstring)."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.compiled = isinstance(fn, JITFunction)  # False under the interpreter
        self.n_constexprs = len(fn.constexprs) if self.compiled else 0
        self.bound: dict[tuple, object] = {}

    def __call__(
        self, grid: tuple[int, int, int], static: object, ptrs: Sequence[Tensor | None], ints: tuple[int, ...],
        floats: tuple[float, ...], options: Callable[[], dict],
    ) -> object:
        if self.compiled and _hooks_idle():
            drv = driver.active
            device = drv.get_current_device()
            # tensors go as addresses; TMA descriptors (Gluon kernels) as themselves: the launcher
            # encodes them, and ``static`` must fix their block shape and layout
            addrs = [p if p is None or not hasattr(p, "data_ptr") else p.data_ptr() for p in ptrs]
            key = (static, ints, tuple([None if a is None else a & 15 == 0 if isinstance(a, int) else 0 for a in addrs]), device)
            kernel = self.bound.get(key)
            if kernel is not None:
                kernel.run(
                    grid[0], grid[1], grid[2], drv.get_current_stream(device), kernel.function, kernel.packed_metadata,
                    None, None, None, *addrs, *ints, *floats, *(None,) * self.n_constexprs,
                )
                return kernel
            kernel = self.fn[grid](*ptrs, *ints, *floats, **options())
            if getattr(kernel, "function", None) is not None:
                if len(self.bound) >= MAX_BOUND:
                    self.bound.clear()
                self.bound[key] = kernel
            return kernel
        return self.fn[grid](*ptrs, *ints, *floats, **options())
