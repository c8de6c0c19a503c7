"""Triton kernels for fused α-diffmax attention, O = diffmax_α(scale · Q Kᵀ + masks) V, forward
and backward, never forming the Sq × Sk matrix (../math.md §3).

With X'_ij = (1 − α) · scale · q_i·k_j, k = 1 / (1 − α) and y_ij = [X'_ij − τ_i]_+, the forward
program owns BLOCK_M queries of one head (longest causal bands launched first) and streams the
visible K tiles (causal / window band only):

1. one pass for each row's largest X' in each column class j mod 8 (8 distinct entries) and the
   largest X' of each of ``START_GROUPS`` runs of consecutive band tiles (stored to a small
   scratch). τ starts at the larger of the roots of Σ_{j ∈ J} [X'_ij − τ]_+^k = 1 over those two
   subsets J of the row (each root ≤ τ_i, so Newton stays monotone): 3 Newton passes on Gaussian
   scores instead of 5 from the bracket's low end max − 1 (4 from the two largest alone); every
   band tile enters a list;
2. Newton passes on F(τ_i) = ‖y_i‖_k − 1 (rows.py explains why this converges monotonically from
   below in a few steps), each streaming the listed K tiles for S_i = Σ_j y^k and
   T_i = Σ_j y^(k−1), until every row's step is below ``tol``, or predicted to leave an error
   below it (quadratic convergence), or ``n_iter`` steps. As τ only rises, a tile found all-zero
   stays zero: each pass compacts the list in place to the tiles still live, so later passes
   never load the zero ones;
3. the output pass over the listed tiles: O = Σ_j y^k v_j / S_i with S_i summed in the same pass
   at the final τ (deferred normalisation, as FlashAttention's), so the last Newton step needs no
   pass of its own; it writes the tile states (int8 per (query tile, key tile): 0 outside the
   band, 1 live, 2 zero).

Every K/V loop has a branch-free body (the tile index comes from the list), so Triton software-
pipelines its loads (cp.async, ``num_stages`` deep); a data-dependent ``if`` around the loads
would serialise load → wgmma → math on every tile.

τ_i, 1/S_i and the tile states are saved. The backward turns the states into lists of live
tiles (``live_tile_lists``: two launches of a small kernel) and never visits a zero tile:
``_attn_bwd_dq_kernel`` (program per query tile) makes one pass: with s = P^α = y^(k−1) / S^α,
dP = dO Vᵀ and C_i = Σ_j s_ij it accumulates Σ_j (s ⊙ dP)_ij k_j, Σ_j s_ij k_j, Σ_j s_ij dP_ij
and C_i, then Δ_i = Σ_j s_ij dP_ij / C_i (stored) and dQ = scale (Σ (s ⊙ dP) k − Δ Σ s k), which
equals scale Σ_j dS_ij k_j with dS = s ⊙ (dP − Δ); ``_attn_bwd_dkdv_kernel`` (program per key
tile, looping over its live (query head of the group, query tile) pairs, so GQA needs no
atomics) gives dV = Pᵀ dO and dK = scale dSᵀ Q. Deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import _host
from .._launch import LeanKernel
from .rows import _powers

Tensor = torch.Tensor


@dataclass(frozen=True)
class AttnConfig:
    """Query and key tile sizes (shared by forward and backward: the tile states are per tile),
    warps and software-pipeline depth of the K/V loops."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int = 1
    fwd_maxnreg: int = 0  # register cap of the forward kernel (0: ptxas decides)
    bwd_warps: int = 0  # warps of the backward kernels (0: num_warps)
    bwd_block_m: int = 0  # queries per dq program and per dkdv step, dividing block_m (0: block_m)
    dkdv_warps: int = 0  # warps of the dkdv kernel (0: as the dq kernel)
    dkdv_block_m: int = 0  # queries per dkdv step, dividing block_m (0: as the dq kernel)
    dkdv_maxnreg: int = 0  # register cap of the dkdv kernel (0: ptxas decides)
    dkdv_stages: int = 0  # pipeline depth of the dkdv kernel (0: num_stages)


COMPILED = not triton.knobs.runtime.interpret
"""Kernels run compiled (not in the Triton interpreter, which cannot run inline PTX): read at
import, as ``triton.jit`` reads it at decoration time."""

LIST_CHUNK_FWD = 256
"""List entries the forward's per-pass compaction handles at once."""

START_GROUPS = 16
"""Runs of band tiles whose per-row maxima start τ (a float32 simulation of the kernel on
Gaussian scores: 3 Newton passes from them for 16, 32 or 64 runs, 4 from the two largest
entries alone, 5 from max − 1)."""


