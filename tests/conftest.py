"""Shared test machinery: the float64-reference comparison, per-dtype tolerances, NaN-poisoned
allocations, the Triton interpreter on CPU-only machines, and the ``gpu`` marker."""

from __future__ import annotations

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must precede any import of flashmarkov's kernels: triton.jit reads it at decoration time.
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402

# Norm-wise relative error allowed against a float64 reference computed from the same inputs.
# Half types: inputs rounded to the type, float32 accumulation, outputs rounded to the type.
TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}

# The interpreter mishandles bfloat16 (design.md): interpreted kernels are tested without it.
INTERPRETED_DTYPES = [torch.float16, torch.float32, torch.float64]
GPU_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEVICE = "cuda" if HAS_CUDA else "cpu"


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64; NaN or inf anywhere in ``actual`` gives inf."""
    a, e = actual.detach().double(), expected.detach().double()
    if not torch.isfinite(a).all():
        return float("inf")
    denom = e.norm().item()
    return (a - e).norm().item() / (denom if denom > 0 else 1.0)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Shapes equal and relative error within ``TOLERANCE[dtype]``."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = rel_err(actual, expected)
    assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.3g} > {TOLERANCE[dtype]:.1g} ({dtype})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a test that forces the Triton kernels runs them compiled on a GPU: scripts/gpu.sh selects it
    # with the gpu tests (marker "triton")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "triton_backend" in item.fixturenames or (callspec is not None and callspec.params.get("backend") == "triton"):
            item.add_marker(pytest.mark.triton)
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _release_gpu_cache():
    """After each test, give the caching allocator's free blocks back to the GPU: the GPU tests
    run in several processes at once (pytest-xdist), and a worker that keeps the peak of its
    largest test cached starves the others (session 18: three float64 attention tests failed
    with out-of-memory beside workers holding 18-21 GiB each)."""
    yield
    if HAS_CUDA:
        torch.cuda.empty_cache()


@pytest.fixture
def triton_backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """Force the Triton kernels, compiled on a GPU, interpreted on CPU tensors."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
    return DEVICE


@pytest.fixture
def nan_alloc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill every new floating-point allocation with NaN, so an element a kernel forgets to write
    shows up as NaN in the output."""

    def poisoned(fn):
        def wrapper(*args, **kwargs):
            t = fn(*args, **kwargs)
            if t.is_floating_point():
                t.fill_(float("nan"))
            return t

        return wrapper

    monkeypatch.setattr(torch, "empty", poisoned(torch.empty))
    monkeypatch.setattr(torch, "empty_like", poisoned(torch.empty_like))
    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned(torch.Tensor.new_empty))
