"""Gluon kernel for the 16-bit forward chain walk over contiguous channels ((B, T, D) data).

The Triton sliced tile (``kernels._linear_scan_kernel``) loads each [R, BLOCK_Q] slice in a
coalesced layout and Triton converts it to its scan layout (rows across lanes) through shared
memory: 24 conversions and 57 barriers per segment for bfloat16 (notes/scan.md, session 9). Here
the layout is explicit and the same for loads, the row folds, the scan across rows and the
stores, so a segment costs the scan's own cross-warp exchange, the row shift and the carry's
reduction.

Tile: BLOCK_Q channels × R rows of SLICE_K steps (R = 32 / (BLOCK_Q / VEC) lanes × num_warps),
VEC contiguous channels per thread (one 8- or 16-byte vector per slice row). Per segment
(R · SLICE_K steps): pass 1 loads the SLICE_K slices (row r holds steps r · SLICE_K + k) and
folds each row's steps into one affine map in registers; one scan across rows gives the state
after each row; pass 2 rescans every row's kept slices from the state entering it (the previous
row's, the carry for row 0) and stores. One program walks one chain (P index, channel block) over
all segments, the carry in registers. Forward passes only (no reverse, no varlen, no backward):
``use_gluon_walk`` says when.
"""

from __future__ import annotations

import functools

import torch

from .. import _host
from .._launch import LeanKernel

Tensor = torch.Tensor

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:  # a Triton without Gluon: the Triton kernels serve every case
    gluon = None

TILE = (32, 4, 8, 4)
"""(BLOCK_Q, VEC, SLICE_K, num_warps): 32 channels of 8 bytes per thread (bfloat16), 16 rows of 8
steps on 4 warps."""
WIDE = (64, 8, 8, 4)
"""The tile when the chains of 64 channels fill ``WIDE_PROGRAMS_PER_SM`` programs per SM: 16-byte
vectors (H100, 16×2048×2048 bf16 forward 0.82 → 0.89 of the copy floor; at 8×4096×1536, 192 such
chains, it loses: 0.83 → 0.76; scan-tune-gluon-ea299d3.log)."""
WIDE_PROGRAMS_PER_SM = 2


def use_gluon_walk(dtype: torch.dtype, device: torch.device, contiguous_channels: bool, lookback: bool,
                   scan_rev: bool, backward: bool, varlen: bool) -> bool:
    """Whether a pass runs through ``walk_fwd_launch``: a 16-bit forward-direction forward pass over
    channels of unit stride, one program per chain, no packed sequences, on a CUDA device with Gluon."""
    return (
        gluon is not None and ENABLED and device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
        and contiguous_channels and not lookback and not scan_rev and not backward and not varlen
    )


ENABLED = True
"""False: every pass runs the Triton kernel (for measuring one against the other; part of the launch
plan's cache key)."""


