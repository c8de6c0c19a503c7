"""Triton backward of softmax attention, ../math.md §2, deterministic by construction.

Three kernels, no atomics, so every gradient is bitwise repeatable (``deterministic`` costs
nothing and changes nothing):

1. ``_attn_bwd_preprocess_kernel``: Δ_i = Σ_d dO_id O_id − dlse_i (the lse output's gradient enters
   as dS_ij += P_ij dlse_i, i.e. as −dlse in Δ).
2. ``_attn_bwd_dkdv_kernel``: a program per K/V tile of one key/value head keeps k, v and the dK,
   dV accumulators resident and loops over the query heads of its GQA group and, for each, over
   the query tiles that see the tile (the band, masked only on its boundary tiles). Works in the
   transposed orientation Sᵀ = K Qᵀ so that no tile is transposed in registers except q and dO.
3. ``_attn_bwd_dq_kernel``: a program per Q tile loops over the same key band as the forward.

On Hopper, at the head dims and in the scope of ``gluon_backward``, its Gluon dK/dV and dQ
kernels replace 2 and 3 (also deterministic: no atomics).

P is recomputed from the saved lse: P = exp2(S·log2 e − lse·log2 e); rows without a visible key
(lse = −inf) give P = 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _host
from . import gluon_backward
from .forward import (
    LOG2E,
    AttnConfig,
    LeanKernel,
    Problem,
    block_d,
    dot_precision,
    key_band,
    large_offsets,
    load_tile,
    lse_strides,
    pick_config,
    query_tile,
    scores,
    seq_info,
    split_band,
    strides4,
    visible,
)

Tensor = torch.Tensor


@triton.jit
def _attn_bwd_preprocess_kernel(
    p_o, p_do,  # canonical, any strides
    p_dlse,  # ACC like lse, or None
    p_delta,  # out: float32, like lse
    p_cu_q,
    s_ob, s_oh, s_os, s_od,
    s_db, s_dh, s_ds, s_dd,
    s_lb, s_lh,
    max_sq,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    HAS_DLSE: tl.constexpr,
    VARLEN: tl.constexpr,
):
    i_m, i_h, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos_q, sq, _, _ = seq_info(p_cu_q, p_cu_q, i_b, max_sq, max_sq, VARLEN)
    m0 = i_m * BLOCK_M
    if m0 >= sq:
        return
    i_b64, i_h64 = i_b.to(tl.int64), i_h.to(tl.int64)
    o_r = tl.arange(0, BLOCK_M)
    o_m = m0 + o_r
    o_d = tl.arange(0, BLOCK_D)
    m_m = o_m < sq
    m_md = m_m[:, None] & (o_d < HEAD_DIM)[None, :]
    row0 = bos_q + m0
    p_o += i_b64 * s_ob + i_h64 * s_oh + row0 * s_os
    p_do += i_b64 * s_db + i_h64 * s_dh + row0 * s_ds
    # [BLOCK_M, BLOCK_D]
    b_o = tl.load(p_o + o_r[:, None] * s_os + o_d[None, :] * s_od, mask=m_md, other=0.0).to(tl.float32)
    b_do = tl.load(p_do + o_r[:, None] * s_ds + o_d[None, :] * s_dd, mask=m_md, other=0.0).to(tl.float32)
    b_delta = tl.sum(b_o * b_do, 1)
    l_off = i_b64 * s_lb + i_h64 * s_lh + bos_q
    if HAS_DLSE:
        b_delta -= tl.load(p_dlse + l_off + o_m, mask=m_m, other=0.0).to(tl.float32)
    tl.store(p_delta + l_off + o_m, b_delta, mask=m_m)


@triton.jit
def _row_stats(p_lse, p_delta, o_m, m_m, MASK: tl.constexpr):
    """[BLOCK_M] lse in log2 units (0 for rows without a visible key, whose P is 0) and Δ."""
    b_lse = load_tile(p_lse + o_m, m_m, m_m, MASK, False).to(tl.float32)
    b_lse = tl.where(b_lse == float("-inf"), 0.0, b_lse * LOG2E)
    return b_lse, load_tile(p_delta + o_m, m_m, m_m, MASK, False)


@triton.jit
def _dkdv_tiles(
    b_dk, b_dv, b_k, b_v, p_q, p_do, p_lse, p_delta, s_qs, s_qd, s_ds, s_dd, o_n, o_d,
    start, end, sq, sk, wl, wr, scale, softcap,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, MASK: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, DOT_PREC: tl.constexpr,
    LARGE: tl.constexpr,
):
    """Accumulate dK (unscaled) and dV of one key tile over query tiles [start, end); p_q, p_do
    point at the sequence's first row (offsets from it in int64 when LARGE)."""
    PAD_D: tl.constexpr = HEAD_DIM != BLOCK_D
    m_d = o_d < HEAD_DIM
    o_t = tl.arange(0, BLOCK_M)
    for m0 in range(start, end, BLOCK_M):
        o_m = m0 + o_t
        m_m = o_m < sq
        o_p = o_m.to(tl.int64) if LARGE else o_m
        # [BLOCK_M, BLOCK_D]
        b_q = load_tile(p_q + o_p[:, None] * s_qs + o_d[None, :] * s_qd, m_m[:, None], m_d[None, :], MASK, PAD_D)
        b_do = load_tile(p_do + o_p[:, None] * s_ds + o_d[None, :] * s_dd, m_m[:, None], m_d[None, :], MASK, PAD_D)
        b_lse, b_delta = _row_stats(p_lse, p_delta, o_m, m_m, MASK)
        # [BLOCK_N, BLOCK_M]
        b_st, b_t = scores(tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PREC), scale, softcap, SOFTCAP)
        if MASK:
            b_st = tl.where(visible(o_m[None, :], o_n[:, None], sq, sk, wl, wr, HAS_LEFT, HAS_RIGHT), b_st, float("-inf"))
        b_pt = tl.exp2(b_st - b_lse[None, :])
        b_dv = tl.dot(b_pt.to(b_do.dtype), b_do, b_dv, input_precision=DOT_PREC)
        b_dpt = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PREC)
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        if SOFTCAP:
            b_dst = b_dst * (1.0 - b_t * b_t)
        b_dk = tl.dot(b_dst.to(b_q.dtype), b_q, b_dk, input_precision=DOT_PREC)
    return b_dk, b_dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    p_q, p_k, p_v, p_do, p_dk, p_dv,  # canonical, any strides; dk, dv like k, v
    p_lse, p_delta,  # like lse
    p_cu_q, p_cu_k,
    s_qb, s_qh, s_qs, s_qd,
    s_kb, s_kh, s_ks, s_kd,
    s_vb, s_vh, s_vs, s_vd,
    s_db, s_dh, s_ds, s_dd,  # dO
    s_dkb, s_dkh, s_dks, s_dkd,
    s_dvb, s_dvh, s_dvs, s_dvd,
    s_lb, s_lh,
    max_sq, max_sk, group, wl, wr,
    scale, softcap,  # floats last (LeanKernel's argument order)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_LEFT: tl.constexpr,
    HAS_RIGHT: tl.constexpr,
    SOFTCAP: tl.constexpr,
    VARLEN: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LARGE: tl.constexpr,
):
    i_n, i_hk, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos_q, sq, bos_k, sk = seq_info(p_cu_q, p_cu_k, i_b, max_sq, max_sk, VARLEN)
    n0 = i_n * BLOCK_N
    if n0 >= sk:
        return
    i_b64, i_hk64 = i_b.to(tl.int64), i_hk.to(tl.int64)
    o_r = tl.arange(0, BLOCK_N)
    o_n = n0 + o_r
    o_d = tl.arange(0, BLOCK_D)
    m_nd = (o_n < sk)[:, None] & (o_d < HEAD_DIM)[None, :]
    row0 = bos_k + n0  # int64: first key of the tile
    p_k += i_b64 * s_kb + i_hk64 * s_kh + row0 * s_ks
    p_v += i_b64 * s_vb + i_hk64 * s_vh + row0 * s_vs
    # [BLOCK_N, BLOCK_D]
    b_k = tl.load(p_k + o_r[:, None] * s_ks + o_d[None, :] * s_kd, mask=m_nd, other=0.0)
    b_v = tl.load(p_v + o_r[:, None] * s_vs + o_d[None, :] * s_vd, mask=m_nd, other=0.0)
    b_dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    b_dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    # query rows that see keys [n0, n0 + BLOCK_N): i >= j - off - wr and i <= j - off + wl
    off = sk - sq
    n_last = tl.minimum(n0 + BLOCK_N, sk) - 1
    lo = 0
    hi = sq
    full_lo = 0
    full_hi = sq
    if HAS_RIGHT:
        lo = tl.maximum(n0 - off - wr, 0)
        full_lo = n0 + BLOCK_N - 1 - off - wr
    if HAS_LEFT:
        hi = tl.minimum(n_last - off + wl + 1, sq)
        full_hi = tl.minimum(n0 - off + wl + 1, sq)
    full_hi = tl.where(n0 + BLOCK_N <= sk, full_hi, 0)  # a partial key tile is masked throughout
    a, b, c, d = split_band(lo, hi, full_lo, full_hi, BLOCK_M)
    for i_g in range(group):
        i_h64 = i_hk64 * group + i_g
        p_qh = p_q + i_b64 * s_qb + i_h64 * s_qh + bos_q * s_qs
        p_doh = p_do + i_b64 * s_db + i_h64 * s_dh + bos_q * s_ds
        l_off = i_b64 * s_lb + i_h64 * s_lh + bos_q
        b_dk, b_dv = _dkdv_tiles(
            b_dk, b_dv, b_k, b_v, p_qh, p_doh, p_lse + l_off, p_delta + l_off, s_qs, s_qd, s_ds, s_dd, o_n, o_d,
            a, b, sq, sk, wl, wr, scale, softcap,
            HEAD_DIM, BLOCK_D, BLOCK_M, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
        )
        b_dk, b_dv = _dkdv_tiles(
            b_dk, b_dv, b_k, b_v, p_qh, p_doh, p_lse + l_off, p_delta + l_off, s_qs, s_qd, s_ds, s_dd, o_n, o_d,
            b, c, sq, sk, wl, wr, scale, softcap,
            HEAD_DIM, BLOCK_D, BLOCK_M, False, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
        )
        b_dk, b_dv = _dkdv_tiles(
            b_dk, b_dv, b_k, b_v, p_qh, p_doh, p_lse + l_off, p_delta + l_off, s_qs, s_qd, s_ds, s_dd, o_n, o_d,
            c, d, sq, sk, wl, wr, scale, softcap,
            HEAD_DIM, BLOCK_D, BLOCK_M, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
        )
    p_dk += i_b64 * s_dkb + i_hk64 * s_dkh + row0 * s_dks
    p_dv += i_b64 * s_dvb + i_hk64 * s_dvh + row0 * s_dvs
    tl.store(p_dk + o_r[:, None] * s_dks + o_d[None, :] * s_dkd, (b_dk * scale).to(p_dk.dtype.element_ty), mask=m_nd)
    tl.store(p_dv + o_r[:, None] * s_dvs + o_d[None, :] * s_dvd, b_dv.to(p_dv.dtype.element_ty), mask=m_nd)


