"""Inputs and the float64-reference check shared by the scan tests."""

from __future__ import annotations

import torch

from flashmarkov.scan import linear_scan, linear_scan_bwd_ref, linear_scan_ref

from ..conftest import assert_close


def make_gates(shape: tuple[int, ...], dtype: torch.dtype, device: str, *, allow_growth: bool) -> torch.Tensor:
    """Gates in ±[0.6, 1], some exactly zero, and (for short sequences) some above 1."""
    g = 0.6 + 0.4 * torch.rand(shape, device=device, dtype=torch.float64)
    g = torch.where(torch.rand(shape, device=device) < 0.15, -g, g)
    g = torch.where(torch.rand(shape, device=device) < 0.02, torch.zeros_like(g), g)
    if allow_growth:
        g = torch.where(torch.rand(shape, device=device) < 0.1, 1.15 * g, g)
    return g.to(dtype)


def state_shape(shape: tuple[int, ...], dim: int, offsets: list[int] | None) -> tuple[int, ...]:
    other = tuple(s for i, s in enumerate(shape) if i != dim % len(shape))
    return other if offsets is None else (len(offsets) - 1, *other)


def check_scan(
    shape: tuple[int, ...],
    dim: int,
    dtype: torch.dtype,
    device: str,
    *,
    reverse: bool = False,
    with_initial: bool = False,
    with_final: bool = False,
    offsets: list[int] | None = None,
) -> None:
    """Run ``linear_scan`` forward and backward on fresh random inputs and compare y, the final
    state and every gradient with the float64 reference from the same (rounded) inputs."""
    T = shape[dim]
    g = make_gates(shape, dtype, device, allow_growth=T <= 128)
    x = torch.randn(shape, device=device, dtype=torch.float64).to(dtype)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32, device=device)
    s_shape = state_shape(shape, dim, offsets)
    h0 = torch.randn(s_shape, device=device, dtype=torch.float64).to(dtype) if with_initial else None

    gi, xi = g.clone().requires_grad_(), x.clone().requires_grad_()
    hi = h0.clone().requires_grad_() if h0 is not None else None
    out = linear_scan(gi, xi, dim=dim, reverse=reverse, initial_state=hi, return_final_state=with_final, cu_seqlens=cu)
    y, final = out if with_final else (out, None)
    dy = torch.randn_like(y)
    dfinal = torch.randn_like(final) if with_final else None
    torch.autograd.backward([y] + ([final] if with_final else []), [dy] + ([dfinal] if with_final else []))

    h0_64 = h0.double() if h0 is not None else None
    y_ref, final_ref = linear_scan_ref(
        g.double(), x.double(), dim=dim, reverse=reverse, initial_state=h0_64, return_final_state=True, cu_seqlens=cu
    )
    dg_ref, dx_ref, dh0_ref = linear_scan_bwd_ref(
        g.double(), y_ref, dy.double(), dim=dim, reverse=reverse, initial_state=h0_64,
        dfinal=dfinal.double() if dfinal is not None else None, cu_seqlens=cu,
    )
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, y_ref, dtype, "y")
    if with_final:
        assert final.dtype == dtype
        assert_close(final, final_ref, dtype, "final_state")
    assert_close(gi.grad, dg_ref, dtype, "d gates")
    assert_close(xi.grad, dx_ref, dtype, "d tokens")
    if with_initial:
        assert_close(hi.grad, dh0_ref, dtype, "d initial_state")
