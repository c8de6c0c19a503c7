"""``flashmarkov demo`` lines for attention: a causal GQA layer with a sliding window, forward
and backward, timed and checked against the float64 reference."""

from __future__ import annotations

import torch

from .._demo import median_ms, rel_err
from . import flash_attention, flash_attention_ref

# norm-wise, over o and the three gradients (the backward of a half type loses more than the forward)
TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}


def demo_rows(device: torch.device) -> list[tuple[str, float, float, float]]:
    """(case, ms for forward + backward, worst relative error of o/dq/dk/dv, tolerance) rows."""
    gen = torch.Generator().manual_seed(0)
    shape = (2, 8, 2048, 64) if device.type == "cuda" else (1, 4, 256, 64)
    dtypes = (torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.float32,)
    rows = []
    for dtype in dtypes:
        B, H, S, D = shape
        q = torch.randn(B, H, S, D, generator=gen).to(device, dtype).requires_grad_()
        k, v = (torch.randn(B, H // 4, S, D, generator=gen).to(device, dtype).requires_grad_() for _ in range(2))
        do = torch.randn(B, H, S, D, generator=gen).to(device, dtype)
        kw = dict(causal=True, window=(S // 4, 0))

        def step() -> list[torch.Tensor]:
            o = flash_attention(q, k, v, **kw)
            return [o, *torch.autograd.grad(o, (q, k, v), do)]

        ms = median_ms(step, device)
        ours = step()
        leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
        o_ref = flash_attention_ref(*leaves, **kw)
        refs = [o_ref, *torch.autograd.grad(o_ref, leaves, do.double())]
        err = max(rel_err(a, b) for a, b in zip(ours, refs, strict=True))
        case = f"causal GQA {H}/{H // 4} window {S // 4} (B,H,S,D)=({B},{H},{S},{D}) {str(dtype)[6:]} fwd+bwd"
        rows.append((case, ms, err, TOLERANCE[dtype]))
    return rows


def demo_lines(device: torch.device) -> list[str]:
    """``demo_rows`` formatted one per line."""
    return [
        f"attention {case}: {ms:.3f} ms, rel. error {err:.2e} (tol {tol:.0e}) {'ok' if err <= tol else 'FAIL'}"
        for case, ms, err, tol in demo_rows(device)
    ]
