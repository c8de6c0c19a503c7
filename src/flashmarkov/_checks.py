"""Shared input validation: every public function turns bad input into a clear error here,
before any kernel launches. Errors name the argument, its value and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(
    name: str, x: object, *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, min_ndim: int = 1
) -> torch.Tensor:
    """``x`` is a tensor of one of ``dtypes`` with at least ``min_ndim`` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {x.dtype}; allowed: {_dtype_names(dtypes)}")
    if x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_like(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor, *, shape: bool = True) -> None:
    """``x`` has the dtype and device (and, with ``shape``, the shape) of ``ref``."""
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has {ref.dtype}; they must match")
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}; they must match")
    if shape and x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has {tuple(ref.shape)}; they must match"
        )


def check_shape(name: str, x: torch.Tensor, expected: Sequence[int], why: str) -> None:
    """``x`` has exactly the shape ``expected``; ``why`` says where the expectation comes from."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {tuple(expected)} ({why})")


def check_dim(name: str, dim: object, ndim: int) -> int:
    """A valid axis index for a tensor of ``ndim`` dimensions, normalised to ``0 <= dim < ndim``."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{name}={dim} is out of range for a tensor with {ndim} dimension(s)")
    return dim % ndim


def check_flag(name: str, value: object) -> bool:
    """``value`` is a plain bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_offsets(name: str, offsets: object, total: int, device: torch.device) -> torch.Tensor:
    """``offsets`` are int32 sequence boundaries ``0 = o[0] <= o[1] <= ... <= o[-1] = total``.

    Values are checked on the host (a device sync for CUDA tensors) except while
    ``torch.compile`` traces, where only the metadata can be checked.
    """
    o = check_tensor(name, offsets, dtypes=(torch.int32,))
    if o.dim() != 1 or o.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 entries, got shape {tuple(o.shape)}")
    if o.device != device:
        raise ValueError(f"{name} is on {o.device} but the data is on {device}; they must match")
    if torch.compiler.is_compiling():
        return o
    values = o.tolist()
    if values[0] != 0 or values[-1] != total:
        raise ValueError(f"{name} must start at 0 and end at {total} (the scanned length), got {values[0]}…{values[-1]}")
    bad = next((i for i in range(1, len(values)) if values[i] < values[i - 1]), None)
    if bad is not None:
        raise ValueError(f"{name} must be non-decreasing; {name}[{bad}]={values[bad]} < {name}[{bad - 1}]={values[bad - 1]}")
    return o