@triton.jit
def _dq_tiles(
    b_dq, b_q, b_do, b_lse, b_delta, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d,
    start, end, sq, sk, wl, wr, scale, softcap,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, DOT_PREC: tl.constexpr,
    LARGE: tl.constexpr,
):
    """Accumulate dQ (unscaled) of one query tile over key tiles [start, end); p_k, p_v point at
    the sequence's first key (offsets from it in int64 when LARGE)."""
    PAD_D: tl.constexpr = HEAD_DIM != BLOCK_D
    m_d = o_d < HEAD_DIM
    o_t = tl.arange(0, BLOCK_N)
    for n0 in range(start, end, BLOCK_N):
        o_n = n0 + o_t
        m_n = o_n < sk
        o_p = o_n.to(tl.int64) if LARGE else o_n
        # [BLOCK_D, BLOCK_N]
        b_kt = load_tile(p_k + o_p[None, :] * s_ks + o_d[:, None] * s_kd, m_n[None, :], m_d[:, None], MASK, PAD_D)
        b_vt = load_tile(p_v + o_p[None, :] * s_vs + o_d[:, None] * s_vd, m_n[None, :], m_d[:, None], MASK, PAD_D)
        # [BLOCK_M, BLOCK_N]
        b_s, b_t = scores(tl.dot(b_q, b_kt, input_precision=DOT_PREC), scale, softcap, SOFTCAP)
        if MASK:
            b_s = tl.where(visible(o_m[:, None], o_n[None, :], sq, sk, wl, wr, HAS_LEFT, HAS_RIGHT), b_s, float("-inf"))
        b_p = tl.exp2(b_s - b_lse[:, None])
        b_dp = tl.dot(b_do, b_vt, input_precision=DOT_PREC)
        b_ds = b_p * (b_dp - b_delta[:, None])
        if SOFTCAP:
            b_ds = b_ds * (1.0 - b_t * b_t)
        b_dq = tl.dot(b_ds.to(b_kt.dtype), tl.trans(b_kt), b_dq, input_precision=DOT_PREC)
    return b_dq


