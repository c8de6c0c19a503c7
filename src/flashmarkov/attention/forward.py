"""Triton forward of softmax attention (FlashAttention-2 style), ../math.md §2.

A program owns BLOCK_M query rows of one (sequence, query head), keeps its q tile resident and
walks the K/V tiles of the visible band only, with an online softmax in base 2 (scale·log2 e is
folded into the scores). The band splits into at most three ranges: masked tiles at the left
edge, unmasked interior tiles, masked tiles at the right edge (causal diagonal, window edge, end
of the keys), so masks cost only on boundary tiles. It writes o and lse (natural log).

One kernel serves every variant through constexpr flags: HAS_LEFT / HAS_RIGHT (causal and
sliding window: the left and right bounds of the band), SOFTCAP, VARLEN (packed sequences: the
program's sequence comes from the int32 offsets), and GQA through the run-time group size (query
head h reads key/value head h // group). Head dims that are not powers of two are padded to
BLOCK_D with masked loads. Tensors are passed with all their strides: "bshd" needs no copy.

Shared helpers (band bounds, scores, masks) are used by ``backward.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .. import _host, _runtime
from .._launch import LeanKernel
from . import gluon_forward

Tensor = torch.Tensor

LOG2E = tl.constexpr(1.4426950408889634)


class AttnConfig(NamedTuple):
    """Tile sizes and launch parameters of one kernel."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def block_d(head_dim: int) -> int:
    """The head dim padded to a power of two (at least 16, the smallest tl.dot size)."""
    return max(16, _host.next_power_of_2(head_dim))


def pick_config(kind: str, head_dim: int, banded: bool = False, itemsize: int = 2) -> AttnConfig:
    """Heuristic tiles per kernel kind ("fwd", "dkdv", "dq", "delta"), padded head dim, for the
    forward whether a band (causal, sliding window) masks the scores, and the element size.

    16-bit, D <= 128: the fastest of ``tune.CANDIDATES`` on an H100 (see ``_pick_config``);
    float32 (tf32x3 dots on the tensor cores), D <= 128: the fastest of
    ``tune.CANDIDATES_FP32``; 16-bit D = 256: the fastest of a sweep on an H100 (session 17);
    float32 D = 256 (IEEE dots): starting points checked offline with ptxas for sm_90a (at most
    88 B of spills). Under the interpreter, small tiles so that short sequences still span
    several tiles.
    """
    key = (kind, head_dim, banded, itemsize)
    cfg = _CONFIGS.get(key)
    if cfg is None:
        cfg = _CONFIGS[key] = _pick_config(kind, block_d(head_dim), banded, itemsize, _runtime.interpreting())
    return cfg


_CONFIGS: dict[tuple[str, int, bool, int], AttnConfig] = {}  # pick_config's answers (it is on every launch's path)


def _pick_config(kind: str, d: int, banded: bool, itemsize: int, interpreting: bool) -> AttnConfig:
    # D <= 128 from `python -m flashmarkov.attention.tune` on an H100: 16-bit D = 64 at (16,8,512)
    # and (4,8,2048), D = 128 at (2,16,8192) (benchmarks/results/attention-tune-h100-2026-11-22.log);
    # float32 (tf32x3 dots) at (2,16,2048), non-causal (benchmarks/results/h100-2026-11-22-session7/attention-tune-fp32-f12229f.log):
    # D = 64 forward 128 x 64 w8 50 TFLOP/s, dK/dV 32 x 64 w4 29, dQ 64 x 32 w4 31; D = 128: 32 x 32
    # w4 for all three (42 / 28 / 28; the 64-row tiles that take wgmma spill or overflow shared
    # memory there). 16-bit D = 256 at (2,16,4096), causal and not, from a wider candidate list
    # (benchmarks/results/h100-2026-11-23-session17/attention-tune-d256.log, TFLOP/s against the
    # earlier offline picks): forward 128 x 32 w8 s3 460 / 384 causal (64 x 32 w8 s2: 170 / 153),
    # dK/dV 32 x 32 w4 s2 128 / 122 (32 x 32 w8: 95 / 91), dQ 128 x 32 w8 s2 206 / 192 (32 x 64 w8:
    # 133 / 124). Float32 D > 128 runs IEEE dots (``dot_precision``) on the earlier tiles: the
    # 16-bit ones need more shared memory than an SM has at 4-byte elements.
    if interpreting:
        return AttnConfig(16, 16, 1, 1)
    if kind == "delta":  # the backward's Δ preprocess
        return AttnConfig(64, 64, 8, 1)
    if d > 128:
        if itemsize == 2:
            return {"fwd": AttnConfig(128, 32, 8, 3), "dkdv": AttnConfig(32, 32, 4, 2), "dq": AttnConfig(128, 32, 8, 2)}[kind]
        return {"fwd": AttnConfig(64, 32, 8, 2), "dkdv": AttnConfig(32, 32, 8, 2), "dq": AttnConfig(32, 64, 8, 2)}[kind]
    if itemsize == 4:
        if d > 64:
            return AttnConfig(32, 32, 4, 2)
        return {"fwd": AttnConfig(128, 64, 8, 2), "dkdv": AttnConfig(32, 64, 4, 1), "dq": AttnConfig(64, 32, 4, 2)}[kind]
    if kind == "fwd":
        return AttnConfig(64, 64, 4, 3) if banded else AttnConfig(128, 64, 8, 3)
    if kind == "dkdv":
        return AttnConfig(32, 64, 4, 3)
    return AttnConfig(64, 64, 4, 3) if d <= 64 else AttnConfig(128, 64, 8, 2)  # "dq"


