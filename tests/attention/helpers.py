"""Inputs and the float64-reference check shared by the attention tests."""

from __future__ import annotations

import math

import torch

from flashmarkov.attention import flash_attention, flash_attention_varlen, flash_attention_ref, flash_attention_varlen_ref

from ..conftest import rel_err

# Norm-wise relative error against float64 from the same rounded inputs, for o, dq, dk, dv.
# Half types: P is rounded to the type before P·V and dS before dS·K (FlashAttention does the same).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
# Largest absolute lse error (lse is float32 whatever the input type; its error follows the scores').
LSE_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def rand(shape: tuple[int, ...], dtype: torch.dtype, device: str, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(shape, dtype=torch.float64, device=device)).to(dtype)


def compare(outs: list[torch.Tensor], refs: list[torch.Tensor], lse: torch.Tensor, lse_ref: torch.Tensor,
            dtype: torch.dtype) -> None:
    """o, dq, dk, dv within TOL and lse within LSE_TOL, -inf exactly where the reference has it."""
    for name, a, e in zip(("o", "dq", "dk", "dv"), outs, refs, strict=True):
        assert a.shape == e.shape and a.dtype == dtype, f"{name}: {a.shape} {a.dtype} vs {e.shape}"
        err = rel_err(a, e)
        assert err <= TOL[dtype], f"{name}: relative error {err:.3g} > {TOL[dtype]:.1g} ({dtype})"
    assert lse.shape == lse_ref.shape and lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    empty = lse_ref == -math.inf
    assert torch.equal(lse == -math.inf, empty), "lse = -inf exactly on the rows that see no key"
    assert not lse.isnan().any()
    if (~empty).any():
        err = (lse[~empty].double() - lse_ref[~empty]).abs().max().item()
        assert err <= LSE_TOL[dtype], f"lse: absolute error {err:.3g} > {LSE_TOL[dtype]:.1g}"


def _grads(fn, leaves: list[torch.Tensor], do: torch.Tensor, dlse: torch.Tensor) -> list[torch.Tensor]:
    """[o, lse, dq, dk, dv] of ``fn(*leaves) -> (o, lse)`` with cotangents do and dlse (dlse
    only where lse is finite: -inf rows have no gradient to pass)."""
    o, lse = fn(*leaves)
    fin = torch.isfinite(lse)
    loss = (o.double() * do.double()).sum() + (torch.where(fin, lse, 0).double() * dlse.double()).sum()
    return [o.detach(), lse.detach(), *torch.autograd.grad(loss, leaves)]


def check_attention(
    device: str, dtype: torch.dtype, *, B: int = 1, Hq: int = 2, Hkv: int = 1, Sq: int, Sk: int, D: int,
    layout: str = "bhsd", with_lse: bool = True, **kw,
) -> list[torch.Tensor]:
    """flash_attention forward and backward (through o and, ``with_lse``, lse) on fresh inputs,
    compared with the float64 reference from the same rounded inputs; returns [o, lse, dq, dk, dv]."""
    def shape(H: int, S: int) -> tuple[int, ...]:
        return (B, H, S, D) if layout == "bhsd" else (B, S, H, D)

    q, k, v = rand(shape(Hq, Sq), dtype, device), rand(shape(Hkv, Sk), dtype, device), rand(shape(Hkv, Sk), dtype, device)
    do = rand(shape(Hq, Sq), dtype, device)
    dlse = rand((B, Hq, Sq), torch.float32, device) if with_lse else torch.zeros(B, Hq, Sq, device=device)
    got = _grads(lambda *x: flash_attention(*x, return_lse=True, layout=layout, **kw), [t.clone().requires_grad_() for t in (q, k, v)], do, dlse)
    ref = _grads(lambda *x: flash_attention_ref(*x, return_lse=True, layout=layout, **kw), [t.double().requires_grad_() for t in (q, k, v)], do, dlse)
    compare([got[0], *got[2:]], [ref[0], *ref[2:]], got[1], ref[1], dtype)
    return got


def check_varlen(
    device: str, dtype: torch.dtype, lens_q: list[int], lens_k: list[int], *, Hq: int = 2, Hkv: int = 1, D: int = 16, **kw,
) -> list[torch.Tensor]:
    """flash_attention_varlen against flash_attention_varlen_ref, as ``check_attention``."""
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device=device)
    tq, tk = sum(lens_q), sum(lens_k)
    q, k, v = rand((tq, Hq, D), dtype, device), rand((tk, Hkv, D), dtype, device), rand((tk, Hkv, D), dtype, device)
    do, dlse = rand((tq, Hq, D), dtype, device), rand((Hq, tq), torch.float32, device)
    args = (cu_q, cu_k, max(lens_q), max(lens_k))
    got = _grads(lambda *x: flash_attention_varlen(*x, *args, return_lse=True, **kw), [t.clone().requires_grad_() for t in (q, k, v)], do, dlse)
    ref = _grads(lambda *x: flash_attention_varlen_ref(*x, *args, return_lse=True, **kw), [t.double().requires_grad_() for t in (q, k, v)], do, dlse)
    compare([got[0], *got[2:]], [ref[0], *ref[2:]], got[1], ref[1], dtype)
    return got