if gluon is not None:

    @gluon.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
        return a1 * a2, a2 * b1 + b2

    @gluon.jit
    def _walk_fwd_kernel(
        p_g, p_x, p_y,  # gates, tokens, out y: (P, T, Q) with strides (s_p, s_t, 1)
        p_h0,  # initial state, contiguous (P, Q) (HAS_H0), else None
        p_hout,  # out: final state, contiguous (P, Q) (HAS_HOUT), else None
        T, Q, s_p, s_t,  # view sizes and strides
        n_qblk, n_seg,  # channel blocks, segments of R · SLICE_K steps
        BLOCK_Q: gl.constexpr, VEC: gl.constexpr, SLICE_K: gl.constexpr,
        HAS_H0: gl.constexpr, HAS_HOUT: gl.constexpr,
    ):
        TPW_Q: gl.constexpr = BLOCK_Q // VEC
        TPW_R: gl.constexpr = 32 // TPW_Q
        num_warps: gl.constexpr = gl.num_warps()
        R: gl.constexpr = TPW_R * num_warps
        BLOCK_T: gl.constexpr = R * SLICE_K
        L: gl.constexpr = gl.BlockedLayout([1, VEC], [TPW_R, TPW_Q], [num_warps, 1], [1, 0])
        i_chain = gl.program_id(0)
        i_p = i_chain // n_qblk
        i_qb = i_chain % n_qblk
        o_r = gl.arange(0, R, layout=gl.SliceLayout(1, L))  # [R]
        o_q = i_qb * BLOCK_Q + gl.arange(0, BLOCK_Q, layout=gl.SliceLayout(0, L))  # [BLOCK_Q]
        m_q = gl.expand_dims(o_q < Q, 0)  # [1, BLOCK_Q]
        # the chain's base pointers, then int64 offsets within the chain (32-bit offsets took more
        # registers: 165 against 139, sm_90a)
        p_g += i_p.to(gl.int64) * s_p
        p_x += i_p.to(gl.int64) * s_p
        p_y += i_p.to(gl.int64) * s_p
        base_q = gl.expand_dims(o_q, 0).to(gl.int64)  # [1, BLOCK_Q]
        o_rk = gl.expand_dims(o_r * SLICE_K, 1)  # [R, 1] a row's first step in the segment
        m_end = gl.expand_dims(o_r == R - 1, 1)  # [R, 1]
        # [R, BLOCK_Q] index of the previous row (row 0: itself, replaced by the carry)
        i_prev = gl.expand_dims(gl.maximum(o_r - 1, 0), 1) + gl.zeros([R, BLOCK_Q], gl.int32, L)
        if HAS_H0:
            b_carry = gl.load(p_h0 + i_p * Q + o_q, mask=o_q < Q, other=0.0).to(gl.float32)
        else:
            b_carry = gl.zeros([BLOCK_Q], gl.float32, gl.SliceLayout(0, L))
        for i_seg in range(0, n_seg):
            t_0 = i_seg * BLOCK_T
            # pass 1: each row's SLICE_K steps folded into (b_a, b_b): h -> b_a h + b_b
            b_a = gl.full([R, BLOCK_Q], 1.0, gl.float32, L)
            b_b = gl.zeros([R, BLOCK_Q], gl.float32, L)
            b_gs = ()
            b_xs = ()
            for k in gl.static_range(SLICE_K):
                t = t_0 + o_rk + k  # [R, 1]
                m = m_q & (t < T)
                offs = base_q + t.to(gl.int64) * s_t  # [R, BLOCK_Q]
                b_g = gl.load(p_g + offs, mask=m, other=1.0)
                b_x = gl.load(p_x + offs, mask=m, other=0.0)
                b_gs = b_gs + (b_g,)
                b_xs = b_xs + (b_x,)
                b_gf = b_g.to(gl.float32)
                b_a = b_gf * b_a
                b_b = b_gf * b_b + b_x.to(gl.float32)
            # the state after each row, from the carry
            b_sa, b_sb = gl.associative_scan((b_a, b_b), 0, _combine)
            b_p = b_sb + b_sa * gl.expand_dims(b_carry, 0)
            # pass 2: each row from the state entering it
            b_h = gl.gather(b_p, i_prev, 0)
            b_h = gl.where(gl.expand_dims(o_r == 0, 1), gl.expand_dims(b_carry, 0), b_h)
            for k in gl.static_range(SLICE_K):
                t = t_0 + o_rk + k
                m = m_q & (t < T)
                offs = base_q + t.to(gl.int64) * s_t
                b_h = b_gs[k].to(gl.float32) * b_h + b_xs[k].to(gl.float32)
                gl.store(p_y + offs, b_h.to(p_y.dtype.element_ty), mask=m)
            b_carry = gl.sum(gl.where(m_end, b_p, 0.0), axis=0)
        if HAS_HOUT:
            gl.store(p_hout + i_p * Q + o_q, b_carry.to(p_hout.dtype.element_ty), mask=o_q < Q)


    _WALK = LeanKernel(_walk_fwd_kernel)


@functools.lru_cache(maxsize=1024)
def _launch_shape(P: int, T: int, Q: int, sm_count: int, tile: tuple[int, int, int, int] | None) -> tuple:
    """(tile, n_qblk, n_seg) of a launch (``tile`` None: ``TILE``, or ``WIDE`` when its chains fill
    ``WIDE_PROGRAMS_PER_SM`` programs per SM)."""
    if tile is None:
        wide = WIDE and P * _host.cdiv(Q, WIDE[0]) >= WIDE_PROGRAMS_PER_SM * sm_count
        tile = WIDE if wide else TILE
    block_q, vec, slice_k, num_warps = tile
    rows = 32 // (block_q // vec) * num_warps
    return tile, _host.cdiv(Q, block_q), _host.cdiv(T, rows * slice_k)


def walk_fwd_launch(gates: Tensor, tokens: Tensor, out: Tensor, P: int, T: int, Q: int, s_p: int, s_t: int,
                    initial_state: Tensor | None, state_out: Tensor | None,
                    tile: tuple[int, int, int, int] | None = None) -> object:
    """Launch the Gluon forward walk on (P, T, Q) views with unit channel stride (gates, tokens and
    out alike); states are contiguous (P, Q), the final state in tokens' dtype. ``tile``
    (BLOCK_Q, VEC, SLICE_K, num_warps), for tuning; None: the default rule. Returns the compiled
    kernel."""
    tile, n_qblk, n_seg = _launch_shape(P, T, Q, _host.sm_count(tokens.device), tile)
    block_q, vec, slice_k, num_warps = tile
    has_h0, has_hout = initial_state is not None, state_out is not None
    return _WALK(
        (P * n_qblk, 1, 1), (tokens.dtype, None if initial_state is None else initial_state.dtype, has_hout, tile),
        (gates, tokens, out, initial_state, state_out), (T, Q, s_p, s_t, n_qblk, n_seg), (),
        lambda: dict(BLOCK_Q=block_q, VEC=vec, SLICE_K=slice_k, HAS_H0=has_h0, HAS_HOUT=has_hout, num_warps=num_warps),
    )