@triton.jit
def _attn_bwd_dq_kernel(
    p_q, p_k, p_v, p_do, p_dq,
    p_lse, p_delta,
    p_cu_q, p_cu_k,
    s_qb, s_qh, s_qs, s_qd,
    s_kb, s_kh, s_ks, s_kd,
    s_vb, s_vh, s_vs, s_vd,
    s_db, s_dh, s_ds, s_dd,
    s_dqb, s_dqh, s_dqs, s_dqd,
    s_lb, s_lh,
    max_sq, max_sk, group, wl, wr,
    scale, softcap,  # floats last (LeanKernel's argument order)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_LEFT: tl.constexpr,
    HAS_RIGHT: tl.constexpr,
    SOFTCAP: tl.constexpr,
    VARLEN: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LARGE: tl.constexpr,
):
    i_m, i_h, i_b = query_tile(HAS_RIGHT), tl.program_id(1), tl.program_id(2)
    bos_q, sq, bos_k, sk = seq_info(p_cu_q, p_cu_k, i_b, max_sq, max_sk, VARLEN)
    m0 = i_m * BLOCK_M
    if m0 >= sq:
        return
    i_b64, i_h64 = i_b.to(tl.int64), i_h.to(tl.int64)
    i_hk64 = (i_h // group).to(tl.int64)
    o_r = tl.arange(0, BLOCK_M)
    o_m = m0 + o_r
    o_d = tl.arange(0, BLOCK_D)
    m_m = o_m < sq
    m_md = m_m[:, None] & (o_d < HEAD_DIM)[None, :]
    row0 = bos_q + m0  # int64: first row of the tile
    p_q += i_b64 * s_qb + i_h64 * s_qh + row0 * s_qs
    p_do += i_b64 * s_db + i_h64 * s_dh + row0 * s_ds
    p_k += i_b64 * s_kb + i_hk64 * s_kh + bos_k * s_ks
    p_v += i_b64 * s_vb + i_hk64 * s_vh + bos_k * s_vs
    l_off = i_b64 * s_lb + i_h64 * s_lh + bos_q
    # [BLOCK_M, BLOCK_D]
    b_q = tl.load(p_q + o_r[:, None] * s_qs + o_d[None, :] * s_qd, mask=m_md, other=0.0)
    b_do = tl.load(p_do + o_r[:, None] * s_ds + o_d[None, :] * s_dd, mask=m_md, other=0.0)
    b_lse, b_delta = _row_stats(p_lse + l_off, p_delta + l_off, o_m, m_m, True)
    b_dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    a, b, c, d = key_band(m0, sq, sk, wl, wr, BLOCK_M, BLOCK_N, HAS_LEFT, HAS_RIGHT)
    b_dq = _dq_tiles(
        b_dq, b_q, b_do, b_lse, b_delta, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d, a, b, sq, sk, wl, wr,
        scale, softcap, HEAD_DIM, BLOCK_D, BLOCK_N, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
    )
    b_dq = _dq_tiles(
        b_dq, b_q, b_do, b_lse, b_delta, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d, b, c, sq, sk, wl, wr,
        scale, softcap, HEAD_DIM, BLOCK_D, BLOCK_N, False, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
    )
    b_dq = _dq_tiles(
        b_dq, b_q, b_do, b_lse, b_delta, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d, c, d, sq, sk, wl, wr,
        scale, softcap, HEAD_DIM, BLOCK_D, BLOCK_N, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
    )
    p_dq += i_b64 * s_dqb + i_h64 * s_dqh + row0 * s_dqs
    tl.store(p_dq + o_r[:, None] * s_dqs + o_d[None, :] * s_dqd, (b_dq * scale).to(p_dq.dtype.element_ty), mask=m_md)


def attention_backward(
    do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dlse: Tensor | None,
    dq: Tensor, dk: Tensor, dv: Tensor, prob: Problem,
) -> None:
    """Launch the backward on canonical tensors: writes dq, dk, dv (like q, k, v)."""
    varlen = prob.varlen
    delta = torch.empty(lse.shape, dtype=torch.float32, device=lse.device)
    if dlse is not None and dlse.stride() != lse.stride():
        dlse = dlse.contiguous()
    head_dim, max_sq, dtype = prob.head_dim, prob.max_sq, q.dtype
    s_q, s_k, s_v, s_do = strides4(q, varlen), strides4(k, varlen), strides4(v, varlen), strides4(do, varlen)
    s_lse = lse_strides(lse, varlen)
    flags = (prob.has_left, prob.has_right, prob.softcap > 0, varlen, large_offsets(q, k, v, do, dq, dk, dv))

    def options(cfg: AttnConfig) -> dict:
        has_left, has_right, softcap, varlen, large = flags
        return dict(
            HEAD_DIM=head_dim, BLOCK_D=block_d(head_dim), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
            HAS_LEFT=has_left, HAS_RIGHT=has_right, SOFTCAP=softcap, VARLEN=varlen,
            DOT_PREC=dot_precision(dtype, head_dim), LARGE=large, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )

    band = (max_sq, prob.max_sk, prob.hq // prob.hkv, prob.wl, prob.wr)
    floats = (prob.scale, prob.softcap or 1.0)
    pre, has_dlse = pick_config("delta", head_dim, False, q.element_size()), dlse is not None
    _PRE(
        (_host.cdiv(max(max_sq, 1), pre.block_m), prob.hq, prob.n_seq),
        (dtype, None if dlse is None else dlse.dtype, pre, head_dim, varlen),
        (o, do, dlse, delta, prob.cu_q), (*strides4(o, varlen), *s_do, *s_lse, max_sq), (),
        lambda: dict(
            HEAD_DIM=head_dim, BLOCK_D=block_d(head_dim), BLOCK_M=pre.block_m, HAS_DLSE=has_dlse, VARLEN=varlen,
            num_warps=pre.num_warps,
        ),
    )
    gluon_dkdv, gluon_dq = gluon_backward.plan(q, k, v, do, dq, dk, dv, prob)
    if gluon_dkdv:
        gluon_backward.attention_dkdv(q, k, v, do, dk, dv, lse, delta, prob)
    else:
        cfg = pick_config("dkdv", head_dim, False, q.element_size())
        _DKDV(
            (_host.cdiv(max(prob.max_sk, 1), cfg.block_n), prob.hkv, prob.n_seq), (dtype, cfg, head_dim, flags),
            (q, k, v, do, dk, dv, lse, delta, prob.cu_q, prob.cu_k),
            (*s_q, *s_k, *s_v, *s_do, *strides4(dk, varlen), *strides4(dv, varlen), *s_lse, *band), floats,
            lambda cfg=cfg: options(cfg),
        )
    if gluon_dq:
        gluon_backward.attention_dq(q, k, v, do, dq, lse, delta, prob)
        return
    cfg = pick_config("dq", head_dim, False, q.element_size())
    _DQ(
        (_host.cdiv(max(max_sq, 1), cfg.block_m), prob.hq, prob.n_seq), (dtype, cfg, head_dim, flags),
        (q, k, v, do, dq, lse, delta, prob.cu_q, prob.cu_k),
        (*s_q, *s_k, *s_v, *s_do, *strides4(dq, varlen), *s_lse, *band), floats,
        lambda cfg=cfg: options(cfg),
    )


_PRE = LeanKernel(_attn_bwd_preprocess_kernel)
_DKDV = LeanKernel(_attn_bwd_dkdv_kernel)
_DQ = LeanKernel(_attn_bwd_dq_kernel)
