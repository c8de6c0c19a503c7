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


def _interpreter_index_fix() -> None:
    """Let Triton 3.6's interpreter run ``range(start, stop)`` with run-time bounds: it holds
    kernel scalars as 1-element 1-D NumPy arrays and converts them with ``int(array)``, which
    NumPy >= 2.3 rejects. Convert through the array's single element instead. Compiled kernels
    are unaffected."""
    import numpy as np
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_flashmarkov_index_fix", False):
        return

    def patched(tensor, scope) -> None:  # noqa: ANN001 - the interpreter's own types
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patched._flashmarkov_index_fix = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


if interpreting() and triton_available():
    _interpreter_index_fix()


# POSIX os.environ keeps its bytes in ``_data`` (updated by os.environ[...] = ... and by pytest's
# monkeypatch.setenv alike): a dict read costs ~0.1 µs where os.environ.get encodes and decodes
# (~2 µs on a slow CPU, on every operator call). Elsewhere os.environ itself.
_ENVIRON = getattr(os.environ, "_data", None)
_ENV_KEYS: tuple = (b"FLASHMARKOV_BACKEND", b"TRITON_INTERPRET")
if not isinstance(_ENVIRON, dict) or os.name != "posix":
    _ENVIRON, _ENV_KEYS = os.environ, ("FLASHMARKOV_BACKEND", "TRITON_INTERPRET")
_CHOSEN: dict[tuple, Backend] = {}


def backend_for(device: torch.device) -> Backend:
    """The backend that runs an operator on tensors living on ``device``.

    CUDA tensors get Triton (when installed), everything else the reference. The environment
    variable ``FLASHMARKOV_BACKEND`` forces one of the two; forcing ``triton`` on CPU tensors
    needs ``TRITON_INTERPRET=1``. Cached on the two variables' current values and the device
    type (this is on every operator call); an invalid setting is not cached and raises each time.
    """
    key = (_ENVIRON.get(_ENV_KEYS[0]), _ENVIRON.get(_ENV_KEYS[1]), device.type)
    backend = _CHOSEN.get(key)
    if backend is None:
        backend = _CHOSEN[key] = _choose_backend(device)
    return backend


def _choose_backend(device: torch.device) -> Backend:
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