class Problem(NamedTuple):
    """What every attention kernel needs besides its tensors.

    Dense tensors are canonical (B, H, S, D) views; varlen ones (total, H, D) with ``n_seq``
    sequences given by ``cu_q`` / ``cu_k``. ``wl`` / ``wr`` are the band's left and right bounds
    (``has_left`` / ``has_right`` say whether they apply; causal is wr = 0). A NamedTuple: it
    is built on every call, and a frozen dataclass costs microseconds to build.
    """

    n_seq: int
    hq: int
    hkv: int
    max_sq: int
    max_sk: int
    head_dim: int
    scale: float
    softcap: float
    wl: int
    wr: int
    has_left: bool
    has_right: bool
    cu_q: Tensor | None
    cu_k: Tensor | None

    @property
    def varlen(self) -> bool:
        return self.cu_q is not None

    @property
    def group(self) -> int:
        return self.hq // self.hkv


def dot_precision(dtype: torch.dtype, head_dim: int) -> str:
    """float32 with D <= 128: "tf32x3", three TF32 tensor-core products (hi·hi + hi·lo + lo·hi)
    per dot, each product to ~2^-22 relative: float32-level accuracy (the documented float32
    tolerance) on tensor cores, where IEEE dots run on the FMA units (9 TFLOP/s forward, 1.5 for
    dK/dV on an H100: notes/attention.md). float32 with D > 128: "ieee" (the three operand parts
    of a 256-wide tile need more shared memory than an SM has: 262 KB for the 64 x 32 forward).
    "tf32", Triton's default and without effect on half types, otherwise."""
    if dtype != torch.float32:
        return "tf32"
    return "tf32x3" if head_dim <= 128 else "ieee"


def make_problem(
    q: Tensor,
    k: Tensor,
    cu_q: Tensor | None,
    cu_k: Tensor | None,
    max_sq: int,
    max_sk: int,
    scale: float,
    causal: bool,
    wl: int,
    wr: int,
    softcap: float,
) -> Problem:
    """The ``Problem`` of canonical q, k: (B, Hq, Sq, D) / (B, Hkv, Sk, D), or varlen (total, H, D)."""
    if cu_q is None:
        n_seq, hq, hkv = q.shape[0], q.shape[1], k.shape[1]
        max_sq, max_sk = q.shape[2], k.shape[2]
    else:
        n_seq, hq, hkv = cu_q.shape[0] - 1, q.shape[1], k.shape[1]
    has_right = causal or wr >= 0
    wr = 0 if causal else wr
    return Problem(
        n_seq, hq, hkv, max_sq, max_sk, q.shape[-1], scale, softcap,
        max(wl, 0), wr, wl >= 0, has_right, cu_q, cu_k,
    )


def large_offsets(*tensors: Tensor) -> bool:
    """True when an element offset inside one of ``tensors`` may not fit in int32: the kernels
    then compute in-sequence offsets in int64 (bases are always int64)."""
    for x in tensors:
        if x.untyped_storage().nbytes() >= x.element_size() << 31:
            return True
    return False


