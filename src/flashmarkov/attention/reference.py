"""Softmax attention in plain PyTorch (../math.md §2): the test oracle and the CPU path.

Computes in float32 (float64 for float64 input) whatever the input dtype and forms the full
(Sq, Sk) score matrix. ``flash_attention_ref`` / ``flash_attention_varlen_ref`` have the public
signatures and are differentiable by autograd, without NaN gradients for rows that see no key;
``flash_attention_bwd_ref`` / ``flash_attention_varlen_bwd_ref`` give the same gradients by the
explicit formulas (the CPU backward of the custom op, which runs where autograd is off).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference computes and returns lse in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def visible_mask(
    sq: int, sk: int, causal: bool, window: tuple[int, int], device: torch.device | str = "cpu"
) -> Tensor:
    """Bool (sq, sk): key j is visible to query i (bottom-right aligned, off = sk - sq).

    causal: j <= i + off; window (wl, wr), -1 unbounded: i + off - wl <= j <= i + off + wr.
    """
    wl, wr = window
    i = torch.arange(sq, device=device)[:, None] + (sk - sq)
    j = torch.arange(sk, device=device)[None, :]
    mask = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if causal:
        mask &= j <= i
    if wl >= 0:
        mask &= j >= i - wl
    if wr >= 0:
        mask &= j <= i + wr
    return mask


def _expand(x: Tensor, group: int) -> Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * group, S, D): query head h reads key/value head h // group."""
    return x.repeat_interleave(group, dim=1) if group > 1 else x