def pick_config(head_dim: int, itemsize: int) -> AttnConfig:
    """Tiles, warps and stages per element size and head dim, chosen offline for sm_90 (ptxas:
    no spills or a few bytes, shared memory within 227 KB with all loops pipelined): 16-bit
    inputs 128 × 64 tiles, 3 stages (64 × 32, 2 stages, for D > 128). D ≤ 64: forward on 4
    warps without a register cap (232 registers, 2 programs per SM; measured on an H100 at
    1×16×4096: fwd 0.71 ms non-causal, 0.46 causal, vs 0.88 / 0.60 on 8 warps capped at 128
    registers); backward on 4 warps in 64-query parts of each tile (dq programs of 64 queries,
    243 registers; the key-major dkdv in 64-query steps, 235 registers; H100, 1×16×4096: dkdv
    0.379 ms against 0.448 for whole tiles on 8 warps in the transposed form it replaced, 0.445
    for 32-query steps, 0.94 on 8 warps; dq 0.264 / 0.141 causal against 0.262 / 0.151 for
    128-query programs on 8 warps); D ≤ 128 forward and dq on 8 warps, the dkdv kernel on 4 in
    32-query steps (1×16×4096×128: 0.761 / 0.397 ms causal against 0.767 / 0.406 for the
    transposed form; whole tiles on 8 warps 1.26 / 0.65: every wgmma serialised, C7515); larger D
    8 warps throughout (not measured since the key-major dkdv). Float32 and float64 (no
    tensor-core path at their precision) 32 × 32 on 4 warps, 2 stages."""
    if itemsize >= 4:
        return AttnConfig(32, 32, 4, 2)
    if head_dim > 128:
        return AttnConfig(64, 32, 8, 2)
    if head_dim <= 64:
        return AttnConfig(128, 64, 4, 3, 0, 4, 64)
    return AttnConfig(128, 64, 8, 3, dkdv_warps=4, dkdv_block_m=32)


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
def _visible(i_q, j_k, Sq, Sk, wl, wr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Key j visible to query i (../math.md §2) for query indices ``i_q`` and key indices ``j_k``
    that broadcast to the tile ([M, 1] and [1, N], or [1, M] and [N, 1] for a key-major tile)."""
    i = i_q + (Sk - Sq)
    vis = (i_q < Sq) & (j_k < Sk)
    if CAUSAL:
        vis &= j_k <= i
    if HAS_WL:
        vis &= j_k >= i - wl
    if HAS_WR:
        vis &= j_k <= i + wr
    return vis


@triton.jit
def _load_rows(p_b, r0, o_br, o_c, s_r, n_r, n_c):
    """[R, C] rows r0 + o_br (stride s_r) and columns o_c (unit stride) at ``p_b``, zeros outside
    n_r × n_c. The per-element offset o_br · s_r + o_c does not depend on r0: hoisted out of the
    loops, one 64-bit add per vector instead of a 64-bit multiply-add per row."""
    o_off = o_br[:, None].to(tl.int64) * s_r + o_c[None, :]
    return tl.load((p_b + r0.to(tl.int64) * s_r) + o_off, mask=((r0 + o_br)[:, None] < n_r) & (o_c[None, :] < n_c), other=0.0)


@triton.jit
def _load_k(p_kb, n0, o_bn, o_d, s_kn, Sk, D):
    """[BLOCK_N, BLOCK_D] key tile with first key n0 (zeros outside)."""
    return _load_rows(p_kb, n0, o_bn, o_d, s_kn, Sk, D)


@triton.jit
def _scores(b_q, b_k, m0, n0, o_m, o_n, Sq, Sk, wl, wr,
            CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, ACC: tl.constexpr,
            PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KEY_MAJOR: tl.constexpr = False):
    """[BLOCK_M, BLOCK_N] q kᵀ of the tile with first query m0 (o_m = m0 + arange) and first key
    n0 (o_n), −inf where not visible (the mask is applied only to tiles that are not entirely
    visible: boundary, diagonal and band-edge tiles; decided on scalars). Unscaled: X' = c · it,
    and c enters ``_excess``'s FMA (or scales a row max), saving a multiply per score.
    KEY_MAJOR: the transposed tile [BLOCK_N, BLOCK_M] = k qᵀ (keys as rows)."""
    if KEY_MAJOR:
        b_x = tl.dot(b_k, tl.trans(b_q), out_dtype=ACC, input_precision=PREC)
    else:
        b_x = tl.dot(b_q, tl.trans(b_k), out_dtype=ACC, input_precision=PREC)
    i_first = m0 + (Sk - Sq)
    i_last = i_first + BLOCK_M - 1
    j_last = n0 + BLOCK_N - 1
    inside = (m0 + BLOCK_M <= Sq) & (j_last < Sk)
    if CAUSAL:
        inside = inside & (j_last <= i_first)
    if HAS_WL:
        inside = inside & (n0 >= i_last - wl)
    if HAS_WR:
        inside = inside & (j_last <= i_first + wr)
    if not inside:
        if KEY_MAJOR:
            b_vis = _visible(o_m[None, :], o_n[:, None], Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR)
        else:
            b_vis = _visible(o_m[:, None], o_n[None, :], Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR)
        b_x = tl.where(b_vis, b_x, float("-inf"))
    return b_x


@triton.jit
def _excess(b_x, c, b_tau, AXIS: tl.constexpr):
    """y = [c · score − τ]_+ (−inf scores give 0), τ per row of ``b_x`` (AXIS = 1: [BLOCK_M,
    BLOCK_N] tiles) or per column (AXIS = 0: the [GROUPS, BLOCK_M] run maxima). Every τ here is
    ≥ max X' − 1, so y ≤ 1 and y = min(max(c · score − τ, 0), 1): ptxas fuses that into one
    FFMA.SAT for float32 (instead of an FFMA and a half-rate FMNMX); the clamp at 1 moves only
    the row's largest entry, by at most the rounding of τ = max − 1."""
    if AXIS == 1:
        b_t = -b_tau[:, None]
    else:
        b_t = -b_tau[None, :]
    return tl.minimum(tl.maximum(tl.fma(b_x, c, b_t), 0.0), 1.0)


@triton.jit
def _scaled_excess(b_x, b_cr, b_tr):
    """Backward: y' = y · S^(−1/k) = [c_r · score − τ_r]_+ per query, with c_r = c · S^(−1/k) and
    τ_r = τ · S^(−1/k) (``_row_scale``; given broadcastable to ``b_x``: [M, 1], or [1, M] for a
    key-major tile): then P = y'^k and s = P^α = y'^(k−1) exactly (α = 1 − 1/k), so neither needs
    a per-score multiply by S^−1 or S^−α. As in ``_excess``, one FFMA.SAT: y' ≤ 1 because S ≥ 1
    at every τ ≤ τ* (Newton from below; up to rounding)."""
    return tl.minimum(tl.maximum(tl.fma(b_x, b_cr, -b_tr), 0.0), 1.0)


@triton.jit
def _row_scale(b_tau, b_rn, c, k):
    """(c_r, τ_r) of ``_scaled_excess`` per row from the forward's τ and 1/S; rows without a
    visible key (1/S = 0) get τ_r = +inf (every y' = 0, also for −inf scores)."""
    b_has = b_rn > 0
    b_r = tl.exp(tl.log(tl.where(b_has, b_rn, 1.0)) / k)  # S^(−1/k)
    return tl.where(b_has, c * b_r, c), tl.where(b_has, b_tau * b_r, float("inf"))


@triton.jit
def _row_parts(b, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_M, 4] partial row sums of ``b`` [BLOCK_M, BLOCK_N]: column 8i + 2q + e summed over
    i and e. In the wgmma accumulator layout q numbers the 4 threads that share a row, so these
    sums stay inside each thread: a loop accumulates them and finishes the rows (``tl.sum`` over
    axis 1, the shuffles) once, after the loop, instead of per tile. One reduction over the
    (i, e) pairs (permuted together: no data moves) keeps a product in ``b`` fused into an FFMA
    chain (two nested sums would not)."""
    b4 = tl.permute(tl.reshape(b, [BLOCK_M, BLOCK_N // 8, 4, 2]), 0, 2, 1, 3)
    return tl.sum(tl.reshape(b4, [BLOCK_M, 4, BLOCK_N // 4]), 2)


@triton.jit
def _max_classes(b_x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_M, 8] per row the largest score of each column class j mod 8 (8 distinct entries of
    the row, −inf where a class has none visible): one FMNMX per score and no shuffles (in the
    wgmma accumulator layout a thread holds the classes 2q, 2q + 1 of its rows for every i of
    column 8i + 2q + e). BLOCK_N is a multiple of 8."""
    return tl.max(tl.reshape(b_x, [BLOCK_M, BLOCK_N // 8, 8]), 1)


@triton.jit
def _mark(p, b_flag, COMPILED: tl.constexpr):
    """Stores 1 to the int8 at ``p`` when some entry of ``b_flag`` is true. Compiled: each thread
    stores for its own entries (predicated st.global from inline PTX, same value and address),
    so the tile costs no cross-warp reduction, barrier or layout conversion (a ``tl.store`` of
    a row vector would be re-laid out for coalescing through shared memory). The reader must
    be behind a barrier."""
    if COMPILED:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; .reg .b16 v; setp.ne.s32 p, $2, 0; mov.b16 v, 1; @p st.global.b8 [$1], v; mov.b32 $0, 0; }",
            "=r,l,r", [p.to(tl.int64), b_flag.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.store(p, tl.full([], 1, tl.int8), mask=tl.max(b_flag.to(tl.int32)) > 0)


@triton.jit
def _compact(p_lsb, p_stb, n_list, CHUNK: tl.constexpr):
    """Compacts the ``n_list`` key tiles listed at ``p_lsb`` in place to those the pass just
    marked live (state 1, ``_mark``), sets their state back to 2 (zero until the output pass
    marks it) and returns the new length. Once per pass, vectorised (CHUNK entries at a time)."""
    tl.debug_barrier()  # the marks of all threads are visible
    n_new = 0
    for i0 in range(0, n_list, CHUNK):
        o_l = i0 + tl.arange(0, CHUNK)
        m_l = o_l < n_list
        b_i = tl.load(p_lsb + o_l, mask=m_l, other=0)
        b_live = (tl.load(p_stb + b_i, mask=m_l, other=0) == 1).to(tl.int32)
        tl.debug_barrier()  # every entry of the chunk is read before any is overwritten
        tl.store(p_stb + b_i, tl.full([CHUNK], 2, tl.int8), mask=b_live > 0)
        tl.store(p_lsb + n_new + tl.cumsum(b_live, 0) - b_live, b_i, mask=b_live > 0)
        n_new += tl.sum(b_live, 0)
    tl.debug_barrier()  # the list and states written by some threads are read by all next
    return n_new


@triton.jit
def _tile_scores(b_q, p_kb, m0, i_n, o_m, o_bn, o_d, sk_s, Sk, D, Sq, wl, wr,
                 CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_M, BLOCK_N] ``_scores`` of key tile ``i_n`` (loads it)."""
    n0 = i_n * BLOCK_N
    o_n = n0 + o_bn
    return _scores(b_q, _load_k(p_kb, n0, o_bn, o_d, sk_s, Sk, D), m0, n0, o_m, o_n, Sq, Sk, wl, wr,
                   CAUSAL, HAS_WL, HAS_WR, ACC, PREC, BLOCK_M, BLOCK_N)


@triton.jit
def _newton_pass(b_q, p_kb, p_lsb, p_stb, n_list, b_tau, m0, o_m, o_bn, o_d, sk_s, Sk, D, c, k, Sq, wl, wr,
                 CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr, POW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 LIST_STAGES: tl.constexpr, COMPILED: tl.constexpr, CHUNK: tl.constexpr):
    """[BLOCK_M] (S, T) = (Σ_j y^k, Σ_j y^(k−1)) at τ over the ``n_list`` key tiles listed at
    ``p_lsb``, and the list compacted in place to the tiles with a weight > 0 at τ (hence at
    every later τ) with its new length. The loop body has no branch and no cross-warp step (a
    live tile is marked by each thread for its rows, ``_mark``; the list is compacted once after
    the loop), and its K loads depend on the list entry (one indirection): ``LIST_STAGES`` =
    2 · num_stages − 1 gives both the entry and the K tile num_stages − 1 iterations of latency
    (Triton splits the stages between the two loads), so K(j + 2) is issued during tile j."""
    b_s = tl.zeros([BLOCK_M, 4], ACC)  # partial row sums (``_row_parts``)
    b_t = tl.zeros([BLOCK_M, 4], ACC)
    for i_j in tl.range(0, n_list, num_stages=LIST_STAGES):
        i_n = tl.load(p_lsb + i_j)
        b_x = _tile_scores(b_q, p_kb, m0, i_n, o_m, o_bn, o_d, sk_s, Sk, D, Sq, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC, BLOCK_M, BLOCK_N)
        b_y = _excess(b_x, c, b_tau, 1)
        b_ykm1, b_yk = _powers(b_y, k, POW)
        b_s += _row_parts(b_yk, BLOCK_M, BLOCK_N)
        b_tt = _row_parts(b_ykm1, BLOCK_M, BLOCK_N)  # > 0 exactly where the part has a y > 0
        b_t += b_tt
        _mark(p_stb + i_n, b_tt > 0, COMPILED)
    return tl.sum(b_s, 1), tl.sum(b_t, 1), _compact(p_lsb, p_stb, n_list, CHUNK)


@triton.jit
def _newton_step(b_s, b_t, k):
    """Newton step on F(τ) = S^(1/k) − 1 per row: (S − S^(1−1/k)) / T; 0 for an empty row."""
    s_pow = tl.exp((1.0 - 1.0 / k) * tl.log(b_s))
    return tl.where(b_t > 0, (b_s - s_pow) / tl.where(b_t > 0, b_t, 1.0), 0.0)


PROFILE_SLOTS = 16
"""int64 slots per forward program of the profile (``attention_fwd_launch(profile=...)``):
clock64 at 0 start, 1 max pass done, 2 τ started, 3 first Newton pass (and its compaction)
done, 4 + i the i-th pass of the loop done (i < 8), 13 output pass done, 14 end; 12 the loop's
passes, 15 the band's tiles."""


@triton.jit
def _prof(p, slot, value, PROFILE: tl.constexpr, CLOCK: tl.constexpr = True):
    """Profile only: stores clock64 (or ``value``) to slot ``slot`` of this program."""
    if PROFILE:
        if CLOCK:
            value = tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
        tl.store(p + slot, value.to(tl.int64))


@triton.jit
def _attn_fwd_kernel(
    p_q, p_k, p_v, p_o,  # (B, H, S, D) with strides (s_b, s_h, s_s, 1)
    p_tau, p_rn,  # out: ACC (B, Hq, Sq) τ and 1/S per row
    p_st,  # out: int8 (B, Hq, n_m, n_n) tile states, zeroed
    p_ls,  # scratch: int32 (B, Hq, n_m, n_n) each query tile's list of key tiles still live
    p_gm,  # scratch: ACC (B, Hq, n_m, GROUPS, BLOCK_M) row maxima of GROUPS runs of band tiles
    p_prof,  # profile only: int64 (B · Hq · n_m, PROFILE_SLOTS)
    p_cst,  # ACC [5]: c = (1 − α) · scale, k = 1 / (1 − α), α, scale, tol (ACC-exact scalars)
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
    Hq, G, Sq, Sk, D, DV, n_m, n_n,
    wl, wr,
    n_iter,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
    POW: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    GROUPS: tl.constexpr,
    LIST_STAGES: tl.constexpr,  # pipeline depth of the list-driven loops (2 · num_stages − 1)
    COMPILED: tl.constexpr,  # not the interpreter (``_mark``)
    CHUNK: tl.constexpr,  # list entries ``_compact`` handles at once
    PROFILE: tl.constexpr = False,
):
    i_bh = tl.program_id(0).to(tl.int64)
    i_m = n_m - 1 - tl.program_id(1)  # longest causal bands first
    p_prof = p_prof + (i_bh * n_m + i_m) * 16
    _prof(p_prof, 0, 0, PROFILE)
    i_b = i_bh // Hq
    i_h = i_bh % Hq
    i_kh = i_h // G
    c = tl.load(p_cst)
    k = tl.load(p_cst + 1)
    tol = tl.load(p_cst + 4)
    m0 = i_m * BLOCK_M
    o_m = m0 + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    o_bn = tl.arange(0, BLOCK_N)
    p_qb = p_q + i_b * sq_b + i_h * sq_h
    p_kb = p_k + i_b * sk_b + i_kh * sk_h
    p_vb = p_v + i_b * sv_b + i_kh * sv_h
    p_stb = p_st + (i_bh * n_m + i_m) * n_n
    p_lsb = p_ls + (i_bh * n_m + i_m) * n_n
    # [BLOCK_M, BLOCK_D]
    b_q = tl.load(p_qb + o_m[:, None].to(tl.int64) * sq_s + o_d[None, :], mask=(o_m[:, None] < Sq) & (o_d[None, :] < D), other=0.0)
    n_lo, n_hi = _band(i_m, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, BLOCK_M, BLOCK_N)

    # pass 1: per row the largest score of each column class mod 8 (8 distinct entries), and the
    # largest of each of GROUPS runs of consecutive band tiles (stored); every band tile enters the
    # list (and the states as zero: the output pass marks the live ones)
    n_list = n_hi - n_lo
    g_len = tl.maximum((n_list + GROUPS - 1) // GROUPS, 1)  # tiles per run
    o_bm = tl.arange(0, BLOCK_M)
    p_gmb = p_gm + (i_bh * n_m + i_m) * (GROUPS * BLOCK_M)
    # per column class (inside each thread): the largest score so far and the largest of the
    # current run; classes are merged to rows once per run and once at the end
    b_m = tl.full([BLOCK_M, 8], float("-inf"), ACC)
    b_g = tl.full([BLOCK_M, 8], float("-inf"), ACC)
    i_r = 0  # position of the tile in its run (no integer division per tile)
    p_gmr = p_gmb  # the run's row maxima
    for i_n in range(n_lo, n_hi):
        b_x = _tile_scores(b_q, p_kb, m0, i_n, o_m, o_bn, o_d, sk_s, Sk, D, Sq, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC, BLOCK_M, BLOCK_N)
        b_a = _max_classes(b_x, BLOCK_M, BLOCK_N)
        b_m = tl.maximum(b_m, b_a)
        b_g = tl.where(i_r == 0, b_a, tl.maximum(b_g, b_a))
        i_r += 1
        if (i_r == g_len) | (i_n == n_hi - 1):  # a run ends (a layout change: not every tile)
            tl.store(p_gmr + o_bm, tl.max(b_g, 1))
            p_gmr += BLOCK_M
            i_r = 0
    # every band tile enters the list, and the states as zero (the output pass marks the live ones)
    for i0 in range(0, n_list, CHUNK):
        o_l = i0 + tl.arange(0, CHUNK)
        tl.store(p_lsb + o_l, n_lo + o_l, mask=o_l < n_list)
        tl.store(p_stb + n_lo + o_l, tl.full([CHUNK], 2, tl.int8), mask=o_l < n_list)
    tl.debug_barrier()  # the list, run maxima (and states) written by some threads are read by all next
    _prof(p_prof, 1, 0, PROFILE)
    _prof(p_prof, 15, n_list, PROFILE, False)
    b_m8 = b_m
    b_m = tl.max(b_m8, 1) * c  # X' = c · score, c > 0
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
    # τ starts at the larger of two roots over subsets of the row (each ≤ τ): its 8 class maxima,
    # and the run maxima (Newton from max − 1 in registers; −inf for unused runs or classes)
    o_g = tl.arange(0, GROUPS)
    b_gm = tl.load(p_gmb + o_g[:, None] * BLOCK_M + o_bm[None, :], mask=o_g[:, None] < (n_list + g_len - 1) // g_len, other=float("-inf"))
    b_tau_g = tau_lo
    for _i in tl.static_range(4):
        b_gkm1, b_gk = _powers(_excess(b_gm, c, b_tau_g, 0), k, POW)
        b_tau_g += _newton_step(tl.sum(b_gk, 0), tl.sum(b_gkm1, 0), k)
    b_tau_8 = tau_lo
    for _i in tl.static_range(4):
        b_ckm1, b_ck = _powers(_excess(b_m8, c, b_tau_8, 1), k, POW)
        b_tau_8 += _newton_step(tl.sum(b_ck, 1), tl.sum(b_ckm1, 1), k)
    b_tau = tl.minimum(tl.maximum(tl.maximum(b_tau_8, b_tau_g), tau_lo), tau_hi)
    _prof(p_prof, 2, 0, PROFILE)
    b_s, b_t, n_list = _newton_pass(b_q, p_kb, p_lsb, p_stb, n_list, b_tau, m0, o_m, o_bn, o_d, sk_s, Sk, D, c, k, Sq, wl, wr,
                                    CAUSAL, HAS_WL, HAS_WR, ACC, PREC, POW, BLOCK_M, BLOCK_N, LIST_STAGES, COMPILED, CHUNK)
    _prof(p_prof, 3, 0, PROFILE)
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
            b_s, b_t, n_list = _newton_pass(b_q, p_kb, p_lsb, p_stb, n_list, b_tau, m0, o_m, o_bn, o_d, sk_s, Sk, D, c, k, Sq, wl, wr,
                                            CAUSAL, HAS_WL, HAS_WR, ACC, PREC, POW, BLOCK_M, BLOCK_N, LIST_STAGES, COMPILED, CHUNK)
            b_prev = tl.where(b_live, b_step, b_prev)
            b_step = _newton_step(b_s, b_t, k)
            b_live = b_live & (b_step > tol * (1.0 + tl.abs(b_tau))) & (b_step < b_prev)
            if it < 8:
                _prof(p_prof, 4 + it, 0, PROFILE)
            _prof(p_prof, 12, it + 1, PROFILE, False)
        it += 1

    # output pass over the listed tiles: O = Σ_j y^k v_j / S, with S = Σ_j y^k at the final τ
    b_o = tl.zeros([BLOCK_M, BLOCK_DV], ACC)
    b_s = tl.zeros([BLOCK_M, 4], ACC)  # partial row sums (``_row_parts``)
    for i_j in tl.range(0, n_list, num_stages=LIST_STAGES):
        i_n = tl.load(p_lsb + i_j)
        o_n = i_n * BLOCK_N + o_bn
        b_x = _scores(b_q, _load_k(p_kb, i_n * BLOCK_N, o_bn, o_d, sk_s, Sk, D), m0, i_n * BLOCK_N, o_m, o_n, Sq, Sk, wl, wr,
                      CAUSAL, HAS_WL, HAS_WR, ACC, PREC, BLOCK_M, BLOCK_N)
        _, b_p = _powers(_excess(b_x, c, b_tau, 1), k, POW)
        b_ps = _row_parts(b_p, BLOCK_M, BLOCK_N)
        b_s += b_ps
        # [BLOCK_N, BLOCK_DV]
        b_v = _load_rows(p_vb, i_n * BLOCK_N, o_bn, o_dv, sv_s, Sk, DV)
        b_o += tl.dot(b_p.to(b_v.dtype), b_v, out_dtype=ACC, input_precision=PREC)
        _mark(p_stb + i_n, b_ps > 0, COMPILED)  # listed tiles are in state 2 (zero) until marked
    b_s = tl.sum(b_s, 1)
    _prof(p_prof, 13, 0, PROFILE)
    b_rn = tl.where(b_s > 0, 1.0 / tl.where(b_s > 0, b_s, 1.0), 0.0)
    b_o = b_o * b_rn[:, None]
    p_ob = p_o + i_b * so_b + i_h * so_h
    tl.store(p_ob + o_m[:, None].to(tl.int64) * so_s + o_dv[None, :], b_o.to(p_o.dtype.element_ty), mask=(o_m[:, None] < Sq) & (o_dv[None, :] < DV))
    o_row = i_bh * Sq + o_m
    tl.store(p_tau + o_row, tl.where(empty, float("-inf"), b_tau), mask=o_m < Sq)
    tl.store(p_rn + o_row, b_rn, mask=o_m < Sq)
    _prof(p_prof, 14, 0, PROFILE)


@triton.jit
def _attn_bwd_dq_kernel(
    p_q, p_k, p_v, p_do, p_dq,  # (B, H, S, D) with strides (s_b, s_h, s_s, 1); dq like q
    p_tau, p_rn,  # from the forward
    p_ls, p_cn,  # int32 (B, Hq, n_m, n_n), (B, Hq, n_m): each query tile's live key tiles, their number
    p_delta,  # out: ACC (B, Hq, Sq) Δ_i = Σ_j s_ij dP_ij / C_i
    p_cr, p_tr,  # out: ACC (B, Hq, Sq) c_r, τ_r of ``_scaled_excess`` (for the dkdv kernel)
    p_cst,  # ACC [5]: c, k, α, scale, tol
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sg_b, sg_h, sg_s, sd_b, sd_h, sd_s,
    Hq, G, Sq, Sk, D, DV, n_m, n_n,
    wl, wr,
    ACC: tl.constexpr, PREC: tl.constexpr, POW: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    LIST_STAGES: tl.constexpr,
    STEP_M: tl.constexpr,  # queries per program (divides BLOCK_M, the tile of the lists)
):
    """dQ (and Δ, c_r, τ_r) of STEP_M queries of one query tile, over the tile's live key tiles."""
    i_bh = tl.program_id(0).to(tl.int64)
    STEPS: tl.constexpr = BLOCK_M // STEP_M
    i_m = n_m - 1 - tl.program_id(1) // STEPS  # longest causal bands first
    i_b = i_bh // Hq
    i_h = i_bh % Hq
    i_kh = i_h // G
    c, k, scale = tl.load(p_cst), tl.load(p_cst + 1), tl.load(p_cst + 3)
    m0 = i_m * BLOCK_M + (tl.program_id(1) % STEPS) * STEP_M
    o_m = m0 + tl.arange(0, STEP_M)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    o_bn = tl.arange(0, BLOCK_N)
    p_kb = p_k + i_b * sk_b + i_kh * sk_h
    p_vb = p_v + i_b * sv_b + i_kh * sv_h
    p_lsb = p_ls + (i_bh * n_m + i_m) * n_n
    n_list = tl.load(p_cn + i_bh * n_m + i_m)
    m_m = o_m < Sq
    b_q = tl.load(p_q + i_b * sq_b + i_h * sq_h + o_m[:, None].to(tl.int64) * sq_s + o_d[None, :], mask=m_m[:, None] & (o_d[None, :] < D), other=0.0)
    # [STEP_M, BLOCK_DV]
    b_do = tl.load(p_do + i_b * sg_b + i_h * sg_h + o_m[:, None].to(tl.int64) * sg_s + o_dv[None, :], mask=m_m[:, None] & (o_dv[None, :] < DV), other=0.0)
    o_row = i_bh * Sq + o_m
    b_tau = tl.load(p_tau + o_row, mask=m_m, other=0.0)
    b_rn = tl.load(p_rn + o_row, mask=m_m, other=0.0)
    b_cr, b_tr = _row_scale(b_tau, b_rn, c, k)  # s = y'^(k−1) (``_scaled_excess``)
    # one pass: dQ = scale Σ_j s_ij (dP_ij − Δ_i) k_j = scale (Σ_j (s ⊙ dP)_ij k_j − Δ_i Σ_j s_ij k_j)
    # with Δ_i = Σ_j s_ij dP_ij / C_i known only at the end
    b_a = tl.zeros([STEP_M, BLOCK_D], ACC)  # Σ_j (s ⊙ dP)_ij k_j
    b_sk = tl.zeros([STEP_M, BLOCK_D], ACC)  # Σ_j s_ij k_j
    b_sdp = tl.zeros([STEP_M, 4], ACC)  # Σ_j s_ij dP_ij, partial (``_row_parts``)
    b_c = tl.zeros([STEP_M, 4], ACC)  # C_i = Σ_j s_ij, partial
    for i_j in tl.range(0, n_list, num_stages=LIST_STAGES):  # indirect loads: see _newton_pass
        n0 = tl.load(p_lsb + i_j) * BLOCK_N
        o_n = n0 + o_bn
        b_k = _load_k(p_kb, n0, o_bn, o_d, sk_s, Sk, D)
        b_x = _scores(b_q, b_k, m0, n0, o_m, o_n, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC, STEP_M, BLOCK_N)
        b_sw, _ = _powers(_scaled_excess(b_x, b_cr[:, None], b_tr[:, None]), k, POW)
        # [BLOCK_DV, BLOCK_N]
        b_vt = tl.load((p_vb + n0.to(tl.int64) * sv_s) + (o_bn[None, :].to(tl.int64) * sv_s + o_dv[:, None]), mask=(o_n[None, :] < Sk) & (o_dv[:, None] < DV), other=0.0)
        b_sdpt = b_sw * tl.dot(b_do, b_vt, out_dtype=ACC, input_precision=PREC)
        b_sdp += _row_parts(b_sdpt, STEP_M, BLOCK_N)
        b_c += _row_parts(b_sw, STEP_M, BLOCK_N)
        b_a += tl.dot(b_sdpt.to(b_k.dtype), b_k, out_dtype=ACC, input_precision=PREC)
        b_sk += tl.dot(b_sw.to(b_k.dtype), b_k, out_dtype=ACC, input_precision=PREC)
    b_sdp = tl.sum(b_sdp, 1)
    b_c = tl.sum(b_c, 1)
    b_delta = tl.where(b_c > 0, b_sdp / tl.where(b_c > 0, b_c, 1.0), 0.0)
    tl.store(p_delta + o_row, b_delta, mask=m_m)
    tl.store(p_cr + o_row, b_cr, mask=m_m)
    tl.store(p_tr + o_row, b_tr, mask=m_m)
    b_dq = b_a - b_delta[:, None] * b_sk
    tl.store(p_dq + i_b * sd_b + i_h * sd_h + o_m[:, None].to(tl.int64) * sd_s + o_d[None, :], (b_dq * scale).to(p_dq.dtype.element_ty), mask=m_m[:, None] & (o_d[None, :] < D))


@triton.jit
def _attn_bwd_dkdv_kernel(
    p_q, p_k, p_v, p_do, p_dk, p_dv,  # (B, H, S, D) with strides (s_b, s_h, s_s, 1); dk, dv like k, v
    p_delta, p_cr, p_tr,  # ACC (B, Hq, Sq) Δ, c_r, τ_r per row, from the dq kernel
    p_ls, p_cn,  # int32 (B, Hkv, n_n, G·n_m), (B, Hkv, n_n): each key tile's live (query head, query tile) pairs i_g · 2^LIST_SHIFT + i_m
    p_cst,  # ACC [5]: c, k, α, scale, tol
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sg_b, sg_h, sg_s,
    sdk_b, sdk_h, sdk_s, sdv_b, sdv_h, sdv_s,
    Hq, Hkv, G, Sq, Sk, D, DV, n_m, n_n,
    wl, wr,
    ACC: tl.constexpr, PREC: tl.constexpr, POW: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    LIST_STAGES: tl.constexpr,
    STEP_M: tl.constexpr,  # queries per step (divides BLOCK_M, the tile of the lists)
    LIST_SHIFT: tl.constexpr,  # list entries i_g · 2^LIST_SHIFT + i_m
):
    """dK, dV of one key tile. Key-major: every product of a step keeps the keys as rows, Sᵀ = K Qᵀ
    and dPᵀ = V dOᵀ [BLOCK_N, STEP_M], so Pᵀ and dSᵀ are the A operands of dV += Pᵀ dO and
    dK += dSᵀ Q straight from the accumulator's registers (no transpose through shared memory);
    each listed query tile is walked in BLOCK_M / STEP_M steps."""
    i_bkh = tl.program_id(0).to(tl.int64)
    i_n = tl.program_id(1)
    i_b = i_bkh // Hkv
    i_kh = i_bkh % Hkv
    k, scale = tl.load(p_cst + 1), tl.load(p_cst + 3)
    n0 = i_n * BLOCK_N
    o_n = n0 + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    o_bm = tl.arange(0, STEP_M)
    m_n = o_n < Sk
    p_kb = p_k + i_b * sk_b + i_kh * sk_h
    p_lsb = p_ls + (i_bkh * n_n + i_n) * (G * n_m)
    n_list = tl.load(p_cn + i_bkh * n_n + i_n)
    STEPS: tl.constexpr = BLOCK_M // STEP_M
    # [BLOCK_N, BLOCK_D], [BLOCK_N, BLOCK_DV]
    b_k = _load_k(p_kb, n0, tl.arange(0, BLOCK_N), o_d, sk_s, Sk, D)
    b_v = tl.load(p_v + i_b * sv_b + i_kh * sv_h + o_n[:, None].to(tl.int64) * sv_s + o_dv[None, :], mask=m_n[:, None] & (o_dv[None, :] < DV), other=0.0)
    b_dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    b_dv = tl.zeros([BLOCK_N, BLOCK_DV], ACC)
    for i_j in tl.range(0, n_list * STEPS, num_stages=LIST_STAGES):  # indirect loads: see _newton_pass
        e = tl.load(p_lsb + i_j // STEPS)
        i_h = i_kh * G + (e >> LIST_SHIFT)
        i_bh = i_b * Hq + i_h
        m0 = (e & ((1 << LIST_SHIFT) - 1)) * BLOCK_M + (i_j % STEPS) * STEP_M
        o_m = m0 + o_bm
        m_m = o_m < Sq
        # [STEP_M, BLOCK_D], [STEP_M, BLOCK_DV]
        b_q = _load_rows(p_q + i_b * sq_b + i_h * sq_h, m0, o_bm, o_d, sq_s, Sq, D)
        b_do = _load_rows(p_do + i_b * sg_b + i_h * sg_h, m0, o_bm, o_dv, sg_s, Sq, DV)
        o_row = i_bh * Sq + o_m
        b_delta = tl.load(p_delta + o_row, mask=m_m, other=0.0)
        b_cr = tl.load(p_cr + o_row, mask=m_m, other=1.0)
        b_tr = tl.load(p_tr + o_row, mask=m_m, other=float("inf"))
        # [BLOCK_N, STEP_M]
        b_xt = _scores(b_q, b_k, m0, n0, o_m, o_n, Sq, Sk, wl, wr, CAUSAL, HAS_WL, HAS_WR, ACC, PREC, STEP_M, BLOCK_N, True)
        b_swt, b_pt = _powers(_scaled_excess(b_xt, b_cr[None, :], b_tr[None, :]), k, POW)  # sᵀ = y'^(k−1), Pᵀ = y'^k
        b_dv += tl.dot(b_pt.to(b_do.dtype), b_do, out_dtype=ACC, input_precision=PREC)
        b_dpt = tl.dot(b_v, tl.trans(b_do), out_dtype=ACC, input_precision=PREC)
        b_dst = b_swt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_q.dtype), b_q, out_dtype=ACC, input_precision=PREC)
    tl.store(p_dk + i_b * sdk_b + i_kh * sdk_h + o_n[:, None].to(tl.int64) * sdk_s + o_d[None, :], (b_dk * scale).to(p_dk.dtype.element_ty), mask=m_n[:, None] & (o_d[None, :] < D))
    tl.store(p_dv + i_b * sdv_b + i_kh * sdv_h + o_n[:, None].to(tl.int64) * sdv_s + o_dv[None, :], b_dv.to(p_dv.dtype.element_ty), mask=m_n[:, None] & (o_dv[None, :] < DV))


def integer_power(alpha: float) -> int:
    """k = 1 / (1 − α) when it is 2, 3 or 4, else 0."""
    from .rows import integer_power as power

    return power(alpha)


def _list_stages(cfg: AttnConfig, deep: bool) -> int:
    """Pipeline depth of a list-driven loop (its K/V or Q/dO loads depend on a loaded list entry):
    Triton splits the stages between the entry and the tile loads, so 2 · num_stages − 1 gives the
    tiles num_stages − 1 iterations of latency as a direct loop has; num_stages itself (``deep``
    false) leaves (num_stages − 1) // 2, i.e. the tile issued at the end of the iteration before
    its use when num_stages is 3, at the price of less shared memory and fewer registers."""
    return max(2 * cfg.num_stages - 1, 1) if deep else cfg.num_stages


def _inner(t: Tensor) -> Tensor:
    """``t`` with a unit stride along its last axis (a copy only when it has none)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _common(q: Tensor, alpha: float, scale: float, window: tuple[int, int], config: AttnConfig | None) -> dict:
    """Launch settings shared by the three kernels (cached: they are on every call's path; the
    caller must not modify the dict); the scalars travel in an ACC tensor, as a float argument
    reaches a compiled kernel as float32."""
    # pick_config is part of the key: tests replace it
    return _common_settings(q.dtype, q.shape[-1], alpha, scale, window, config, q.device, pick_config)


@functools.lru_cache(maxsize=256)
def _common_settings(
    dtype: torch.dtype, D: int, alpha: float, scale: float, window: tuple[int, int], config: AttnConfig | None,
    device: torch.device, pick: Callable[[int, int], AttnConfig],
) -> dict:
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    cfg = config or pick(D, dtype.itemsize)
    dq_m = cfg.bwd_block_m or cfg.block_m
    dkdv_m, bwd_warps = cfg.dkdv_block_m or dq_m, cfg.bwd_warps or cfg.num_warps
    if cfg.block_m % dq_m or cfg.block_m % dkdv_m:
        raise ValueError(f"diffmax attention {cfg}: bwd_block_m and dkdv_block_m must divide block_m")
    for rows, warps in ((cfg.block_m, cfg.num_warps), (dq_m, bwd_warps), (dkdv_m, cfg.dkdv_warps or bwd_warps)):
        if rows * cfg.block_n < 4 * 32 * warps:
            # found on the H100 (Triton 3.6): 32 x 16 tiles with the backward on 8 warps gave a dq
            # off by ~90 % (the forward, dk and dv right; 32 x 32 on 8 warps right)
            raise ValueError(
                f"diffmax attention {cfg}: a {rows} x {cfg.block_n} score tile on {warps} warps holds fewer "
                "than 4 scores per thread, which the kernels do not support: use larger tiles or fewer warps"
            )
    wl, wr = window
    tol = 2e-6 if dtype.itemsize == 2 else 4.0 * torch.finfo(acc).eps
    # made once per key (``torch.tensor`` on a GPU is a blocking copy from pageable memory: the
    # host would wait for the queued kernels on every call); read-only for the kernels
    constants = torch.tensor([(1.0 - alpha) * scale, 1.0 / (1.0 - alpha), alpha, scale, tol], dtype=acc, device=device)
    pow_ = integer_power(alpha)
    return dict(
        acc=acc, cfg=cfg, constants=constants,
        static=(cfg, pow_, wl >= 0, wr >= 0),  # with q's dtype: every constexpr ``constexprs`` holds
        constexprs=dict(
            ACC=tl.float64 if acc == torch.float64 else tl.float32,
            PREC="ieee" if dtype in (torch.float32, torch.float64) else "tf32",
            POW=pow_,
            HAS_WL=wl >= 0, HAS_WR=wr >= 0,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        ),
        wl=max(wl, 0), wr=max(wr, 0),
    )


def attention_fwd_launch(
    q: Tensor, k: Tensor, v: Tensor, alpha: float, causal: bool, scale: float, window: tuple[int, int],
    n_iter: int, config: AttnConfig | None = None, profile: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(o, τ, 1/S, tile states) for q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv).
    ``profile`` (compiled kernels only): int64 (B · Hq · n_m, ``PROFILE_SLOTS``) per-program phase
    clocks (a separately compiled variant of the kernel)."""
    q, k, v = _inner(q), _inner(k), _inner(v)
    B, Hq, Sq, D = q.shape
    Hkv, Sk, DV = k.shape[1], k.shape[2], v.shape[-1]
    com = _common(q, alpha, scale, window, config)
    cfg = com["cfg"]
    n_m, n_n = _host.cdiv(Sq, cfg.block_m), _host.cdiv(Sk, cfg.block_n)
    o = q.new_empty(B, Hq, Sq, DV)
    tau = q.new_empty(B, Hq, Sq, dtype=com["acc"])
    rn = q.new_empty(B, Hq, Sq, dtype=com["acc"])
    states = torch.zeros(B, Hq, n_m, n_n, dtype=torch.int8, device=q.device)
    if o.numel() == 0:
        return o, tau, rn, states
    tile_list = torch.empty(B, Hq, n_m, n_n, dtype=torch.int32, device=q.device)
    run_max = torch.empty(B, Hq, n_m, START_GROUPS, cfg.block_m, dtype=com["acc"], device=q.device)
    blocks = (max(16, _host.next_power_of_2(D)), max(16, _host.next_power_of_2(DV)))
    _FWD(
        (B * Hq, n_m, 1), (com["static"], q.dtype, causal, blocks, profile is not None),
        (q, k, v, o, tau, rn, states, tile_list, run_max, states if profile is None else profile, com["constants"]),
        (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
         Hq, Hq // Hkv, Sq, Sk, D, DV, n_m, n_n, com["wl"], com["wr"], n_iter),
        (),
        lambda: dict(
            CAUSAL=causal, BLOCK_D=blocks[0], BLOCK_DV=blocks[1], GROUPS=START_GROUPS, LIST_STAGES=_list_stages(cfg, True),
            COMPILED=COMPILED, CHUNK=LIST_CHUNK_FWD, PROFILE=profile is not None and COMPILED,
            **com["constexprs"], num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            **({"maxnreg": cfg.fwd_maxnreg} if cfg.fwd_maxnreg else {}),
        ),
    )
    return o, tau, rn, states


@triton.jit
def _live_lists_kernel(
    p_st,  # int8 tile states (B, Hq, n_m, n_n)
    p_ls, p_cn,  # out: int32 (n_rows, n_e) lists, (n_rows,) their lengths
    n_lo, s_hi, s_lo, s_e, n_e, e_div,
    BLOCK_E: tl.constexpr, SHIFT: tl.constexpr,
):
    """One list per program: row r = r_hi · n_lo + r_lo reads entry e of the states at
    r_hi · s_hi + r_lo · s_lo + e · s_e and lists, ascending, the entries e that are live (1),
    each as (e // e_div) · 2^SHIFT + e % e_div (e itself when e_div ≥ n_e)."""
    i_r = tl.program_id(0).to(tl.int64)
    p_stb = p_st + (i_r // n_lo) * s_hi + (i_r % n_lo) * s_lo
    p_lsb = p_ls + i_r * n_e
    n_live = 0
    for i_e in range(0, n_e, BLOCK_E):
        o_e = i_e + tl.arange(0, BLOCK_E)
        b_live = (tl.load(p_stb + o_e.to(tl.int64) * s_e, mask=o_e < n_e, other=0) == 1).to(tl.int32)
        b_val = ((o_e // e_div) << SHIFT) | (o_e % e_div)
        tl.store(p_lsb + n_live + tl.cumsum(b_live, 0) - b_live, b_val, mask=b_live > 0)
        n_live += tl.sum(b_live, 0)
    tl.store(p_cn + i_r, n_live)


LIST_CHUNK = 1024
"""Entries ``_live_lists_kernel`` reads at once."""

LIST_SHIFT = 20
"""The dkdv kernel's list entries are i_g · 2^LIST_SHIFT + i_m (a shift and a mask per tile
instead of an integer division by n_m): n_m ≤ 2^20 query tiles, G < 2^11 query heads per KV head."""


def live_tile_lists(states: Tensor, Hkv: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From the tile states (B, Hq, n_m, n_n): each query tile's live key tiles (B, Hq, n_m, n_n)
    and their number (B, Hq, n_m); each key tile's live (query head in the group i_g, query tile
    i_m) pairs as i_g · 2^LIST_SHIFT + i_m (B, Hkv, n_n, G · n_m) and their number (B, Hkv, n_n). Lists are
    ascending, int32; entries past the number are unspecified. Two launches of one kernel."""
    B, Hq, n_m, n_n = states.shape
    G = Hq // Hkv
    if n_m > 1 << LIST_SHIFT or G >= 1 << (31 - LIST_SHIFT):
        raise ValueError(f"diffmax attention: {n_m} query tiles or {G} query heads per KV head is too many")
    states = states.contiguous()
    by_query = torch.empty(B, Hq, n_m, n_n, dtype=torch.int32, device=states.device)
    count_query = torch.empty(B, Hq, n_m, dtype=torch.int32, device=states.device)
    by_key = torch.empty(B, Hkv, n_n, G * n_m, dtype=torch.int32, device=states.device)
    count_key = torch.empty(B, Hkv, n_n, dtype=torch.int32, device=states.device)
    if states.numel() == 0:
        return by_query, count_query.zero_(), by_key, count_key.zero_()
    # rows (b, h, i_m), entries i_n; rows (b, kh, i_n), entries i_g · n_m + i_m (stride n_n)
    for lists, counts, rows, n_lo, s_hi, s_lo, s_e, n_e, e_div in (
        (by_query, count_query, B * Hq * n_m, 1, n_n, 0, 1, n_n, n_n),
        (by_key, count_key, B * Hkv * n_n, n_n, G * n_m * n_n, 1, n_n, G * n_m, n_m),
    ):
        block_e = min(LIST_CHUNK, max(16, _host.next_power_of_2(n_e)))
        _LISTS(
            (rows, 1, 1), block_e, (states, lists, counts), (n_lo, s_hi, s_lo, s_e, n_e, e_div), (),
            lambda block_e=block_e: dict(BLOCK_E=block_e, SHIFT=LIST_SHIFT, num_warps=4),
        )
    return by_query, count_query, by_key, count_key


def attention_bwd_launch(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, tau: Tensor, rn: Tensor, states: Tensor,
    alpha: float, causal: bool, scale: float, window: tuple[int, int], config: AttnConfig | None = None,
    kernels: str = "dq,dkdv",
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) from the forward's τ, 1/S and tile states (same ``config`` as the forward).
    ``kernels`` (profiling only): the kernels launched after the lists, "dq", "dkdv" or both (dkdv
    alone reads an unset Δ: timing only)."""
    q, k, v, do = _inner(q), _inner(k), _inner(v), _inner(do)
    B, Hq, Sq, D = q.shape
    Hkv, Sk, DV = k.shape[1], k.shape[2], v.shape[-1]
    com = _common(q, alpha, scale, window, config)
    cfg = com["cfg"]
    n_m, n_n = states.shape[2], states.shape[3]
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    by_query, count_query, by_key, count_key = live_tile_lists(states, Hkv)
    delta, c_r, tau_r = torch.empty((3, *tau.shape), dtype=tau.dtype, device=tau.device).unbind(0)
    blocks = dict(BLOCK_D=max(16, _host.next_power_of_2(D)), BLOCK_DV=max(16, _host.next_power_of_2(DV)))
    # deeper list pipelines only for 16-bit D, Dv ≤ 64: larger tiles would spill or (dkdv, D = 128)
    # need 249 KB of shared memory
    deep = q.element_size() == 2 and blocks["BLOCK_D"] + blocks["BLOCK_DV"] <= 128
    dq_m = cfg.bwd_block_m or cfg.block_m

    def dq_options() -> dict:  # called by LeanKernel on a miss only (host time)
        return dict(CAUSAL=causal, **blocks, **com["constexprs"], LIST_STAGES=_list_stages(cfg, deep), STEP_M=dq_m,
                    num_warps=cfg.bwd_warps or cfg.num_warps, num_stages=cfg.num_stages)

    def dkdv_options() -> dict:
        dkdv = dq_options()
        dkdv.update(LIST_SHIFT=LIST_SHIFT, STEP_M=cfg.dkdv_block_m or dq_m, num_warps=cfg.dkdv_warps or dkdv["num_warps"])
        if cfg.dkdv_stages:
            dkdv.update(num_stages=cfg.dkdv_stages, LIST_STAGES=_list_stages(AttnConfig(1, 1, 1, cfg.dkdv_stages), deep))
        if cfg.dkdv_maxnreg:
            dkdv["maxnreg"] = cfg.dkdv_maxnreg
        return dkdv

    constants, window = com["constants"], (com["wl"], com["wr"])
    static = (com["static"], q.dtype, do.dtype, causal, blocks["BLOCK_D"], blocks["BLOCK_DV"], deep)
    run = kernels.split(",")
    if "dq" in run:
        _DQ(
            (B * Hq, n_m * (cfg.block_m // dq_m), 1), static, (q, k, v, do, dq, tau, rn, by_query, count_query, delta, c_r, tau_r, constants),
            (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dq.stride()[:3],
             Hq, Hq // Hkv, Sq, Sk, D, DV, n_m, n_n, *window), (), dq_options,
        )
    else:
        delta.zero_()
        c_r.fill_(1.0)
        tau_r.fill_(float("inf"))
    if "dkdv" in run:
        _DKDV(
            (B * Hkv, n_n, 1), static, (q, k, v, do, dk, dv, delta, c_r, tau_r, by_key, count_key, constants),
            (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dk.stride()[:3], *dv.stride()[:3],
             Hq, Hkv, Hq // Hkv, Sq, Sk, D, DV, n_m, n_n, *window), (), dkdv_options,
        )
    return dq, dk, dv


# Lean launches (flashmarkov._launch): each key below the kernel's ``static`` argument holds every
# constexpr and launch option, and with it the dtype of every pointer (q's dtype fixes k, v, o
# and the ACC tensors; tile states int8, lists int32, profile int64 when given)
_FWD = LeanKernel(_attn_fwd_kernel)
_LISTS = LeanKernel(_live_lists_kernel)
_DQ = LeanKernel(_attn_bwd_dq_kernel)
_DKDV = LeanKernel(_attn_bwd_dkdv_kernel)