def strides4(x: Tensor, varlen: bool) -> tuple[int, ...]:
    """(batch, head, position, dim) element strides of a canonical tensor; varlen has no batch."""
    if varlen:
        s = x.stride()
        return 0, s[1], s[0], s[2]
    return x.stride()


def lse_strides(lse: Tensor, varlen: bool) -> tuple[int, int]:
    """(batch, head) strides of lse: (B, H, S) dense, (H, total) varlen; positions are contiguous."""
    s = lse.stride()
    return (0, s[0]) if varlen else (s[0], s[1])


@triton.jit
def seq_info(p_cu_q, p_cu_k, i_b, max_sq, max_sk, VARLEN: tl.constexpr):
    """(first query row, query length, first key row, key length) of sequence ``i_b``."""
    if VARLEN:
        bos_q = tl.load(p_cu_q + i_b).to(tl.int64)
        sq = (tl.load(p_cu_q + i_b + 1) - bos_q).to(tl.int32)
        bos_k = tl.load(p_cu_k + i_b).to(tl.int64)
        sk = (tl.load(p_cu_k + i_b + 1) - bos_k).to(tl.int32)
    else:
        bos_q = tl.zeros([], tl.int64)
        sq = max_sq
        bos_k = tl.zeros([], tl.int64)
        sk = max_sk
    return bos_q, sq, bos_k, sk


@triton.jit
def query_tile(HAS_RIGHT: tl.constexpr):
    """The query tile of this program: with a right bound (causal), the last tiles, which see
    the most keys, are launched first so that the short ones fill the tail."""
    if HAS_RIGHT:
        return tl.num_programs(0) - 1 - tl.program_id(0)
    else:
        return tl.program_id(0)


