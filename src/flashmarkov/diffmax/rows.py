"""Triton kernels for α-diffmax along one axis ("rows"), forward and backward.

Every tensor is seen as a strided 3-D view (P, N, Q): the normalised axis N between an outer
P and an inner Q; row r = i_p * Q + i_q (row-major over the shape without the axis). A row with
the axis innermost is (R, N, 1); a contiguous tensor normalised along a middle axis is
(outer, N, inner). Neither needs a copy. One program owns one row.

Forward (../math.md §3): with X' = (1 − α) z, k = 1 / (1 − α) and y = [X' − τ]_+, τ solves
Σ y^k = 1. The kernel runs Newton's method on F(τ) = ‖y‖_k − 1, not on Σ y^k − 1: F is convex
and decreasing in τ, so Newton steps from the bracket's lower end τ_lo = max X' − 1 rise
monotonically to the root without overshooting, and F is exactly linear for a single entry or
equal entries, where one step is exact. With S = Σ y^k and T = Σ y^(k−1) the step is
Δτ = (S − S^(1−1/k)) / T. It stops when a step rises by at most a few ulps of τ, or does not
shrink (exact steps shrink monotonically, so that is rounding noise) — a handful of steps: ≤ 8
to float64 resolution on Gaussian rows of 4096, any α — or after ``n_iter`` steps; τ stays
inside [τ_lo, τ_hi] = [max X' − 1, max X' − N^−(1−α)]. Then p = y^k (/ S with ensure_sum_one).
So ``n_iter`` is the cap on Newton steps here; the reference uses it as its number of bisection
halvings.

A row of at most BLOCK_N entries (SINGLE) is loaded once into registers: one read and one write
of the row, as softmax. Longer rows stream through BLOCK_N chunks: one pass for the max, one per
Newton step, one to write (no length cap). Half types compute in float32, float64 in float64.
α is a per-row tensor (stride s_a, 0 when shared) or a scalar argument (a float argument
reaches a compiled kernel as float32, so float64 data get a scalar α as a 1-element tensor); a
scalar α whose k is 2, 3 or 4 (α = 1/2, 2/3, 3/4) computes the powers by multiplication (POW).

Backward: s = p^α [p > 0], dz = s ⊙ dp − s (Σ s dp) / Σ s, and with NEED_DA the per-row dα of
../math.md §3 at q = p / Σp, in a form without cancellation: with v = −(1−α) log q ≥ 0,
w = q (e^v − 1 − v) = q^α − q (1 + v) ≥ 0, V = Σ q v and W = Σ w (so Σ q^α = 1 + V + W),

    dα = −E / (1−α)²,   E = Σ dp · t,   t = [q (1 + v) W − w (1 + V)] / (1 + V + W),

which is math.md's bracket (q − s̃) − (1−α)(q log q − s̃ H) rewritten exactly for Σq = 1. t is
O((1−α)²) and is formed from O((1−α)²) quantities (w, W), where math.md's form subtracts O(1)
ones (p and s̃) and then two O(1−α) halves: in float32 that lost a factor ~1/(1−α)² of relative
accuracy (relative dα errors of 1e-3 at α = 0.9 on 4-entry rows). Evaluating at q = p / Σp
rather than p makes dα insensitive to the ~1e-7 by which a float32 p misses Σp = 1, which the
formula taken literally amplifies by 1/(1−α)² (its derivative along Σp). w comes from its
Taylor series below v = 2 (``_phi``: positive terms, a few ulps) and as q^α − q (1 + v) above.
SINGLE rows read p and dp once: row sums, then dz and dα from registers. Longer rows read them
twice: a pass for Σ s dp, Σ s and Σp, a second for dz and the sums V, W, Σ dp q (1 + v) and
Σ dp w, from which E = [W Σ dp q (1 + v) − (1 + V) Σ dp w] / (1 + V + W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import _host

Tensor = torch.Tensor


@dataclass(frozen=True)
class RowView:
    """Element strides of a tensor seen as (P, N, Q)."""

    s_p: int
    s_n: int
    s_q: int


@dataclass(frozen=True)
class RowConfig:
    """Chunk of a row held in registers, and warps per program."""

    block_n: int
    num_warps: int


MAX_BLOCK = {8: 4096, 4: 8192, 2: 8192}
"""Longest row held in registers, by element size of the compute dtype (float64 4096, else 8192)."""


def pick_config(n: int, acc_itemsize: int) -> RowConfig:
    """Block of next_pow2(N) up to MAX_BLOCK (a single block), and 1–16 warps by block size."""
    block = min(_host.next_power_of_2(max(n, 16)), MAX_BLOCK[acc_itemsize])
    return RowConfig(block, max(1, min(16, block // 512)))


def integer_power(alpha: float) -> int:
    """k = 1 / (1 − α) when it is 2, 3 or 4 (α = 1/2, 2/3, 3/4), else 0 (general powers)."""
    k = 1.0 / (1.0 - alpha)
    return int(round(k)) if round(k) in (2, 3, 4) and abs(k - round(k)) < 1e-12 else 0


def row_shape(x: Tensor, dim: int) -> tuple[int, int, int]:
    """(P, N, Q) of ``x`` along ``dim``."""
    return math.prod(x.shape[:dim]), x.shape[dim], math.prod(x.shape[dim + 1 :])


def view_of(x: Tensor, dim: int) -> tuple[int, int, int, RowView] | None:
    """((P, N, Q), strides) for ``x`` along ``dim`` without a copy, or None.

    The axis innermost after moving it last (any row stride) gives (R, N, 1); a contiguous
    tensor gives (outer, N, inner)."""
    n = x.shape[dim]
    moved = x.movedim(dim, -1)
    try:
        rows = moved.view(-1, n)
    except RuntimeError:
        rows = None
    if rows is not None:
        return (rows.shape[0], n, 1), RowView(rows.stride(0), rows.stride(1), 0)
    if x.is_contiguous():
        p, n, q = row_shape(x, dim)
        return (p, n, q), RowView(n * q, q, 1)
    return None


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
def _power_sums(p_xr, s_n, N, b_x, tau, one_minus, k, SINGLE: tl.constexpr, POW: tl.constexpr,
                BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """(S, T) = (Σ y^k, Σ y^(k−1)) with y = [X' − τ]_+ over the row (registers or streamed)."""
    if SINGLE:
        b_ykm1, b_yk = _powers(tl.maximum(b_x - tau, 0.0), k, POW)
        return tl.sum(b_yk), tl.sum(b_ykm1)
    else:
        o_n = tl.arange(0, BLOCK_N)
        b_s = tl.zeros([BLOCK_N], ACC)
        b_t = tl.zeros([BLOCK_N], ACC)
        start = 0
        while start < N:
            m_n = start + o_n < N
            b_c = tl.load(p_xr + (start + o_n).to(tl.int64) * s_n, mask=m_n, other=float("-inf")).to(ACC)
            b_ykm1, b_yk = _powers(tl.maximum(b_c * one_minus - tau, 0.0), k, POW)
            b_s += b_yk
            b_t += b_ykm1
            start += BLOCK_N
        return tl.sum(b_s), tl.sum(b_t)


@triton.jit
def _newton_step(S, T, k):
    """Newton step on F(τ) = S^(1/k) − 1: Δτ = (S − S^(1−1/k)) / T; 0 for an empty row."""
    s_pow = tl.exp((1.0 - 1.0 / k) * tl.log(S))
    return tl.where(T > 0, (S - s_pow) / tl.where(T > 0, T, 1.0), 0.0)


@triton.jit
def _diffmax_fwd_kernel(
    p_x,  # scores, (P, N, Q) with element strides (sx_p, sx_n, sx_q)
    p_y,  # out: p, (P, N, Q) with strides (sy_p, sy_n, sy_q)
    p_a,  # ACC [R] α per row with stride s_a (HAS_ALPHA), else None
    p_tau,  # out: ACC [R] τ per row (−inf for a row without finite entries)
    N, Q,
    sx_p, sx_n, sx_q,
    sy_p, sy_n, sy_q,
    s_a,
    alpha,  # α when not HAS_ALPHA
    n_iter,  # cap on Newton steps
    tol,  # stop when a step rises by at most tol * (1 + |τ|)
    ACC: tl.constexpr,  # compute dtype: float32, or float64 for float64 data
    BLOCK_N: tl.constexpr,
    SINGLE: tl.constexpr,  # N <= BLOCK_N: the row lives in registers
    HAS_ALPHA: tl.constexpr,
    POW: tl.constexpr,  # k = 1/(1−α) as an integer 2..4, or 0
    ENSURE_SUM_ONE: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    i_p = i_r // Q
    i_q = i_r % Q
    p_xr = p_x + i_p * sx_p + i_q * sx_q
    p_yr = p_y + i_p * sy_p + i_q * sy_q
    if HAS_ALPHA:
        b_alpha = tl.load(p_a + i_r * s_a).to(ACC)
    else:
        b_alpha = tl.zeros([], ACC) + alpha
    one_minus = 1.0 - b_alpha
    k = 1.0 / one_minus
    o_n = tl.arange(0, BLOCK_N)
    if SINGLE:
        # [BLOCK_N] the whole row, masked and padded entries at −inf
        b_x = tl.load(p_xr + o_n.to(tl.int64) * sx_n, mask=o_n < N, other=float("-inf")).to(ACC) * one_minus
        m = tl.max(b_x)
        n_fin = tl.sum((b_x > float("-inf")).to(ACC))
        # NaN or +inf anywhere: the row is NaN (as softmax propagates them), not a quiet answer without them
        n_bad = tl.sum(((b_x != b_x) | (b_x == float("inf"))).to(tl.int32))
    else:
        b_x = tl.zeros([BLOCK_N], ACC)
        b_m = tl.full([BLOCK_N], float("-inf"), ACC)
        b_cnt = tl.zeros([BLOCK_N], ACC)
        b_bad = tl.zeros([BLOCK_N], tl.int32)
        start = 0
        while start < N:
            m_n = start + o_n < N
            b_c = tl.load(p_xr + (start + o_n).to(tl.int64) * sx_n, mask=m_n, other=float("-inf")).to(ACC)
            b_m = tl.maximum(b_m, b_c * one_minus)
            b_cnt += (b_c > float("-inf")).to(ACC)
            b_bad += ((b_c != b_c) | (b_c == float("inf"))).to(tl.int32)
            start += BLOCK_N
        m = tl.max(b_m)
        n_fin = tl.sum(b_cnt)
        n_bad = tl.sum(b_bad)
    empty = n_fin == 0
    m = tl.where(empty | (n_bad > 0), 0.0, m)
    tau_lo = m - 1.0
    tau_hi = m - tl.exp(-one_minus * tl.log(tl.maximum(n_fin, 1.0)))
    tau = tau_lo
    S, T = _power_sums(p_xr, sx_n, N, b_x, tau, one_minus, k, SINGLE, POW, BLOCK_N, ACC)
    step = _newton_step(S, T, k)
    prev = tl.full([], float("inf"), ACC)
    it = 0
    # exact steps shrink monotonically; a step that does not shrink is rounding noise: converged
    while (it < n_iter) & (step > tol * (1.0 + tl.abs(tau))) & (step < prev):
        tau = tl.minimum(tl.maximum(tau + step, tau_lo), tau_hi)
        S, T = _power_sums(p_xr, sx_n, N, b_x, tau, one_minus, k, SINGLE, POW, BLOCK_N, ACC)
        prev = step
        step = _newton_step(S, T, k)
        it += 1
    if ENSURE_SUM_ONE:
        scale = 1.0 / tl.where(S > 0, S, 1.0)
    else:
        scale = tl.full([], 1.0, ACC)
    scale = tl.where(n_bad > 0, float("nan"), scale)
    if SINGLE:
        _, b_p = _powers(tl.maximum(b_x - tau, 0.0), k, POW)
        tl.store(p_yr + o_n.to(tl.int64) * sy_n, (b_p * scale).to(p_y.dtype.element_ty), mask=o_n < N)
    else:
        start = 0
        while start < N:
            m_n = start + o_n < N
            b_c = tl.load(p_xr + (start + o_n).to(tl.int64) * sx_n, mask=m_n, other=float("-inf")).to(ACC)
            _, b_p = _powers(tl.maximum(b_c * one_minus - tau, 0.0), k, POW)
            tl.store(p_yr + (start + o_n).to(tl.int64) * sy_n, (b_p * scale).to(p_y.dtype.element_ty), mask=m_n)
            start += BLOCK_N
    tl.store(p_tau + i_r, tl.where(n_bad > 0, float("nan"), tl.where(empty, float("-inf"), tau)))


@triton.jit
def _bwd_s(b_y, b_alpha, POW: tl.constexpr):
    """s = p^α [p > 0] (sqrt p when α = 1/2)."""
    if POW == 2:
        b_s = tl.sqrt(b_y)
    else:
        pos = b_y > 0
        b_s = tl.where(pos, tl.exp(b_alpha * tl.log(tl.where(pos, b_y, 1.0))), 0.0)
    return b_s


@triton.jit
def _phi(b_v, TERMS: tl.constexpr):
    """e^v − 1 − v for 0 ≤ v < 2 by its Taylor series v²/2 (1 + v/3 (1 + v/4 (… (1 + v/(TERMS+1))))):
    positive terms, a few ulps (TERMS 12 for float32, 22 for float64). The direct form loses
    ~2/v² ulps, and v = (1−α)|log q| is small for the entries that carry the weight."""
    b_b = b_v * 0.0 + 1.0
    for j in tl.static_range(TERMS + 1, 2, -1):
        b_b = 1.0 + b_b * b_v * (1.0 / j)
    return 0.5 * b_v * b_v * b_b


@triton.jit
def _alpha_terms(b_y, r_P, b_alpha, one_minus, PHI_TERMS: tl.constexpr):
    """Per entry, with q = p / Σp (``r_P`` = 1 / Σp): (q, v, w), v = −(1−α) log q ≥ 0 and
    w = q (e^v − 1 − v) = q^α − q (1 + v) ≥ 0; 0 where p = 0."""
    b_q = b_y * r_P
    pos = b_q > 0
    b_lq = tl.log(tl.where(pos, b_q, 1.0))
    b_v = -one_minus * b_lq
    b_w = tl.where(b_v < 2.0, b_q * _phi(b_v, PHI_TERMS), tl.exp(b_alpha * b_lq) - b_q * (1.0 + b_v))
    return b_q, b_v, tl.where(pos, b_w, 0.0)


@triton.jit
def _diffmax_bwd_kernel(
    p_y,  # p from the forward, (P, N, Q) with strides (sy_p, sy_n, sy_q)
    p_dy,  # d loss / d p, strides (sg_p, sg_n, sg_q)
    p_dx,  # out: d loss / d z, strides (sd_p, sd_n, sd_q)
    p_a,  # ACC [R] α per row with stride s_a (HAS_ALPHA), else None
    p_da,  # out: ACC [R] d loss / d α per row (NEED_DA), else None
    N, Q,
    sy_p, sy_n, sy_q,
    sg_p, sg_n, sg_q,
    sd_p, sd_n, sd_q,
    s_a,
    alpha,  # α when not HAS_ALPHA
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SINGLE: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    POW: tl.constexpr,  # 2 when α = 1/2 (s = sqrt p), else 0
    NEED_DA: tl.constexpr,
    PHI_TERMS: tl.constexpr,  # Taylor terms of e^v − 1 − v: 12 for float32, 22 for float64
):
    i_r = tl.program_id(0).to(tl.int64)
    i_p = i_r // Q
    i_q = i_r % Q
    p_yr = p_y + i_p * sy_p + i_q * sy_q
    p_gr = p_dy + i_p * sg_p + i_q * sg_q
    p_dr = p_dx + i_p * sd_p + i_q * sd_q
    if HAS_ALPHA:
        b_alpha = tl.load(p_a + i_r * s_a).to(ACC)
    else:
        b_alpha = tl.zeros([], ACC) + alpha
    one_minus = 1.0 - b_alpha
    o_n = tl.arange(0, BLOCK_N)
    # pass 1, [BLOCK_N] partial sums: B = Σ dp s, C = Σ s, P = Σ p
    if SINGLE:
        b_y = tl.load(p_yr + o_n.to(tl.int64) * sy_n, mask=o_n < N, other=0.0).to(ACC)
        b_dy = tl.load(p_gr + o_n.to(tl.int64) * sg_n, mask=o_n < N, other=0.0).to(ACC)
        b_s = _bwd_s(b_y, b_alpha, POW)
        b_B, b_C, b_P = b_s * b_dy, b_s, b_y
    else:
        b_B = tl.zeros([BLOCK_N], ACC)
        b_C = tl.zeros([BLOCK_N], ACC)
        b_P = tl.zeros([BLOCK_N], ACC)
        start = 0
        while start < N:
            m_n = start + o_n < N
            o_e = (start + o_n).to(tl.int64)
            b_c = tl.load(p_yr + o_e * sy_n, mask=m_n, other=0.0).to(ACC)
            b_g = tl.load(p_gr + o_e * sg_n, mask=m_n, other=0.0).to(ACC)
            b_sc = _bwd_s(b_c, b_alpha, POW)
            b_B += b_sc * b_g
            b_C += b_sc
            if NEED_DA:
                b_P += b_c
            start += BLOCK_N
    C = tl.sum(b_C)
    r_C = tl.where(C > 0, 1.0 / tl.where(C > 0, C, 1.0), 0.0)
    ratio = tl.sum(b_B) * r_C
    P = tl.sum(b_P)
    r_P = tl.where(P > 0, 1.0 / tl.where(P > 0, P, 1.0), 0.0)
    # pass 2: dz = s (dp − ratio); with NEED_DA, E = Σ dp [q (1 + v) W − w (1 + V)] / (1 + V + W)
    # (module docstring: no cancellation of O(1) terms)
    if SINGLE:
        tl.store(p_dr + o_n.to(tl.int64) * sd_n, (b_s * (b_dy - ratio)).to(p_dx.dtype.element_ty), mask=o_n < N)
        if NEED_DA:
            b_q, b_v, b_w = _alpha_terms(b_y, r_P, b_alpha, one_minus, PHI_TERMS)
            V = tl.sum(b_q * b_v)
            W = tl.sum(b_w)
            E = tl.sum(b_dy * (b_q * (1.0 + b_v) * W - b_w * (1.0 + V))) / (1.0 + V + W)
    else:
        # [BLOCK_N] partial sums of q v, w, dp q (1 + v) and dp w
        b_V = tl.zeros([BLOCK_N], ACC)
        b_W = tl.zeros([BLOCK_N], ACC)
        b_Gq = tl.zeros([BLOCK_N], ACC)
        b_Gw = tl.zeros([BLOCK_N], ACC)
        start = 0
        while start < N:
            m_n = start + o_n < N
            o_e = (start + o_n).to(tl.int64)
            b_c = tl.load(p_yr + o_e * sy_n, mask=m_n, other=0.0).to(ACC)
            b_g = tl.load(p_gr + o_e * sg_n, mask=m_n, other=0.0).to(ACC)
            b_sc = _bwd_s(b_c, b_alpha, POW)
            tl.store(p_dr + o_e * sd_n, (b_sc * (b_g - ratio)).to(p_dx.dtype.element_ty), mask=m_n)
            if NEED_DA:
                b_q, b_v, b_w = _alpha_terms(b_c, r_P, b_alpha, one_minus, PHI_TERMS)
                b_V += b_q * b_v
                b_W += b_w
                b_Gq += b_g * b_q * (1.0 + b_v)
                b_Gw += b_g * b_w
            start += BLOCK_N
        V = tl.sum(b_V)
        W = tl.sum(b_W)
        E = (W * tl.sum(b_Gq) - (1.0 + V) * tl.sum(b_Gw)) / (1.0 + V + W)
    if NEED_DA:
        tl.store(p_da + i_r, -E / (one_minus * one_minus))


def _main_view(x: Tensor, dim: int) -> tuple[Tensor, tuple[int, int, int], RowView]:
    """``x`` (made contiguous when it has no copy-free view or repeats entries) and its view."""
    found = view_of(x, dim)
    if found is None or any(st == 0 and sz > 1 for st, sz in zip(x.stride(), x.shape)):
        x = x.contiguous()
        found = view_of(x, dim)
    return x, found[0], found[1]


def _like(t: Tensor, x: Tensor, dim: int, shape: tuple[int, int, int], keep_values: bool) -> tuple[Tensor, RowView]:
    """``t`` with x's (P, N, Q) decomposition: itself when it has one, else a tensor laid out like
    ``x`` (holding t's values with ``keep_values``; the caller copies an output back)."""
    found = view_of(t, dim)
    if found is not None and found[0] == shape:
        return t, found[1]
    work = torch.empty_like(x, dtype=t.dtype)
    if keep_values:
        work.copy_(t)
    return work, view_of(work, dim)[1]


def alpha_rows(alpha: Tensor, x: Tensor, dim: int) -> Tensor:
    """α (keepdim-broadcastable, compute dtype) as a 1-D per-row tensor, stride 0 when shared."""
    keep = [1 if i == dim else s for i, s in enumerate(x.shape)]
    return alpha.expand(keep).squeeze(dim).reshape(-1) if x.dim() > 1 else alpha.reshape(1)


def _alpha_arg(alpha: Tensor | None, alpha_value: float, x: Tensor, dim: int, acc: torch.dtype) -> Tensor | None:
    """The kernels' per-row α: ``alpha`` as rows; for float64 data a scalar α too, as a 1-element
    float64 tensor of stride 0 (a float argument reaches a compiled kernel as float32)."""
    if alpha is not None:
        return alpha_rows(alpha, x, dim)
    if acc == torch.float64:
        return torch.full((1,), alpha_value, dtype=acc, device=x.device)
    return None


def diffmax_fwd_launch(
    x: Tensor,
    alpha: Tensor | None,
    alpha_value: float,
    dim: int,
    n_iter: int,
    ensure_sum_one: bool,
    out: Tensor,
    tau: Tensor,
    config: RowConfig | None = None,
) -> None:
    """Write α-diffmax of ``x`` along ``dim`` into ``out`` (x's shape and dtype) and τ per row
    into ``tau`` (contiguous, compute dtype, R = numel / N entries). ``alpha``: per-row α
    broadcastable to x with ``dim`` of size 1 (compute dtype), or None for ``alpha_value``."""
    dim = dim % x.dim()
    n = x.shape[dim]
    rows = x.numel() // n if n else 0
    if rows == 0:
        return
    x, shape, vx = _main_view(x, dim)
    work, vy = _like(out, x, dim, shape, False)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    cfg = config or pick_config(n, acc.itemsize)
    a = _alpha_arg(alpha, alpha_value, x, dim, acc)
    _diffmax_fwd_kernel[(rows,)](
        x, work, a, tau, n, shape[2],
        vx.s_p, vx.s_n, vx.s_q, vy.s_p, vy.s_n, vy.s_q,
        0 if a is None or a.numel() == 1 else a.stride(0), alpha_value, n_iter, 4.0 * torch.finfo(acc).eps,
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_N=cfg.block_n,
        SINGLE=n <= cfg.block_n,
        HAS_ALPHA=a is not None,
        POW=0 if alpha is not None else integer_power(alpha_value),
        ENSURE_SUM_ONE=ensure_sum_one,
        num_warps=cfg.num_warps,
    )
    if work is not out:
        out.copy_(work)


def diffmax_bwd_launch(
    y: Tensor,
    dy: Tensor,
    alpha: Tensor | None,
    alpha_value: float,
    dim: int,
    dx: Tensor,
    dalpha: Tensor | None,
    config: RowConfig | None = None,
) -> None:
    """Write d loss / d z into ``dx`` (y's shape and dtype) and, when ``dalpha`` is given,
    d loss / d α per row into it (contiguous, compute dtype, R entries)."""
    dim = dim % y.dim()
    n = y.shape[dim]
    rows = y.numel() // n if n else 0
    if rows == 0:
        return
    y, shape, vy = _main_view(y, dim)
    dy, vg = _like(dy, y, dim, shape, True)
    work, vd = _like(dx, y, dim, shape, False)
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    cfg = config or pick_config(n, acc.itemsize)
    a = _alpha_arg(alpha, alpha_value, y, dim, acc)
    _diffmax_bwd_kernel[(rows,)](
        y, dy, work, a, dalpha, n, shape[2],
        vy.s_p, vy.s_n, vy.s_q, vg.s_p, vg.s_n, vg.s_q, vd.s_p, vd.s_n, vd.s_q,
        0 if a is None or a.numel() == 1 else a.stride(0), alpha_value,
        ACC=tl.float64 if acc == torch.float64 else tl.float32,
        BLOCK_N=cfg.block_n,
        SINGLE=n <= cfg.block_n,
        HAS_ALPHA=a is not None,
        POW=2 if alpha is None and integer_power(alpha_value) == 2 else 0,
        NEED_DA=dalpha is not None,
        PHI_TERMS=22 if acc == torch.float64 else 12,
        num_warps=cfg.num_warps,
    )
    if work is not dx:
        dx.copy_(work)
