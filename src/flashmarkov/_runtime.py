"""Backend choice: Triton kernels on CUDA tensors, the PyTorch reference elsewhere.

``FLASHMARKOV_BACKEND=triton|reference`` overrides the choice for every call. With
``TRITON_INTERPRET=1`` (set before flashmarkov is imported) the Triton kernels run on CPU
tensors through Triton's interpreter, which is how CPU-only machines test them.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import torch

Backend = Literal["triton", "reference"]
_BACKENDS = ("triton", "reference")


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def triton_available() -> bool:
    """True when ``import triton`` works."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend_for(device: torch.device) -> Backend:
    """The backend that runs an operator on tensors living on ``device``.

    CUDA tensors get Triton (when installed), everything else the reference. The environment
    variable ``FLASHMARKOV_BACKEND`` forces one of the two; forcing ``triton`` on CPU tensors
    needs ``TRITON_INTERPRET=1``.
    """
    forced = os.environ.get("FLASHMARKOV_BACKEND", "").strip().lower()
    if forced:
        if forced not in _BACKENDS:
            raise ValueError(f"FLASHMARKOV_BACKEND={forced!r}: allowed values are {_BACKENDS}")
        if forced == "triton":
            if not triton_available():
                raise RuntimeError("FLASHMARKOV_BACKEND=triton but triton is not installed")
            if device.type != "cuda" and not interpreting():
                raise RuntimeError(
                    f"FLASHMARKOV_BACKEND=triton on {device.type} tensors needs TRITON_INTERPRET=1 "
                    "(set before importing flashmarkov)"
                )
        return forced  # type: ignore[return-value]
    if device.type == "cuda" and triton_available():
        return "triton"
    return "reference"


def device_summary() -> str:
    """One line naming the device flashmarkov would use by default."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda: {props.name} ({props.multi_processor_count} SMs)"
    return "cpu (reference path" + (", Triton interpreter on)" if interpreting() else ")")