@triton.jit
def split_band(lo, hi, full_lo, full_hi, BLOCK: tl.constexpr):
    """Tile-aligned ranges [a, b) masked, [b, c) unmasked, [c, d) masked covering [lo, hi), where
    tiles inside [full_lo, full_hi) need no mask."""
    a = (lo // BLOCK) * BLOCK
    d = tl.maximum(hi, a)
    b = tl.minimum(tl.maximum(tl.cdiv(tl.maximum(full_lo, 0), BLOCK) * BLOCK, a), d)
    c = tl.minimum(tl.maximum((tl.maximum(full_hi, 0) // BLOCK) * BLOCK, b), d)
    return a, b, c, d


@triton.jit
def key_band(m0, sq, sk, wl, wr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr):
    """Key tiles seen by query rows [m0, m0 + BLOCK_M), split by ``split_band``.

    Row i sees key j iff i + off - wl <= j (HAS_LEFT) and j <= i + off + wr (HAS_RIGHT), off = sk - sq.
    """
    off = sk - sq
    m_last = tl.minimum(m0 + BLOCK_M, sq) - 1
    lo = 0
    hi = sk
    full_lo = 0
    full_hi = sk
    if HAS_LEFT:
        lo = tl.maximum(m0 + off - wl, 0)
        full_lo = m0 + BLOCK_M - 1 + off - wl
    if HAS_RIGHT:
        hi = tl.minimum(m_last + off + wr + 1, sk)
        full_hi = tl.minimum(m0 + off + wr + 1, sk)
    return split_band(lo, hi, full_lo, full_hi, BLOCK_N)


@triton.jit
def visible(o_i, o_j, sq, sk, wl, wr, HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr):
    """Bool tile: key o_j (broadcast) exists and is visible to query o_i (broadcast)."""
    m = o_j < sk
    off = sk - sq
    if HAS_LEFT:
        m = m & (o_j >= o_i + off - wl)
    if HAS_RIGHT:
        m = m & (o_j <= o_i + off + wr)
    return m


@triton.jit
def load_tile(ptrs, m_a, m_b, MASK_A: tl.constexpr, MASK_B: tl.constexpr):
    """Load a tile masked by m_a (when MASK_A) and m_b (when MASK_B), zeros outside; the
    interior tiles of a band with a power-of-two head dim load without any mask."""
    if MASK_A and MASK_B:
        return tl.load(ptrs, mask=m_a & m_b, other=0.0)
    elif MASK_A:
        return tl.load(ptrs, mask=m_a, other=0.0)
    elif MASK_B:
        return tl.load(ptrs, mask=m_b, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def tanh(x):
    """tanh from one exp (saturates to ±1 without overflow trouble)."""
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def scores(b_dot, scale, softcap, SOFTCAP: tl.constexpr):
    """Scores in log2 units from q·k, and tanh(scale·q·k / softcap) (the softcap's derivative
    needs it; b_dot itself without SOFTCAP)."""
    if SOFTCAP:
        b_t = tanh(b_dot * (scale / softcap))
        return b_t * (softcap * LOG2E), b_t
    else:
        return b_dot * (scale * LOG2E), b_dot


@triton.jit
def _fwd_tiles(
    b_acc, b_m, b_l, b_q, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d,
    start, end, sq, sk, wl, wr, scale, softcap,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, DOT_PREC: tl.constexpr,
    LARGE: tl.constexpr,
):
    """Online-softmax update of (acc, m, l) with key tiles [start, end), masked when MASK.

    p_k, p_v point at the sequence's first key; offsets from it are int64 when LARGE."""
    PAD_D: tl.constexpr = HEAD_DIM != BLOCK_D
    m_d = o_d < HEAD_DIM
    o_t = tl.arange(0, BLOCK_N)
    for n0 in range(start, end, BLOCK_N):
        o_n = n0 + o_t
        m_n = o_n < sk
        o_p = o_n.to(tl.int64) if LARGE else o_n
        # [BLOCK_D, BLOCK_N]
        b_kt = load_tile(p_k + o_p[None, :] * s_ks + o_d[:, None] * s_kd, m_n[None, :], m_d[:, None], MASK, PAD_D)
        # [BLOCK_M, BLOCK_N]
        b_s, _ = scores(tl.dot(b_q, b_kt, input_precision=DOT_PREC), scale, softcap, SOFTCAP)
        if MASK:
            b_s = tl.where(visible(o_m[:, None], o_n[None, :], sq, sk, wl, wr, HAS_LEFT, HAS_RIGHT), b_s, float("-inf"))
        b_mn = tl.maximum(b_m, tl.max(b_s, 1))
        b_mu = tl.where(b_mn == float("-inf"), 0.0, b_mn)  # rows with nothing visible yet: shift 0
        b_p = tl.exp2(b_s - b_mu[:, None])
        b_alpha = tl.exp2(b_m - b_mu)
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        # [BLOCK_N, BLOCK_D]
        b_v = load_tile(p_v + o_p[:, None] * s_vs + o_d[None, :] * s_vd, m_n[:, None], m_d[None, :], MASK, PAD_D)
        b_acc = tl.dot(b_p.to(b_v.dtype), b_v, b_acc * b_alpha[:, None], input_precision=DOT_PREC)
        b_m = b_mn
    return b_acc, b_m, b_l


@triton.jit
def _attn_fwd_kernel(
    p_q, p_k, p_v, p_o,  # canonical (B, H, S, D) or varlen (total, H, D), any strides
    p_lse,  # ACC (B, Hq, Sq) or varlen (Hq, total_q); positions contiguous
    p_cu_q, p_cu_k,  # int32 [n_seq + 1] offsets (VARLEN), else None
    s_qb, s_qh, s_qs, s_qd,
    s_kb, s_kh, s_ks, s_kd,
    s_vb, s_vh, s_vs, s_vd,
    s_ob, s_oh, s_os, s_od,
    s_lb, s_lh,
    max_sq, max_sk,  # dense: the lengths; varlen: the largest lengths
    group,  # Hq // Hkv
    wl, wr,
    scale, softcap,  # floats last (LeanKernel's argument order)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,  # HEAD_DIM padded to a power of two
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_LEFT: tl.constexpr,
    HAS_RIGHT: tl.constexpr,
    SOFTCAP: tl.constexpr,
    VARLEN: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LARGE: tl.constexpr,  # in-sequence element offsets may pass 2^31: int64 offsets
):
    i_m, i_h, i_b = query_tile(HAS_RIGHT), tl.program_id(1), tl.program_id(2)
    bos_q, sq, bos_k, sk = seq_info(p_cu_q, p_cu_k, i_b, max_sq, max_sk, VARLEN)
    m0 = i_m * BLOCK_M
    if m0 >= sq:
        return
    i_b64, i_h64 = i_b.to(tl.int64), i_h.to(tl.int64)
    i_hk64 = (i_h // group).to(tl.int64)
    row0 = bos_q + m0  # int64: first row of the tile
    p_q += i_b64 * s_qb + i_h64 * s_qh + row0 * s_qs
    p_o += i_b64 * s_ob + i_h64 * s_oh + row0 * s_os
    p_k += i_b64 * s_kb + i_hk64 * s_kh + bos_k * s_ks
    p_v += i_b64 * s_vb + i_hk64 * s_vh + bos_k * s_vs
    p_lse += i_b64 * s_lb + i_h64 * s_lh + bos_q
    o_r = tl.arange(0, BLOCK_M)
    o_m = m0 + o_r
    o_d = tl.arange(0, BLOCK_D)
    m_md = (o_m < sq)[:, None] & (o_d < HEAD_DIM)[None, :]
    # [BLOCK_M, BLOCK_D]
    b_q = tl.load(p_q + o_r[:, None] * s_qs + o_d[None, :] * s_qd, mask=m_md, other=0.0)
    b_acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    b_m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    b_l = tl.zeros([BLOCK_M], tl.float32)
    a, b, c, d = key_band(m0, sq, sk, wl, wr, BLOCK_M, BLOCK_N, HAS_LEFT, HAS_RIGHT)
    b_acc, b_m, b_l = _fwd_tiles(
        b_acc, b_m, b_l, b_q, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d, a, b, sq, sk, wl, wr, scale, softcap,
        HEAD_DIM, BLOCK_D, BLOCK_N, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
    )
    b_acc, b_m, b_l = _fwd_tiles(
        b_acc, b_m, b_l, b_q, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d, b, c, sq, sk, wl, wr, scale, softcap,
        HEAD_DIM, BLOCK_D, BLOCK_N, False, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
    )
    b_acc, b_m, b_l = _fwd_tiles(
        b_acc, b_m, b_l, b_q, p_k, p_v, s_ks, s_kd, s_vs, s_vd, o_m, o_d, c, d, sq, sk, wl, wr, scale, softcap,
        HEAD_DIM, BLOCK_D, BLOCK_N, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, DOT_PREC, LARGE,
    )
    # rows that saw no key: o = 0, lse = -inf
    b_seen = b_l > 0
    b_o = b_acc / tl.where(b_seen, b_l, 1.0)[:, None]
    b_lse = tl.where(b_seen, (b_m + tl.log2(tl.where(b_seen, b_l, 1.0))) / LOG2E, float("-inf"))
    tl.store(p_o + o_r[:, None] * s_os + o_d[None, :] * s_od, b_o.to(p_o.dtype.element_ty), mask=m_md)
    tl.store(p_lse + o_m, b_lse.to(p_lse.dtype.element_ty), mask=o_m < sq)


def attention_forward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, prob: Problem) -> None:
    """Launch the forward: writes o (like q) and lse (float32) for canonical tensors. The Gluon
    forward (``gluon_forward``, Hopper) takes the cases it supports, the Triton kernel the rest."""
    if gluon_forward.supported(q, k, v, o, prob):
        gluon_forward.attention_forward(q, k, v, o, lse, prob)
        return
    head_dim, varlen, cfg = prob.head_dim, prob.cu_q is not None, pick_config("fwd", prob.head_dim, prob.has_left or prob.has_right, q.element_size())
    has_left, has_right, softcap = prob.has_left, prob.has_right, prob.softcap > 0
    large = large_offsets(q, k, v)  # o is new, like q: its storage is no larger than q's
    _FWD(
        (_host.cdiv(max(prob.max_sq, 1), cfg.block_m), prob.hq, prob.n_seq),
        (q.dtype, cfg, head_dim, has_left, has_right, softcap, varlen, large),
        (q, k, v, o, lse, prob.cu_q, prob.cu_k),
        (*strides4(q, varlen), *strides4(k, varlen), *strides4(v, varlen), *strides4(o, varlen),
         *lse_strides(lse, varlen), prob.max_sq, prob.max_sk, prob.hq // prob.hkv, prob.wl, prob.wr),
        (prob.scale, prob.softcap or 1.0),
        lambda: dict(
            HEAD_DIM=head_dim, BLOCK_D=block_d(head_dim), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
            HAS_LEFT=has_left, HAS_RIGHT=has_right, SOFTCAP=softcap, VARLEN=varlen,
            DOT_PREC=dot_precision(q.dtype, head_dim), LARGE=large, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        ),
    )


_FWD = LeanKernel(_attn_fwd_kernel)
