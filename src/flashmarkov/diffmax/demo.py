"""``demo_diffmax(device)``: α-diffmax on built-in data, for ``flashmarkov demo``."""

from __future__ import annotations

import torch

from .._demo import median_ms, rel_err
from . import diffmax_attention, diffmax_bisect
from .reference import diffmax_attention_ref, diffmax_bisect_ref


def demo_diffmax(device: torch.device | str) -> str:
    """Lines of text: the row normaliser on attention-like scores at three α (time, exact zeros,
    error against the float64 reference), and fused causal diffmax attention on clustered keys
    (time, fraction of tiles skipped, error)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    cuda = device.type == "cuda"
    rows, n = (8 * 1024, 1024) if cuda else (256, 512)
    z = (3 * torch.randn(rows, n, generator=gen)).to(device)
    lines = [f"diffmax rows ({rows} x {n}, float32, {device.type}):"]
    for alpha in (0.9, 0.7, 0.5):
        p = diffmax_bisect(z, alpha)
        ms = median_ms(lambda: diffmax_bisect(z, alpha), device)
        check = slice(0, 256)
        err = rel_err(p[check], diffmax_bisect_ref(z[check].double(), alpha))
        zeros = (p == 0).double().mean().item()
        lines.append(f"  alpha={alpha}: {ms:8.3f} ms  {100 * zeros:5.1f}% exact zeros  rel err {err:.1e}")
    B, H, S, D = (1, 8, 4096, 64) if cuda else (1, 2, 256, 32)
    dtype = torch.bfloat16 if cuda else torch.float32
    centroids = torch.randn(B, H, 16, D, generator=gen)
    centroids = 8 * centroids / centroids.norm(dim=-1, keepdim=True)
    which = torch.arange(S) * 16 // S
    q = (centroids[:, :, which] + 0.5 * torch.randn(B, H, S, D, generator=gen)).to(device, dtype)
    k = (centroids[:, :, which] + 0.5 * torch.randn(B, H, S, D, generator=gen)).to(device, dtype)
    v = torch.randn(B, H, S, D, generator=gen).to(device, dtype)
    o, stats = diffmax_attention(q, k, v, 0.5, causal=True, return_stats=True)
    ms = median_ms(lambda: diffmax_attention(q, k, v, 0.5, causal=True), device)
    head = slice(0, 1)
    ref = diffmax_attention_ref(q[:, head].double(), k[:, head].double(), v[:, head].double(), 0.5, causal=True)[0]
    lines.append(
        f"diffmax attention ({B}x{H}x{S}x{D}, {str(dtype).removeprefix('torch.')}, causal, alpha=0.5, clustered keys): "
        f"{ms:.3f} ms  {100 * stats['tile_skip_fraction']:.0f}% of tiles skipped  rel err {rel_err(o[:, head], ref):.1e}"
    )
    return "\n".join(lines)
