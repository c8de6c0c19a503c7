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

Gluon kernels take TMA descriptors as ``TmaArg`` (tensor, block shape, shared layout). Triton's
launcher encodes every descriptor again on every launch (``cuTensorMapEncodeTiled`` and a
Python ``TensorDescriptor``: tens of µs each on the H100's host); on a bound launch LeanKernel
instead reuses the encoding it made for the same position, address, shape and strides (an encoded
descriptor holds nothing else: block shape, layout and dtype are fixed by ``static``) and calls the
compiled launcher underneath Triton's descriptor wrapper.

Shared by the attention kernels, the diffmax attention kernels and the scan
(``flashmarkov.scan.kernels``). A call returns the kernel it launched: the ``CompiledKernel``
(registers and spills are on it) on the compiled path, whatever ``kernel[grid](...)`` returned
otherwise (None under the interpreter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from triton import knobs
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

Tensor = torch.Tensor

MAX_BOUND = 256  # distinct (static, integers, alignment, device) keys kept per kernel
MAX_ENCODED = 1024  # encoded TMA descriptors kept per bound kernel


class TmaArg(NamedTuple):
    """A TMA descriptor argument of a Gluon kernel: ``tensor`` (16-byte aligned, unit last stride)
    read or written in blocks of ``block_shape``, laid out in shared memory as ``layout`` (an
    ``NVMMASharedLayout``). Cheap to make; ``build`` makes the Gluon ``TensorDescriptor``."""

    tensor: Tensor
    block_shape: tuple[int, ...]
    layout: object

    def build(self) -> object:
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        t = self.tensor
        return TensorDescriptor(t, list(t.shape), list(t.stride()), list(self.block_shape), self.layout)


class _Encoded:
    """A bound kernel's lean path for TMA arguments: the compiled launcher beneath Triton's descriptor
    wrapper, the kernel's descriptor metadata (one per TmaArg, in order) and the encodings made."""

    def __init__(self, raw: Callable, kernel: object, metas: list) -> None:
        from triton.backends.nvidia.driver import make_tensordesc_arg  # CUDA only: imported once per binding

        self.raw, self.metas, self.cache, self.encode = raw, metas, {}, make_tensordesc_arg
        self.coop, self.pdl = kernel.run.launch_cooperative_grid, kernel.run.launch_pdl

    @staticmethod
    def of(kernel: object, n_tma: int) -> _Encoded | None:
        """The lean path of a compiled kernel with ``n_tma`` descriptors, or None where Triton's
        launcher is not as this module knows it (Triton 3.6: ``wrap_handle_tensordesc``'s closure
        over the compiled ``launcher``), the kernel needs scratch memory or was lowered without
        descriptor metadata: its launches then go through ``kernel.run`` with built descriptors."""
        run = kernel.run
        launch = getattr(run, "launch", None)
        code, cells = getattr(launch, "__code__", None), getattr(launch, "__closure__", None) or ()
        free = dict(zip(code.co_freevars, cells)) if code is not None else {}
        metas = getattr(kernel.metadata, "tensordesc_meta", None)
        if ("launcher" not in free or getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1)
                or not metas or len(metas) != n_tma or any(m is None for m in metas)):
            return None
        return _Encoded(free["launcher"].cell_contents, kernel, list(metas))

    def args(self, ptrs: Sequence[object]) -> list:
        """The launcher's arguments for ``ptrs``: each TmaArg as its encoded descriptor, shape and
        strides (encoded once per position, address, shape and strides)."""
        out, j = [], 0
        for p in ptrs:
            if isinstance(p, TmaArg):
                t = p.tensor
                key = (j, t.data_ptr(), t.shape, t.stride())
                enc = self.cache.get(key)
                if enc is None:
                    if len(self.cache) >= MAX_ENCODED:
                        self.cache.clear()
                    enc = self.cache[key] = self.encode(p.build(), self.metas[j])
                out.extend(enc)
                j += 1
            else:
                out.append(p)
        return out


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
        self, grid: tuple[int, int, int], static: object, ptrs: Sequence[Tensor | TmaArg | None], ints: tuple[int, ...],
        floats: tuple[float, ...], options: Callable[[], dict],
    ) -> object:
        if self.compiled and _hooks_idle():
            drv = driver.active
            device = drv.get_current_device()
            # tensors go as addresses, TMA arguments as themselves (``static`` fixes their block
            # shape, layout and dtype: only their tensors' addresses, shapes and strides vary)
            addrs = [p if p is None or isinstance(p, TmaArg) else p.data_ptr() for p in ptrs]
            key = (static, ints, tuple([None if a is None else a & 15 == 0 if isinstance(a, int) else 0 for a in addrs]), device)
            entry = self.bound.get(key)
            if entry is not None:
                kernel, encoded = entry
                stream = drv.get_current_stream(device)
                if encoded is not None:
                    encoded.raw(
                        grid[0], grid[1], grid[2], stream, kernel.function, encoded.coop, encoded.pdl, None, None,
                        kernel.packed_metadata, None, None, None, *encoded.args(addrs), *ints, *floats,
                        *(None,) * self.n_constexprs,
                    )
                else:
                    kernel.run(
                        grid[0], grid[1], grid[2], stream, kernel.function, kernel.packed_metadata, None, None, None,
                        *[a.build() if isinstance(a, TmaArg) else a for a in addrs], *ints, *floats,
                        *(None,) * self.n_constexprs,
                    )
                return kernel
            n_tma = sum(isinstance(p, TmaArg) for p in ptrs)
            kernel = self.fn[grid](*_built(ptrs), *ints, *floats, **options())
            if getattr(kernel, "function", None) is not None:
                if len(self.bound) >= MAX_BOUND:
                    self.bound.clear()
                self.bound[key] = (kernel, _Encoded.of(kernel, n_tma) if n_tma else None)
            return kernel
        return self.fn[grid](*_built(ptrs), *ints, *floats, **options())


def _built(ptrs: Sequence[Tensor | TmaArg | None]) -> list:
    """``ptrs`` with each TmaArg built into its TensorDescriptor (a JIT launch)."""
    return [p.build() if isinstance(p, TmaArg) else p for p in ptrs]