def _probs(
    q: Tensor, k: Tensor, scale: float, causal: bool, window: tuple[int, int], softcap: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(P, lse, tanh(scale·q·kᵀ / softcap) or None) for q (B, Hq, Sq, D) and expanded k, both
    in the accumulation dtype; P = 0 and lse = -inf on rows without a visible key."""
    s = scale * (q @ k.transpose(-1, -2))  # [B, Hq, Sq, Sk]
    t = None
    if softcap > 0:
        t = torch.tanh(s / softcap)
        s = softcap * t
    mask = visible_mask(q.shape[2], k.shape[2], causal, window, q.device)
    s = s.masked_fill(~mask, -math.inf)
    # the row max is a shift that cancels exactly (d lse / d m = 0): detach it; rows without a
    # visible key use shift 0 and sum 1 so that no -inf - -inf (NaN) enters forward or backward
    if s.shape[-1] == 0:
        m = s.new_zeros(*s.shape[:-1], 1)
    else:
        m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    l = torch.exp(s - m).sum(dim=-1, keepdim=True)
    seen = l > 0
    lse_safe = m + torch.log(torch.where(seen, l, torch.ones_like(l)))
    p = torch.exp(s - lse_safe)
    lse = torch.where(seen, lse_safe, torch.full_like(lse_safe, -math.inf)).squeeze(-1)
    return p, lse, t


def _attention_bhsd(
    q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, window: tuple[int, int], softcap: float
) -> tuple[Tensor, Tensor]:
    """(o, lse) for q (B, Hq, Sq, D), k and v (B, Hkv, Sk, D), in the accumulation dtype."""
    acc = acc_dtype(q.dtype)
    group = q.shape[1] // k.shape[1]
    p, lse, _ = _probs(q.to(acc), _expand(k.to(acc), group), scale, causal, window, softcap)
    return p @ _expand(v.to(acc), group), lse


def _attention_bwd_bhsd(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, dlse: Tensor | None,
    scale: float, causal: bool, window: tuple[int, int], softcap: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) in the accumulation dtype by the formulas of ../math.md §2."""
    acc = acc_dtype(q.dtype)
    B, hkv, sk, d = k.shape
    group = q.shape[1] // hkv
    q, do = q.to(acc), do.to(acc)
    ke, ve = _expand(k.to(acc), group), _expand(v.to(acc), group)
    p, _, t = _probs(q, ke, scale, causal, window, softcap)
    delta = (do * (p @ ve)).sum(-1)  # [B, Hq, Sq]
    if dlse is not None:
        delta = delta - dlse.to(acc)
    ds = p * (do @ ve.transpose(-1, -2) - delta[..., None])
    if t is not None:
        ds = ds * (1 - t * t)
    dq = scale * (ds @ ke)
    dk = (scale * (ds.transpose(-1, -2) @ q)).view(B, hkv, group, sk, d).sum(2)
    dv = (p.transpose(-1, -2) @ do).view(B, hkv, group, sk, d).sum(2)
    return dq, dk, dv


def _canonical(layout: str, *xs: Tensor) -> tuple[Tensor, ...]:
    return xs if layout == "bhsd" else tuple(x.transpose(1, 2) for x in xs)


def flash_attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    return_lse: bool = False,
    deterministic: bool = False,
    layout: str = "bhsd",
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax attention, dense, in float32 (float64 for float64 input).

    Args:
        q: (B, Hq, Sq, D) for layout "bhsd", (B, Sq, Hq, D) for "bshd".
        k, v: (B, Hkv, Sk, D) / (B, Sk, Hkv, D); Hkv divides Hq (GQA: head h reads h // (Hq/Hkv)).
        causal: key j visible to query i iff j <= i + Sk - Sq (bottom-right aligned).
        softmax_scale: defaults to 1/sqrt(D).
        window: (left, right) sliding window, -1 unbounded.
        softcap: c > 0 replaces scores s by c·tanh(s/c) before masking.
        return_lse: also return lse (B, Hq, Sq), natural log, float32 (float64 for float64 input).
        deterministic: accepted for signature parity (the reference is deterministic).
        layout: "bhsd" or "bshd"; o has q's layout and dtype.

    A query row with no visible key gives o = 0 and lse = -inf.
    """
    del deterministic
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    qc, kc, vc = _canonical(layout, q, k, v)
    o, lse = _attention_bhsd(qc, kc, vc, scale, causal, tuple(window), float(softcap))
    o = _canonical(layout, o.to(q.dtype))[0]
    return (o, lse) if return_lse else o


def flash_attention_varlen_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    return_lse: bool = False,
    deterministic: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax attention over packed sequences, one sequence at a time.

    q: (total_q, Hq, D); k, v: (total_k, Hkv, D); cu_seqlens_q/k: int32 (N + 1,) offsets;
    sequence n is q[cu_q[n]:cu_q[n+1]] against k[cu_k[n]:cu_k[n+1]] with its own bottom-right
    alignment. Returns o (total_q, Hq, D) and, with ``return_lse``, lse (Hq, total_q).
    ``max_seqlen_q/k`` are accepted for signature parity (the reference does not need them).
    """
    del deterministic, max_seqlen_q, max_seqlen_k
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs, lses = [], []
    for n in range(len(cq) - 1):
        qs = q[cq[n] : cq[n + 1]].transpose(0, 1)[None]  # [1, Hq, sq, D]
        ks = k[ck[n] : ck[n + 1]].transpose(0, 1)[None]
        vs = v[ck[n] : ck[n + 1]].transpose(0, 1)[None]
        o, lse = _attention_bhsd(qs, ks, vs, scale, causal, tuple(window), float(softcap))
        outs.append(o[0].transpose(0, 1))
        lses.append(lse[0])
    o = torch.cat(outs, dim=0).to(q.dtype)
    lse = torch.cat(lses, dim=1)
    return (o, lse) if return_lse else o


def flash_attention_bwd_ref(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    dlse: Tensor | None = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    layout: str = "bhsd",
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of ``flash_attention_ref`` for the cotangents do (like o) and dlse (like lse,
    optional), by the explicit formulas (no autograd): Δ = rowsum(dO ∘ O) − dlse,
    dS = P ∘ (dO Vᵀ − Δ) (∘ (1 − tanh²) with softcap), dQ = scale·dS K, dK = scale·dSᵀ Q,
    dV = Pᵀ dO, summed over each GQA group. Gradients have the inputs' dtypes and layout."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    qc, kc, vc, doc = _canonical(layout, q, k, v, do)
    grads = _attention_bwd_bhsd(doc, qc, kc, vc, dlse, scale, causal, tuple(window), float(softcap))
    return tuple(_canonical(layout, g.to(x.dtype))[0] for g, x in zip(grads, (q, k, v), strict=True))


def flash_attention_varlen_bwd_ref(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    *,
    dlse: Tensor | None = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``flash_attention_bwd_ref`` for packed sequences (dlse: (Hq, total_q))."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    acc = acc_dtype(q.dtype)
    dq, dk, dv = (torch.zeros(x.shape, dtype=acc, device=x.device) for x in (q, k, v))
    for n in range(len(cq) - 1):
        rq, rk = slice(cq[n], cq[n + 1]), slice(ck[n], ck[n + 1])
        seq = [x[r].transpose(0, 1)[None] for x, r in ((do, rq), (q, rq), (k, rk), (v, rk))]
        dl = None if dlse is None else dlse[:, rq][None]
        grads = _attention_bwd_bhsd(*seq, dl, scale, causal, tuple(window), float(softcap))
        for dst, g, r in zip((dq, dk, dv), grads, (rq, rk, rk), strict=True):
            dst[r] = g[0].transpose(0, 1)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
