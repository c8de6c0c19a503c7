"""Triton kernels for fused α-diffmax attention, O = diffmax_α(scale · Q Kᵀ + masks) V, forward
and backward, never forming the Sq × Sk matrix (../math.md §3).

With X'_ij = (1 − α) · scale · q_i·k_j, k = 1 / (1 − α) and y_ij = [X'_ij − τ_i]_+, the forward
program owns BLOCK_M queries of one head and streams the visible K tiles (causal / window band):

1. one pass for the row max m_i (τ starts at the bracket's low end m_i − 1);
2. Newton passes on F(τ_i) = ‖y_i‖_k − 1 (rows.py explains why this converges monotonically from
   below in a few steps), each streaming K for S_i = Σ_j y^k and T_i = Σ_j y^(k−1), until every
   row's step is below ``tol``, or predicted to leave an error below it (quadratic convergence),
   or ``n_iter`` steps. As τ only rises, a tile found all-zero stays zero: its state is recorded
   (int8 per (query tile, key tile): 0 outside the band, 1 live, 2 zero) and later passes skip it
   without loading K;
3. the output pass over live tiles: O = Σ_j y^k v_j / S_i with S_i summed in the same pass at the
   final τ (deferred normalisation, as FlashAttention's), so the last Newton step needs no pass of
   its own.

τ_i, 1/S_i and the tile states are saved. The backward skips zero tiles too:
``_attn_bwd_dq_kernel`` (program per query tile) accumulates u_i = Σ_j s_ij v_j and C_i = Σ_j s_ij
with s = P^α = y^(k−1) / S^α, stores Δ_i = dO_i·u_i / C_i, then dQ = scale Σ_j dS_ij k_j with
dS = s ⊙ (dO Vᵀ − Δ); ``_attn_bwd_dkdv_kernel`` (program per key tile, looping over the group's query
heads, so GQA needs no atomics) gives dV = Pᵀ dO and dK = scale dSᵀ Q. Deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor


@dataclass(frozen=True)
class AttnConfig:
    """Query and key tile sizes (shared by forward and backward: the tile states are per tile)."""

    block_m: int
    block_n: int
    num_warps: int


def pick_config(head_dim: int, itemsize: int) -> AttnConfig:
    """64 × 64 tiles (32 × 32 for float64); 4 warps."""
    if itemsize == 8:
        return AttnConfig(32, 32, 4)
    return AttnConfig(64, 64, 4)


@triton.jit
def _powers(y, k, POW: tl.constexpr):
    """(y^(k−1), y^k) for y ≥ 0 (0 where y = 0)."""
    if POW == 2:
        ykm1 = y
    elif POW == 3:
        ykm1 = y * y
    elif POW == 4:
        ykm1 = y * y * y
    else:
        ykm1 = tl.exp((k - 1.0) * tl.log(y))
    return ykm1, ykm1 * y


@triton.jit
def _band(i_m, Sq, Sk, wl, wr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key tiles [n_lo, n_hi) holding a key visible to some query of query tile i_m."""
    off = Sk - Sq
    i_first = i_m * BLOCK_M
    i_last = tl.minimum(Sq, i_first + BLOCK_M) - 1
    j_hi = Sk - 1
    if CAUSAL:
        j_hi = tl.minimum(j_hi, i_last + off)
    if HAS_WR:
        j_hi = tl.minimum(j_hi, i_last + off + wr)
    j_lo = 0
    if HAS_WL:
        j_lo = tl.maximum(j_lo, i_first + off - wl)
    n_lo = j_lo // BLOCK_N
    n_hi = tl.where(j_hi >= j_lo, (j_hi + BLOCK_N) // BLOCK_N, n_lo)
    return n_lo, n_hi


@triton.jit
def _visible(o_m, o_n, Sq, Sk, wl, wr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """[BLOCK_M, BLOCK_N] key j visible to query i (../math.md §2)."""
    i = o_m[:, None] + (Sk - Sq)
    j = o_n[None, :]
    vis = (o_m[:, None] < Sq) & (j < Sk)
    if CAUSAL:
        vis &= j <= i
    if HAS_WL:
        vis &= j >= i - wl
    if HAS_WR:
        vis &= j <= i + wr
    return vis


@triton.jit
def _load_k(p_kb, o_n, o_d, s_kn, Sk, D):
    """[BLOCK_N, BLOCK_D] one key tile (zeros outside)."""
    return tl.load(p_kb + o_n[:, None].to(tl.int64) * s_kn + o_d[None, :], mask=(o_n[:, None] < Sk) & (o_d[None, :] < D), other=0.0)


@triton.jit
def _scores(b_q, b_k, o_n, c, o_m, Sq, Sk, wl, wr,
            CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, ACC: tl.constexpr,
            PREC: tl.constexpr):
    """[BLOCK_M, BLOCK_N] X' = c · q kᵀ of one key tile, −inf where not visible (the mask is
    applied only to tiles that are not entirely visible: boundary, diagonal and band-edge tiles)."""
    b_x = tl.dot(b_q, tl.trans(b_k), out_dtype=ACC, input_precision=PREC) * c
    i_first = tl.min(o_m, 0) + (Sk - Sq)
    i_last = tl.max(o_m, 0) + (Sk - Sq)
    j_last = tl.max(o_n, 0)
    inside = (tl.max(o_m, 0) < Sq) & (j_last < Sk)
    if CAUSAL:
        inside = inside & (j_last <= i_first)
    if HAS_WL:
        inside = inside & (tl.min(o_n, 0) >= i_last - wl)
    if HAS_WR:
        inside = inside & (j_last <= i_first + wr)
    if not inside:
        b_x = tl.where(_visible(o_m, o_n, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR), b_x, float("-inf"))
    return b_x


@triton.jit
def _newton_sums(b_q, p_kb, p_stb, b_tau, n_lo, n_hi, o_bn, o_d, sk_s, Sk, D, c, k, o_m, Sq, wl, wr,
                 CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr, POW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_M] (S, T) = (Σ_j y^k, Σ_j y^(k−1)) at τ over the live key tiles; records each
    tile's state (1 live, 2 all zero at this τ, hence at every later τ)."""
    b_s = tl.zeros([BLOCK_M], ACC)
    b_t = tl.zeros([BLOCK_M], ACC)
    for i_n in range(n_lo, n_hi):
        if tl.load(p_stb + i_n) != 2:
            b_x = _scores(b_q, _load_k(p_kb, i_n * BLOCK_N + o_bn, o_d, sk_s, Sk, D), i_n * BLOCK_N + o_bn, c, o_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC)
            b_y = tl.maximum(b_x - b_tau[:, None], 0.0)
            b_ykm1, b_yk = _powers(b_y, k, POW)
            b_s += tl.sum(b_yk, 1)
            b_t += tl.sum(b_ykm1, 1)
            tl.store(p_stb + i_n, tl.where(tl.max(tl.max(b_y, 1), 0) > 0, 1, 2).to(tl.int8))
    return b_s, b_t


@triton.jit
def _newton_step(b_s, b_t, k):
    """Newton step on F(τ) = S^(1/k) − 1 per row: (S − S^(1−1/k)) / T; 0 for an empty row."""
    s_pow = tl.exp((1.0 - 1.0 / k) * tl.log(b_s))
    return tl.where(b_t > 0, (b_s - s_pow) / tl.where(b_t > 0, b_t, 1.0), 0.0)


@triton.jit
def _attn_fwd_kernel(
    p_q, p_k, p_v, p_o,  # (B, H, S, D) with strides (s_b, s_h, s_s, 1)
    p_tau, p_rn,  # out: ACC (B, Hq, Sq) τ and 1/S per row
    p_st,  # out: int8 (B, Hq, n_m, n_n) tile states, zeroed
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
    Hq, G, Sq, Sk, D, DV, n_m, n_n,
    p_cst,  # ACC [5]: c = (1 − α) · scale, k = 1 / (1 − α), α, scale, tol (ACC-exact scalars)
    wl, wr,
    n_iter,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
    POW: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // Hq
    i_h = i_bh % Hq
    i_kh = i_h // G
    c = tl.load(p_cst)
    k = tl.load(p_cst + 1)
    tol = tl.load(p_cst + 4)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    o_bn = tl.arange(0, BLOCK_N)
    p_qb = p_q + i_b * sq_b + i_h * sq_h
    p_kb = p_k + i_b * sk_b + i_kh * sk_h
    p_vb = p_v + i_b * sv_b + i_kh * sv_h
    p_stb = p_st + (i_bh * n_m + i_m) * n_n
    # [BLOCK_M, BLOCK_D]
    b_q = tl.load(p_qb + o_m[:, None].to(tl.int64) * sq_s + o_d[None, :], mask=(o_m[:, None] < Sq) & (o_d[None, :] < D), other=0.0)
    n_lo, n_hi = _band(i_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, BLOCK_M, BLOCK_N)

    b_m = tl.full([BLOCK_M], float("-inf"), ACC)
    for i_n in range(n_lo, n_hi):
        b_x = _scores(b_q, _load_k(p_kb, i_n * BLOCK_N + o_bn, o_d, sk_s, Sk, D), i_n * BLOCK_N + o_bn, c, o_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC)
        b_m = tl.maximum(b_m, tl.max(b_x, 1))
    # [BLOCK_M] visible keys per row, for the bracket's upper end
    i_row = o_m + (Sk - Sq)
    j_hi = (Sk - 1) + tl.zeros([BLOCK_M], tl.int32)
    if CAUSAL:
        j_hi = tl.minimum(j_hi, i_row)
    if HAS_WR:
        j_hi = tl.minimum(j_hi, i_row + wr)
    j_lo = tl.zeros([BLOCK_M], tl.int32)
    if HAS_WL:
        j_lo = tl.maximum(j_lo, i_row - wl)
    b_cnt = tl.maximum(j_hi - j_lo + 1, 0).to(ACC)
    empty = b_m == float("-inf")
    b_m = tl.where(empty, 0.0, b_m)
    tau_lo = b_m - 1.0
    tau_hi = b_m - tl.exp(-(1.0 / k) * tl.log(tl.maximum(b_cnt, 1.0)))
    b_tau = tau_lo
    b_s, b_t = _newton_sums(b_q, p_kb, p_stb, b_tau, n_lo, n_hi, o_bn, o_d, sk_s, Sk, D, c, k, o_m, Sq, wl, wr,
                            CAUSAL, HAS_WL, HAS_WR, ACC, PREC, POW, BLOCK_M, BLOCK_N)
    b_step = _newton_step(b_s, b_t, k)
    b_prev = tl.full([BLOCK_M], float("inf"), ACC)
    # a row is live while its step rises by more than tol and shrinks (exact steps shrink
    # monotonically; one that does not is rounding noise). Convergence is quadratic: once the
    # error predicted after a step, step³ / previous step², is below tol, the step is the row's
    # last and the output pass measures S at the final τ (no pass just to confirm it).
    b_live = b_step > tol * (1.0 + tl.abs(b_tau))
    it = 0
    while (it < n_iter) & (tl.max(b_live.to(tl.int32), 0) > 0):
        b_tol = tol * (1.0 + tl.abs(b_tau))
        b_last = (b_prev < float("inf")) & (b_step * b_step * b_step <= b_tol * b_prev * b_prev)
        b_tau = tl.where(b_live, tl.minimum(tl.maximum(b_tau + b_step, tau_lo), tau_hi), b_tau)
        b_live = b_live & (b_last == 0)
        if tl.max(b_live.to(tl.int32), 0) > 0:
            b_s, b_t = _newton_sums(b_q, p_kb, p_stb, b_tau, n_lo, n_hi, o_bn, o_d, sk_s, Sk, D, c, k, o_m, Sq, wl, wr,
                                    CAUSAL, HAS_WL, HAS_WR, ACC, PREC, POW, BLOCK_M, BLOCK_N)
            b_prev = tl.where(b_live, b_step, b_prev)
            b_step = _newton_step(b_s, b_t, k)
            b_live = b_live & (b_step > tol * (1.0 + tl.abs(b_tau))) & (b_step < b_prev)
        it += 1

    # output pass over the live tiles: O = Σ_j y^k v_j / S, with S = Σ_j y^k at the final τ
    b_o = tl.zeros([BLOCK_M, BLOCK_DV], ACC)
    b_s = tl.zeros([BLOCK_M], ACC)
    for i_n in range(n_lo, n_hi):
        if tl.load(p_stb + i_n) != 2:
            o_n = i_n * BLOCK_N + o_bn
            b_x = _scores(b_q, _load_k(p_kb, o_n, o_d, sk_s, Sk, D), o_n, c, o_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC)
            b_y = tl.maximum(b_x - b_tau[:, None], 0.0)
            _, b_p = _powers(b_y, k, POW)
            b_s += tl.sum(b_p, 1)
            # [BLOCK_N, BLOCK_DV]
            b_v = tl.load(p_vb + o_n[:, None].to(tl.int64) * sv_s + o_dv[None, :], mask=(o_n[:, None] < Sk) & (o_dv[None, :] < DV), other=0.0)
            b_o += tl.dot(b_p.to(b_v.dtype), b_v, out_dtype=ACC, input_precision=PREC)
            if tl.max(tl.max(b_y, 1), 0) <= 0:
                tl.store(p_stb + i_n, tl.full([], 2, tl.int8))
    b_rn = tl.where(b_s > 0, 1.0 / tl.where(b_s > 0, b_s, 1.0), 0.0)
    b_o = b_o * b_rn[:, None]
    p_ob = p_o + i_b * so_b + i_h * so_h
    tl.store(p_ob + o_m[:, None].to(tl.int64) * so_s + o_dv[None, :], b_o.to(p_o.dtype.element_ty), mask=(o_m[:, None] < Sq) & (o_dv[None, :] < DV))
    o_row = i_bh * Sq + o_m
    tl.store(p_tau + o_row, tl.where(empty, float("-inf"), b_tau), mask=o_m < Sq)
    tl.store(p_rn + o_row, b_rn, mask=o_m < Sq)


@triton.jit
def _attn_bwd_dq_kernel(
    p_q, p_k, p_v, p_do, p_dq,  # (B, H, S, D) with strides (s_b, s_h, s_s, 1); dq like q
    p_tau, p_rn, p_st,  # from the forward
    p_delta,  # out: ACC (B, Hq, Sq) Δ_i = dO_i·u_i / C_i
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sg_b, sg_h, sg_s, sd_b, sd_h, sd_s,
    Hq, G, Sq, Sk, D, DV, n_m, n_n,
    p_cst,  # ACC [5]: c, k, α, scale, tol
    wl, wr,
    ACC: tl.constexpr, PREC: tl.constexpr, POW: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // Hq
    i_h = i_bh % Hq
    i_kh = i_h // G
    c, k, alpha, scale = tl.load(p_cst), tl.load(p_cst + 1), tl.load(p_cst + 2), tl.load(p_cst + 3)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    o_bn = tl.arange(0, BLOCK_N)
    p_kb = p_k + i_b * sk_b + i_kh * sk_h
    p_vb = p_v + i_b * sv_b + i_kh * sv_h
    p_stb = p_st + (i_bh * n_m + i_m) * n_n
    m_m = o_m < Sq
    b_q = tl.load(p_q + i_b * sq_b + i_h * sq_h + o_m[:, None].to(tl.int64) * sq_s + o_d[None, :], mask=m_m[:, None] & (o_d[None, :] < D), other=0.0)
    # [BLOCK_M, BLOCK_DV]
    b_do = tl.load(p_do + i_b * sg_b + i_h * sg_h + o_m[:, None].to(tl.int64) * sg_s + o_dv[None, :], mask=m_m[:, None] & (o_dv[None, :] < DV), other=0.0)
    o_row = i_bh * Sq + o_m
    b_tau = tl.load(p_tau + o_row, mask=m_m, other=0.0)
    b_rn = tl.load(p_rn + o_row, mask=m_m, other=0.0)
    b_tau = tl.where(b_rn > 0, b_tau, 0.0)  # rows with no visible key: τ = −inf, all weights 0
    b_rna = tl.where(b_rn > 0, tl.exp(alpha * tl.log(tl.where(b_rn > 0, b_rn, 1.0))), 0.0)  # S^−α
    n_lo, n_hi = _band(i_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, BLOCK_M, BLOCK_N)
    b_u = tl.zeros([BLOCK_M, BLOCK_DV], ACC)
    b_c = tl.zeros([BLOCK_M], ACC)
    for i_n in range(n_lo, n_hi):
        if tl.load(p_stb + i_n) == 1:
            o_n = i_n * BLOCK_N + o_bn
            b_x = _scores(b_q, _load_k(p_kb, o_n, o_d, sk_s, Sk, D), o_n, c, o_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC)
            b_sw, _ = _powers(tl.maximum(b_x - b_tau[:, None], 0.0), k, POW)
            b_sw = b_sw * b_rna[:, None]
            b_v = tl.load(p_vb + o_n[:, None].to(tl.int64) * sv_s + o_dv[None, :], mask=(o_n[:, None] < Sk) & (o_dv[None, :] < DV), other=0.0)
            b_u += tl.dot(b_sw.to(b_v.dtype), b_v, out_dtype=ACC, input_precision=PREC)
            b_c += tl.sum(b_sw, 1)
    b_delta = tl.where(b_c > 0, tl.sum(b_do.to(ACC) * b_u, 1) / tl.where(b_c > 0, b_c, 1.0), 0.0)
    tl.store(p_delta + o_row, b_delta, mask=m_m)
    b_dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    for i_n in range(n_lo, n_hi):
        if tl.load(p_stb + i_n) == 1:
            o_n = i_n * BLOCK_N + o_bn
            b_k = _load_k(p_kb, o_n, o_d, sk_s, Sk, D)
            b_x = _scores(b_q, b_k, o_n, c, o_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC)
            b_sw, _ = _powers(tl.maximum(b_x - b_tau[:, None], 0.0), k, POW)
            b_sw = b_sw * b_rna[:, None]
            # [BLOCK_DV, BLOCK_N]
            b_vt = tl.load(p_vb + o_n[None, :].to(tl.int64) * sv_s + o_dv[:, None], mask=(o_n[None, :] < Sk) & (o_dv[:, None] < DV), other=0.0)
            b_dp = tl.dot(b_do, b_vt, out_dtype=ACC, input_precision=PREC)
            b_ds = b_sw * (b_dp - b_delta[:, None])
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, out_dtype=ACC, input_precision=PREC)
    tl.store(p_dq + i_b * sd_b + i_h * sd_h + o_m[:, None].to(tl.int64) * sd_s + o_d[None, :], (b_dq * scale).to(p_dq.dtype.element_ty), mask=m_m[:, None] & (o_d[None, :] < D))


@triton.jit
def _attn_bwd_dkdv_kernel(
    p_q, p_k, p_v, p_do, p_dk, p_dv,  # (B, H, S, D) with strides (s_b, s_h, s_s, 1); dk, dv like k, v
    p_tau, p_rn, p_st, p_delta,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sg_b, sg_h, sg_s,
    sdk_b, sdk_h, sdk_s, sdv_b, sdv_h, sdv_s,
    Hq, Hkv, G, Sq, Sk, D, DV, n_m, n_n,
    p_cst,  # ACC [5]: c, k, α, scale, tol
    wl, wr,
    ACC: tl.constexpr, PREC: tl.constexpr, POW: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_bkh = tl.program_id(1).to(tl.int64)
    i_b = i_bkh // Hkv
    i_kh = i_bkh % Hkv
    c, k, alpha, scale = tl.load(p_cst), tl.load(p_cst + 1), tl.load(p_cst + 2), tl.load(p_cst + 3)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    o_bm = tl.arange(0, BLOCK_M)
    m_n = o_n < Sk
    p_kb = p_k + i_b * sk_b + i_kh * sk_h
    # [BLOCK_N, BLOCK_D], [BLOCK_N, BLOCK_DV]
    b_k = _load_k(p_kb, o_n, o_d, sk_s, Sk, D)
    b_v = tl.load(p_v + i_b * sv_b + i_kh * sv_h + o_n[:, None].to(tl.int64) * sv_s + o_dv[None, :], mask=m_n[:, None] & (o_dv[None, :] < DV), other=0.0)
    b_dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    b_dv = tl.zeros([BLOCK_N, BLOCK_DV], ACC)
    for i_g in range(0, G):
        i_h = i_kh * G + i_g
        i_bh = i_b * Hq + i_h
        p_qb = p_q + i_b * sq_b + i_h * sq_h
        p_gb = p_do + i_b * sg_b + i_h * sg_h
        for i_m in range(0, n_m):
            if tl.load(p_st + (i_bh * n_m + i_m) * n_n + i_n) == 1:
                o_m = i_m * BLOCK_M + o_bm
                m_m = o_m < Sq
                b_q = tl.load(p_qb + o_m[:, None].to(tl.int64) * sq_s + o_d[None, :], mask=m_m[:, None] & (o_d[None, :] < D), other=0.0)
                b_do = tl.load(p_gb + o_m[:, None].to(tl.int64) * sg_s + o_dv[None, :], mask=m_m[:, None] & (o_dv[None, :] < DV), other=0.0)
                o_row = i_bh * Sq + o_m
                b_tau = tl.load(p_tau + o_row, mask=m_m, other=0.0)
                b_rn = tl.load(p_rn + o_row, mask=m_m, other=0.0)
                b_delta = tl.load(p_delta + o_row, mask=m_m, other=0.0)
                b_tau = tl.where(b_rn > 0, b_tau, 0.0)
                b_rna = tl.where(b_rn > 0, tl.exp(alpha * tl.log(tl.where(b_rn > 0, b_rn, 1.0))), 0.0)
                b_x = _scores(b_q, b_k, o_n, c, o_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC)
                b_ykm1, b_yk = _powers(tl.maximum(b_x - b_tau[:, None], 0.0), k, POW)
                b_p = b_yk * b_rn[:, None]
                b_sw = b_ykm1 * b_rna[:, None]
                # [BLOCK_N, BLOCK_DV] += Pᵀ dO
                b_dv += tl.dot(tl.trans(b_p).to(b_do.dtype), b_do, out_dtype=ACC, input_precision=PREC)
                b_dp = tl.dot(b_do, tl.trans(b_v), out_dtype=ACC, input_precision=PREC)
                b_ds = b_sw * (b_dp - b_delta[:, None])
                b_dk += tl.dot(tl.trans(b_ds).to(b_q.dtype), b_q, out_dtype=ACC, input_precision=PREC)
    tl.store(p_dk + i_b * sdk_b + i_kh * sdk_h + o_n[:, None].to(tl.int64) * sdk_s + o_d[None, :], (b_dk * scale).to(p_dk.dtype.element_ty), mask=m_n[:, None] & (o_d[None, :] < D))
    tl.store(p_dv + i_b * sdv_b + i_kh * sdv_h + o_n[:, None].to(tl.int64) * sdv_s + o_dv[None, :], b_dv.to(p_dv.dtype.element_ty), mask=m_n[:, None] & (o_dv[None, :] < DV))


def integer_power(alpha: float) -> int:
    """k = 1 / (1 − α) when it is 2, 3 or 4, else 0."""
    from .rows import integer_power as power

    return power(alpha)


def _inner(t: Tensor) -> Tensor:
    """``t`` with a unit stride along its last axis (a copy only when it has none)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _common(q: Tensor, alpha: float, scale: float, window: tuple[int, int], config: AttnConfig | None) -> dict:
    """Launch settings shared by the three kernels; the scalars travel in an ACC tensor, as a
    float argument reaches a compiled kernel as float32."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    cfg = config or pick_config(q.shape[-1], q.element_size())
    wl, wr = window
    tol = 2e-6 if q.element_size() == 2 else 4.0 * torch.finfo(acc).eps
    constants = torch.tensor([(1.0 - alpha) * scale, 1.0 / (1.0 - alpha), alpha, scale, tol], dtype=acc, device=q.device)
    return dict(
        acc=acc, cfg=cfg, constants=constants,
        constexprs=dict(
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            PREC="ieee" if q.dtype in (torch.float32, torch.float64) else "tf32",
            POW=integer_power(alpha),
            HAS_WL=wl >= 0, HAS_WR=wr >= 0,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        ),
        wl=max(wl, 0), wr=max(wr, 0),
    )


def attention_fwd_launch(
    q: Tensor, k: Tensor, v: Tensor, alpha: float, causal: bool, scale: float, window: tuple[int, int],
    n_iter: int, config: AttnConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(o, τ, 1/S, tile states) for q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv)."""
    q, k, v = _inner(q), _inner(k), _inner(v)
    B, Hq, Sq, D = q.shape
    Hkv, Sk, DV = k.shape[1], k.shape[2], v.shape[-1]
    com = _common(q, alpha, scale, window, config)
    cfg = com["cfg"]
    n_m, n_n = triton.cdiv(Sq, cfg.block_m), triton.cdiv(Sk, cfg.block_n)
    o = q.new_empty(B, Hq, Sq, DV)
    tau = q.new_empty(B, Hq, Sq, dtype=com["acc"])
    rn = q.new_empty(B, Hq, Sq, dtype=com["acc"])
    states = torch.zeros(B, Hq, n_m, n_n, dtype=torch.int8, device=q.device)
    if o.numel() == 0:
        return o, tau, rn, states
    _attn_fwd_kernel[(n_m, B * Hq)](
        q, k, v, o, tau, rn, states,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        Hq, Hq // Hkv, Sq, Sk, D, DV, n_m, n_n,
        com["constants"], com["wl"], com["wr"], n_iter,
        CAUSAL=causal, BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_DV=max(16, triton.next_power_of_2(DV)),
        **com["constexprs"], num_warps=cfg.num_warps,
    )
    return o, tau, rn, states


def attention_bwd_launch(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, tau: Tensor, rn: Tensor, states: Tensor,
    alpha: float, causal: bool, scale: float, window: tuple[int, int], config: AttnConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) from the forward's τ, 1/S and tile states (same ``config`` as the forward)."""
    q, k, v, do = _inner(q), _inner(k), _inner(v), _inner(do)
    B, Hq, Sq, D = q.shape
    Hkv, Sk, DV = k.shape[1], k.shape[2], v.shape[-1]
    com = _common(q, alpha, scale, window, config)
    cfg = com["cfg"]
    n_m, n_n = states.shape[2], states.shape[3]
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    delta = torch.empty_like(tau)
    blocks = dict(BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_DV=max(16, triton.next_power_of_2(DV)))
    common = dict(CAUSAL=causal, **blocks, **com["constexprs"], num_warps=cfg.num_warps)
    scalars = (com["constants"], com["wl"], com["wr"])
    _attn_bwd_dq_kernel[(n_m, B * Hq)](
        q, k, v, do, dq, tau, rn, states, delta,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dq.stride()[:3],
        Hq, Hq // Hkv, Sq, Sk, D, DV, n_m, n_n, *scalars, **common,
    )
    _attn_bwd_dkdv_kernel[(n_n, B * Hkv)](
        q, k, v, do, dk, dv, tau, rn, states, delta,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dk.stride()[:3], *dv.stride()[:3],
        Hq, Hkv, Hq // Hkv, Sq, Sk, D, DV, n_m, n_n, *scalars, **common,
    )
    return dq, dk, dv
