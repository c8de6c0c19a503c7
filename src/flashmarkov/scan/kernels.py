"""Triton kernels for the linear recurrence y[t] = g[t] * y[t-1] + x[t], forward and backward.

Every input is seen as a strided 3-D view (P, T, Q): time T between a batch P and channels Q.
A program owns one tile of BLOCK_T steps by BLOCK_Q channels, held in registers:

* layout (B, D, T) scans along the contiguous axis: the view is (1, T, B*D) with time stride 1,
  so a tile is BLOCK_Q rows of BLOCK_T contiguous steps;
* layout (B, T, D) scans across rows: the view is (B, T, D) with channel stride 1, so a tile is
  BLOCK_T rows of BLOCK_Q contiguous channels. Triton would spread a [BLOCK_T, BLOCK_Q] tile's
  time axis over threads (46-59 PTX instructions per element), so the tile is sliced: SLICE_K
  loads of [R, BLOCK_Q] (slice k holds steps r * SLICE_K + k), each thread folds its rows'
  consecutive steps in registers, one scan across the R row maps, then a second pass over the
  slices (kept in registers, or re-read) writes the outputs (15-30 instructions per element).

Neither needs a transpose. A sequence longer than one tile is either walked by one program,
segment after segment with the carry in registers (when there are enough sequences x channel
tiles, "chains", to keep the memory system busy), or split over several programs that chain
through a single-pass decoupled look-back (Merrill & Garland; few chains): a tile first polls its
predecessor (usually finished, since programs are numbered segment-major and all chains advance
together); if the predecessor has no prefix yet, the tile publishes its aggregate (the affine map
h -> A h + B of its steps) and walks back, composing aggregates until an inclusive prefix. Flags
are read with scalar acquire atomics, executed once per program and broadcast, or (forward passes)
a window of predecessors' flags at once, one per thread, reduced across the program: either way
all warps of a program take the same decisions (replicated vector loads of the records did not).

The backward of a forward-direction scan is a scan in the other direction,
    a[t] = dy[t] + g[t+1] a[t+1],   dx = a,   dg[t] = a[t] y[t-1],   dh0 = g[first] a[first],
run by the same kernel (BACKWARD=True): one pass reads g, y, dy and writes dx, dg (5 streams).
Packed variable-length sequences (VARLEN) reset the recurrence at sequence boundaries found by
a binary search of the offsets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .. import _host
from .._launch import LeanKernel
from . import gluon_walk

Tensor = torch.Tensor

_LB_RECS: tl.constexpr = tl.constexpr(8)  # look-back records read per round of a windowed walk


@triton.jit
def _combine(a1, b1, a2, b2):
    """Compose two affine steps: h -> a2 * (a1 * h + b1) + b2 (first (a1, b1), then (a2, b2))."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _shift_next(x, e, V: tl.constexpr):
    """[R, V, BQ] -> s[:, v] = x[:, v+1], with s[:, V-1] = e[:, 0] (e: [R, 1, BQ]).

    Register moves only: the V steps of a row sit in one thread (one 16-byte vector)."""
    if V == 1:
        return e
    else:
        ev, od = tl.split(tl.reshape(x, [x.shape[0], V // 2, 2, x.shape[2]]).permute(0, 1, 3, 2))
        return tl.reshape(tl.join(od, _shift_next(ev, e, V // 2)).permute(0, 1, 3, 2), [x.shape[0], V, x.shape[2]])


@triton.jit
def _shift_prev(x, e, V: tl.constexpr):
    """[R, V, BQ] -> s[:, v] = x[:, v-1], with s[:, 0] = e[:, 0] (e: [R, 1, BQ])."""
    if V == 1:
        return e
    else:
        ev, od = tl.split(tl.reshape(x, [x.shape[0], V // 2, 2, x.shape[2]]).permute(0, 1, 3, 2))
        return tl.reshape(tl.join(_shift_prev(od, e, V // 2), ev).permute(0, 1, 3, 2), [x.shape[0], V, x.shape[2]])


@triton.jit
def _to_scan_order(x, FLIP: tl.constexpr, BLOCK_T: tl.constexpr, TILE3: tl.constexpr):
    """[R, V, BQ] in memory order (rows already in scan order) -> [BLOCK_T, BQ] in scan order.
    Without TILE3 the tile is already 2-D [BLOCK_T, BQ] in scan order."""
    if not TILE3:
        return x
    else:
        if FLIP:
            x = tl.flip(x, 1)
        return tl.reshape(x, [BLOCK_T, x.shape[2]])


@triton.jit
def _from_scan_order(x, FLIP: tl.constexpr, R: tl.constexpr, V: tl.constexpr, TILE3: tl.constexpr):
    """Inverse of ``_to_scan_order``: [BLOCK_T, BQ] -> [R, V, BQ] (unchanged without TILE3)."""
    if not TILE3:
        return x
    else:
        x = tl.reshape(x, [R, V, x.shape[1]])
        if FLIP:
            x = tl.flip(x, 1)
        return x


@triton.jit
def _poll(p, POLL_LOAD: tl.constexpr):
    """Acquire-read the int32 flags at ``p`` (a tensor of pointers), one per element: an
    ``ld.acquire.gpu`` (POLL_LOAD, GPU only) or an atomic add of 0."""
    if POLL_LOAD:
        return tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [p], dtype=tl.int32, is_pure=False,
                                         pack=1)
    else:
        return tl.atomic_add(p, 0, sem="acquire", scope="gpu")


@triton.jit
def _publish(p_flag, p_ws, i_tile, n_tiles, b_a, b_b, STATUS: tl.constexpr, BLOCK_Q: tl.constexpr):
    """Publish a tile's record: STATUS 1 = aggregate (A, B), STATUS 2 = inclusive prefix B.

    p_flag: int32 [n_tiles], zeroed; p_ws: ACC [3, n_tiles, BLOCK_Q] (aggregate A, aggregate B,
    inclusive B). The data are made visible before the flag: CTA barrier, then a release store
    of the flag by one thread.
    """
    p_rec = p_ws + i_tile * BLOCK_Q + tl.arange(0, BLOCK_Q)
    if STATUS == 1:
        tl.store(p_rec, b_a)
        tl.store(p_rec + n_tiles * BLOCK_Q, b_b)
    else:
        tl.store(p_rec + 2 * n_tiles * BLOCK_Q, b_b)
    tl.debug_barrier()
    tl.atomic_xchg(p_flag + i_tile, STATUS, sem="release", scope="gpu")


@triton.jit
def _read_record(p_ws, i_field, i_tile, n_tiles, BLOCK_Q: tl.constexpr):
    """[BLOCK_Q] field of a tile whose flag was acquired (L2 load: another SM wrote it)."""
    return tl.load(p_ws + (i_field * n_tiles + i_tile) * BLOCK_Q + tl.arange(0, BLOCK_Q), volatile=True)


@triton.jit
def _walk_back(p_flag, p_ws, j, i_chain, n_chains, n_tiles, c_a, c_b, BLOCK_Q: tl.constexpr, LB_WINDOW: tl.constexpr,
               POLL_LOAD: tl.constexpr, THREADS: tl.constexpr):
    """Resolve a tile's entering state from its predecessors j, j - 1, ... of chain i_chain:
    (c_a, c_b) maps the state after predecessor j to the state entering the tile; returns it
    composed down to an inclusive prefix (c_a then unused).

    Without LB_WINDOW: one predecessor per step (a scalar acquire of its flag, then its record: two
    dependent L2 round trips per predecessor). LB_WINDOW: the flags of THREADS = 32 x num_warps
    predecessors are acquired at once, one per thread (none replicated); the nearest inclusive
    prefix k and the nearest unpublished tile z among them (reductions across the program, so
    every warp takes the same decision) bound the aggregates to compose, whose records are read
    _LB_RECS at a time (loads first, then the products). A walk over L published predecessors
    costs ~2 + L / _LB_RECS round trips instead of 2 L. Polls by atomic add of 0 on one flag line
    serialise in L2 (a window of them cost 2x, H100), hence ld.acquire (POLL_LOAD) on the GPU."""
    if not LB_WINDOW:
        while j >= 0:
            i_pred = j * n_chains + i_chain
            f = tl.atomic_add(p_flag + i_pred, 0, sem="acquire", scope="gpu")
            if f == 2:
                c_b = c_a * _read_record(p_ws, 2, i_pred, n_tiles, BLOCK_Q) + c_b
                j = -1
            elif f == 1:
                c_b = c_a * _read_record(p_ws, 1, i_pred, n_tiles, BLOCK_Q) + c_b
                c_a = c_a * _read_record(p_ws, 0, i_pred, n_tiles, BLOCK_Q)
                j = j - 1
    else:
        o_q = tl.arange(0, BLOCK_Q)
        o_f = tl.arange(0, THREADS)
        while j >= 0:
            i_f = j - o_f  # [THREADS] predecessors j, j - 1, ...
            f = _poll(p_flag + tl.maximum(i_f, 0) * n_chains + i_chain, POLL_LOAD)
            k = tl.max(tl.where((i_f >= 0) & (f == 2), i_f, -1), axis=0)  # nearest inclusive prefix
            z = tl.max(tl.where((i_f >= 0) & (f == 0), i_f, -1), axis=0)  # nearest tile not yet published
            lo = tl.maximum(tl.maximum(k, z), j - THREADS)
            # every predecessor in (lo, j] has published its aggregate: compose them, nearest first
            while j > lo:
                b_ra = ()
                b_rb = ()
                for i in tl.static_range(_LB_RECS):
                    p_rec = p_ws + ((j - i) * n_chains + i_chain) * BLOCK_Q + o_q
                    b_ra = b_ra + (tl.load(p_rec, mask=j - i > lo, other=1.0, volatile=True),)
                    b_rb = b_rb + (tl.load(p_rec + n_tiles * BLOCK_Q, mask=j - i > lo, other=0.0, volatile=True),)
                for i in tl.static_range(_LB_RECS):
                    c_b = c_a * b_rb[i] + c_b
                    c_a = c_a * b_ra[i]
                j -= _LB_RECS
            if (k >= 0) & (k == lo):
                c_b = c_a * _read_record(p_ws, 2, k * n_chains + i_chain, n_tiles, BLOCK_Q) + c_b
                j = -1
            else:
                j = lo  # poll again from the unpublished tile (or the window's end)
    return c_a, c_b


@triton.jit
def _load_shifted(p, base_q, m_q, t_row, s_t, T, other, x_mem, SHIFT: tl.constexpr, V: tl.constexpr):
    """[R, V, BQ] values of ``p`` one step after (SHIFT=1) or before (SHIFT=-1) each step of a
    tile whose aligned values are ``x_mem``: in-register shift plus one load per row of V."""
    t_e = t_row + (V if SHIFT == 1 else -1)  # [R, 1, 1]
    e = tl.load(p + base_q + t_e.to(tl.int64) * s_t, mask=m_q & (t_e >= 0) & (t_e < T), other=other)
    if SHIFT == 1:
        return _shift_next(x_mem, e, V)
    else:
        return _shift_prev(x_mem, e, V)


@triton.jit
def _edges(p_cu, t, m, i_p, P, Q, q_s, n_seq, t_first, t_last, REVERSE: tl.constexpr, VARLEN: tl.constexpr,
           SEARCH_STEPS: tl.constexpr):
    """Steps t ([R, 1], memory order) that begin (m_first) and end (m_last) a sequence of the
    original recurrence, among a tile's valid elements m ([R, BLOCK_Q]), and the index of each
    element's state in (N_SEQ, P, Q) ([R, BLOCK_Q]). VARLEN finds each step's sequence, the
    largest n with cu[n] <= t, by a binary search of the offsets (cu[0] = 0 <= t < cu[n_seq])."""
    if VARLEN:
        lo = tl.zeros(t.shape, tl.int32)
        hi = tl.zeros(t.shape, tl.int32) + n_seq
        for _ in tl.static_range(SEARCH_STEPS):
            mid = (lo + hi) >> 1
            go = tl.load(p_cu + mid) <= t
            lo = tl.where(go, mid, lo)
            hi = tl.where(go, hi, mid)
        b_beg = tl.load(p_cu + lo)
        b_end = tl.load(p_cu + lo + 1)
        if REVERSE:
            m_first = (t == b_end - 1) & m
            m_last = (t == b_beg) & m
        else:
            m_first = (t == b_beg) & m
            m_last = (t == b_end - 1) & m
        i_state = (lo.to(tl.int64) * P + i_p) * Q + q_s
    else:
        m_first = (t == t_first) & m
        m_last = (t == t_last) & m
        i_state = i_p * Q + q_s + tl.zeros(t.shape, tl.int32)
    return m_first, m_last, i_state


@triton.jit
def _restart(b_g, b_x, m_first, m_last, i_state, p_h0, p_hin, ACC: tl.constexpr, BACKWARD: tl.constexpr,
             HAS_H0: tl.constexpr, HAS_HIN: tl.constexpr):
    """VARLEN: restart the recurrence at each sequence's first step (forward: gate 0, the initial
    state folded into the token) or last step (backward: gate 0, d final state added to dy)."""
    if BACKWARD:
        b_g = tl.where(m_last, 0.0, b_g)
        if HAS_HIN:
            b_x += tl.load(p_hin + i_state, mask=m_last, other=0.0).to(ACC)
    else:
        if HAS_H0:
            b_x += b_g * tl.load(p_h0 + i_state, mask=m_first, other=0.0).to(ACC)
        b_g = tl.where(m_first, 0.0, b_g)
    return b_g, b_x


@triton.jit
def _y_before(b_yp, m_first, i_state, p_h0, has_first, ACC: tl.constexpr, HAS_H0: tl.constexpr, VARLEN: tl.constexpr):
    """Backward: y[t - D] for dg = a * y[t - D], where y before a sequence's first step is h0 (or 0)."""
    if HAS_H0:
        if has_first:
            b_yp = tl.where(m_first, tl.load(p_h0 + i_state, mask=m_first, other=0.0).to(ACC), b_yp)
    elif VARLEN:
        b_yp = tl.where(m_first, 0.0, b_yp)
    return b_yp


@triton.jit
def _store_dh0(p_g, offs, p_hout, b_a, m_first, i_state, ACC: tl.constexpr):
    """Backward: d h0 = g[first] * a[first] (offs: the elements' offsets, shaped like b_a)."""
    b_gf = tl.load(p_g + offs, mask=m_first, other=0.0).to(ACC)
    tl.store(p_hout + i_state, (b_gf * b_a).to(p_hout.dtype.element_ty), mask=m_first)


@triton.jit
def _holds(t_x, i_seg, BLOCK_T: tl.constexpr, VARLEN: tl.constexpr):
    """Whether segment i_seg may hold a sequence's edge step t_x (every segment may, with VARLEN)."""
    if VARLEN:
        return True
    else:
        return (t_x >= i_seg * BLOCK_T) & (t_x < i_seg * BLOCK_T + BLOCK_T)


@triton.jit
def _slice_at(base_q, m_q, s, i_seg, T, s_t, BLOCK_T: tl.constexpr, SCAN_REV: tl.constexpr):
    """Steps s ([R, 1], scan order within the tile) of segment i_seg of a sliced tile: their
    memory step t ([R, 1]), the elements' offsets and valid mask ([R, BLOCK_Q])."""
    if SCAN_REV:
        t = i_seg * BLOCK_T + (BLOCK_T - 1 - s)
    else:
        t = i_seg * BLOCK_T + s
    return t, base_q + t.to(tl.int64) * s_t, m_q & (t < T)


@triton.jit
def _slice_load(p_g, p_x, t, offs, m, m_q, T, s_t, D: tl.constexpr, BACKWARD: tl.constexpr):
    """A slice's gate (backward: g[t + D]) and token as stored; the identity (1, 0) off the edges."""
    if BACKWARD:
        b_g = tl.load(p_g + (offs + D * s_t), mask=m_q & (t + D >= 0) & (t + D < T), other=1.0)
    else:
        b_g = tl.load(p_g + offs, mask=m, other=1.0)
    return b_g, tl.load(p_x + offs, mask=m, other=0.0)


@triton.jit
def _slices_load(p_g, p_x, base_q, m_q, o_rv, i_seg, valid, T, s_t, BLOCK_T: tl.constexpr, SLICE_K: tl.constexpr,
                 D: tl.constexpr, SCAN_REV: tl.constexpr, BACKWARD: tl.constexpr):
    """The SLICE_K slices of segment i_seg of a sliced tile as stored, (g_0, x_0, g_1, x_1, ...), each
    [R, BLOCK_Q]; nothing is read where ``valid`` (a scalar) is false."""
    b_raw = ()
    m_v = m_q & valid
    for k in tl.static_range(SLICE_K):
        t, offs, m = _slice_at(base_q, m_v, o_rv * SLICE_K + k, i_seg, T, s_t, BLOCK_T, SCAN_REV)
        b_raw = b_raw + _slice_load(p_g, p_x, t, offs, m, m_v, T, s_t, D, BACKWARD)
    return b_raw


@triton.jit
def _slice_inputs(b_g, b_x, t, m, p_cu, p_h0, p_hin, i_p, P, Q, q_s, n_seq, t_first, t_last, ACC: tl.constexpr,
                  BACKWARD: tl.constexpr, REVERSE: tl.constexpr, VARLEN: tl.constexpr, SEARCH_STEPS: tl.constexpr,
                  HAS_H0: tl.constexpr, HAS_HIN: tl.constexpr):
    """A slice's scan inputs in ACC, restarted at sequence edges (VARLEN), and its edges
    (m_first, m_last, i_state, see ``_edges``)."""
    b_g = b_g.to(ACC)
    b_x = b_x.to(ACC)
    m_first, m_last, i_state = _edges(p_cu, t, m, i_p, P, Q, q_s, n_seq, t_first, t_last, REVERSE, VARLEN, SEARCH_STEPS)
    if VARLEN:
        b_g, b_x = _restart(b_g, b_x, m_first, m_last, i_state, p_h0, p_hin, ACC, BACKWARD, HAS_H0, HAS_HIN)
    return b_g, b_x, m_first, m_last, i_state


@triton.jit
def _linear_scan_kernel(
    p_g,  # gates, (P, T, Q) with element strides (s_p, s_t, s_q)
    p_x,  # tokens (forward) or dy (backward), strides of p_g
    p_y,  # out: y (forward) or dx (backward), strides of p_g
    p_yf,  # backward: the forward output y, strides of p_g (None in forward)
    p_dg,  # backward: out d gates, strides of p_g (None in forward)
    p_h0,  # initial state, contiguous (N_SEQ, P, Q) (None without)
    p_hin,  # backward: d final state, contiguous (N_SEQ, P, Q) (None without)
    p_hout,  # out: final state (forward) or d initial state (backward), contiguous (N_SEQ, P, Q)
    p_cu,  # int32 [N_SEQ + 1] sequence offsets along T (VARLEN), else None
    p_flag,  # int32 [n_tiles] zeroed look-back flags (LOOKBACK), else None
    p_ws,  # ACC [3, n_tiles, BLOCK_Q] look-back records (LOOKBACK), else None
    T, P, Q,  # view sizes
    s_p, s_t, s_q,  # element strides of the view
    n_qblk,  # cdiv(Q, BLOCK_Q)
    n_seg,  # cdiv(T, BLOCK_T)
    n_seq,  # number of packed sequences (1 without VARLEN)
    ACC: tl.constexpr,  # accumulation dtype: float32, or float64 for float64 data
    BLOCK_T: tl.constexpr,  # steps per tile
    BLOCK_Q: tl.constexpr,  # channels per tile
    V: tl.constexpr,  # steps per 16-byte vector when time is contiguous (s_t = 1), else 1 (sliced tiles)
    SLICE_K: tl.constexpr,  # V = 1: steps per row of a sliced tile (BLOCK_T // SLICE_K rows of SLICE_K slices)
    SLICE_KEEP: tl.constexpr,  # V = 1: keep the slices in registers between the passes (else re-read them)
    PREFETCH: tl.constexpr,  # V = 1, one program per chain: load the next segment's slices before this one's passes
    STAGES: tl.constexpr,  # software-pipelining stages of the chain walk's segment loop (1: none)
    SEARCH_STEPS: tl.constexpr,  # binary-search steps over p_cu: ceil(log2(n_seq))
    REVERSE: tl.constexpr,  # the forward recurrence runs towards lower t
    BACKWARD: tl.constexpr,  # compute dx, dg (and d h0) instead of y (and the final state)
    SCAN_REV: tl.constexpr,  # this pass scans towards lower t: REVERSE != BACKWARD
    VARLEN: tl.constexpr,
    LOOKBACK: tl.constexpr,  # one tile per program, chained through the look-back (else one program per chain)
    LB_WINDOW: tl.constexpr,  # the look-back reads 32 x num_warps flags per step (else one; see _walk_back)
    POLL_LOAD: tl.constexpr,  # look-back flags read by ld.acquire (GPU only), else atomics
    THREADS: tl.constexpr,  # 32 x num_warps
    HAS_H0: tl.constexpr,
    HAS_HIN: tl.constexpr,
    HAS_HOUT: tl.constexpr,
):
    n_chains = P * n_qblk
    n_tiles = n_chains * n_seg
    if LOOKBACK:
        # one tile per program, numbered segment-major so all chains advance together
        i_chain = tl.program_id(0) % n_chains
        lseg_0 = tl.program_id(0) // n_chains
        lseg_end = lseg_0 + 1
    else:
        # one program per chain walks its segments in scan order, the carry in registers
        i_chain = tl.program_id(0)
        lseg_0 = tl.program_id(0) * 0  # int32, like the look-back branch
        lseg_end = n_seg
    i_p = i_chain // n_qblk
    i_qb = i_chain % n_qblk
    # the original recurrence's step: "next" is t + D, "previous" t - D
    D: tl.constexpr = -1 if REVERSE else 1
    # Contiguous channels (V = 1) use a sliced tile: SLICE_K loads of [R, BLOCK_Q] rows, slice k
    # holding the steps r * SLICE_K + k (scan order) of rows r, so that a thread folds its rows'
    # SLICE_K consecutive steps in registers (pass 1); one scan across rows of the rows' affine
    # maps gives each row its entering state; pass 2 rescans the slices (kept in registers or
    # re-read from L1 / L2) and writes.
    # A reverse scan (SCAN_REV) or a backward pass over contiguous time (V > 1) uses a 3-D tile
    # [R, V, BLOCK_Q]: rows of V consecutive steps (one 16-byte vector per thread) taken in scan
    # order, each row flipped in registers for a reverse scan, and shifted by one step in
    # registers for the backward's g[t+D] and y[t-D]. Otherwise the tile is a plain
    # [BLOCK_T, BLOCK_Q] in scan order. The scan itself always runs forwards over
    # [BLOCK_T, BLOCK_Q] ("scan order"), or over the sliced tile's [R, BLOCK_Q] row maps.
    SLICED: tl.constexpr = V == 1
    TILE3: tl.constexpr = V > 1 and (SCAN_REV or BACKWARD)
    R: tl.constexpr = BLOCK_T // V if TILE3 else (BLOCK_T // SLICE_K if SLICED else BLOCK_T)
    FLIP: tl.constexpr = SCAN_REV and TILE3
    o_r = tl.arange(0, R)
    if SCAN_REV and not SLICED:
        o_r = R - 1 - o_r
    o_q = i_qb * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BLOCK_Q]
    if TILE3:
        o_rv = (o_r * V)[:, None, None] + tl.arange(0, V)[None, :, None]  # [R, V, 1] step within the tile
        m_q = (o_q < Q)[None, None, :]
        base_q = i_p.to(tl.int64) * s_p + (o_q.to(tl.int64) * s_q)[None, None, :]  # [1, 1, BLOCK_Q]
    else:
        o_rv = o_r[:, None]  # [R, 1]
        m_q = (o_q < Q)[None, :]
        base_q = i_p.to(tl.int64) * s_p + (o_q.to(tl.int64) * s_q)[None, :]  # [1, BLOCK_Q]
    q_s = o_q[None, :]
    if SLICED:
        m_end = (o_r == R - 1)[:, None]  # [R, 1] the last row (in scan order)
    else:
        m_end = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]  # [BLOCK_T, 1] a tile's last step in scan order
    # first / last step of the original recurrence, without VARLEN
    t_first = T - 1 if REVERSE else 0
    t_last = 0 if REVERSE else T - 1
    # the state entering the scan's first segment (VARLEN: entered per sequence inside the tiles)
    if (not VARLEN) and BACKWARD and HAS_HIN:
        b_c0 = tl.load(p_hin + i_p * Q + o_q, mask=o_q < Q, other=0.0).to(ACC)
    elif (not VARLEN) and (not BACKWARD) and HAS_H0:
        b_c0 = tl.load(p_h0 + i_p * Q + o_q, mask=o_q < Q, other=0.0).to(ACC)
    else:
        b_c0 = tl.zeros([BLOCK_Q], ACC)

    b_carry = b_c0
    if PREFETCH:
        # the chain's first segment; each iteration then issues the next segment's loads first, so
        # that they are in flight during this segment's two passes
        b_next = _slices_load(p_g, p_x, base_q, m_q, o_rv, n_seg - 1 if SCAN_REV else 0, lseg_0 < lseg_end, T, s_t,
                              BLOCK_T, SLICE_K, D, SCAN_REV, BACKWARD)
    # STAGES > 1 (chain walk): Triton's software pipeliner stages the segments' loads through
    # shared memory (async copies issued STAGES - 1 segments ahead)
    for i_lseg in tl.range(lseg_0, lseg_end, num_stages=STAGES):
        i_tile = i_lseg * n_chains + i_chain
        if SCAN_REV:
            i_seg = n_seg - 1 - i_lseg
        else:
            i_seg = i_lseg
        if SLICED:
            # pass 1: [R, BLOCK_Q] affine map (b_g, b_x) of each row's SLICE_K steps, folded in registers;
            # SLICE_KEEP keeps the slices as loaded (b_raw) for pass 2
            if PREFETCH:
                b_raw = b_next
                b_next = _slices_load(p_g, p_x, base_q, m_q, o_rv, i_seg - 1 if SCAN_REV else i_seg + 1, i_lseg + 1 < lseg_end,
                                      T, s_t, BLOCK_T, SLICE_K, D, SCAN_REV, BACKWARD)
            else:
                b_raw = _slices_load(p_g, p_x, base_q, m_q, o_rv, i_seg, i_lseg < lseg_end, T, s_t, BLOCK_T, SLICE_K, D,
                                     SCAN_REV, BACKWARD)
            b_g = tl.full([R, BLOCK_Q], 1.0, ACC)
            b_x = tl.zeros([R, BLOCK_Q], ACC)
            for k in tl.static_range(SLICE_K):
                t, offs, m = _slice_at(base_q, m_q, o_rv * SLICE_K + k, i_seg, T, s_t, BLOCK_T, SCAN_REV)
                b_gk, b_xk, m_first, m_last, i_state = _slice_inputs(
                    b_raw[2 * k], b_raw[2 * k + 1], t, m, p_cu, p_h0, p_hin, i_p, P, Q, q_s, n_seq, t_first, t_last, ACC,
                    BACKWARD, REVERSE, VARLEN, SEARCH_STEPS, HAS_H0, HAS_HIN,
                )
                b_g = b_gk * b_g
                b_x = b_gk * b_x + b_xk
        else:
            t_mem = i_seg * BLOCK_T + o_rv  # [R, V, 1] or [BLOCK_T, 1]
            if TILE3:
                t_row = i_seg * BLOCK_T + (o_r * V)[:, None, None]  # [R, 1, 1] first step of each row
            else:
                t_row = t_mem
            m_mem = m_q & (t_mem < T)  # [R, V, BLOCK_Q]
            offs = base_q + t_mem.to(tl.int64) * s_t  # [R, V, BLOCK_Q]
            # scan-order views of the step index and channel: [BLOCK_T, 1], [1, BLOCK_Q]
            t_s = _to_scan_order(t_mem, FLIP, BLOCK_T, TILE3)
            m = (t_s < T) & (q_s < Q)  # [BLOCK_T, BLOCK_Q]

            if BACKWARD:
                # the gate that carries a[t +- 1] into a[t] sits one step ahead: g[t + D]
                b_gm = tl.load(p_g + offs, mask=m_mem, other=1.0)
                b_g = _load_shifted(p_g, base_q, m_q, t_row, s_t, T, 1.0, b_gm, D, V)
            else:
                b_g = tl.load(p_g + offs, mask=m_mem, other=1.0)
            b_g = _to_scan_order(b_g, FLIP, BLOCK_T, TILE3).to(ACC)
            b_x = _to_scan_order(tl.load(p_x + offs, mask=m_mem, other=0.0), FLIP, BLOCK_T, TILE3).to(ACC)

        if LOOKBACK:
            # (c_a, c_b) maps the state after predecessor j to the state entering this tile. The
            # immediate predecessor is usually finished: poll its flag now, overlapping this tile's
            # loads (resolved when j < 0). Flags are read by scalar atomics, executed once and
            # broadcast, so every warp takes the same decisions.
            c_a = tl.full([BLOCK_Q], 1.0, ACC)
            c_b = tl.zeros([BLOCK_Q], ACC)
            j = i_lseg - 1
            if i_lseg > 0:
                f = tl.atomic_add(p_flag + i_tile - n_chains, 0, sem="acquire", scope="gpu")
                if f == 2:
                    c_b = _read_record(p_ws, 2, i_tile - n_chains, n_tiles, BLOCK_Q)
                    j = -1

        if not SLICED:
            m_first, m_last, i_state = _edges(p_cu, t_s, m, i_p, P, Q, q_s, n_seq, t_first, t_last, REVERSE, VARLEN, SEARCH_STEPS)
            if VARLEN:
                b_g, b_x = _restart(b_g, b_x, m_first, m_last, i_state, p_h0, p_hin, ACC, BACKWARD, HAS_H0, HAS_HIN)

        # scan from a zero state, b_y(h) = b_a * h + b_b: of the [BLOCK_T, BLOCK_Q] tile, or
        # across the [R, BLOCK_Q] row maps of a sliced tile
        b_a, b_b = tl.associative_scan((b_g, b_x), 0, _combine)

        if LOOKBACK:
            # the tile's aggregate sits at its last step in scan order
            b_agg_a = tl.sum(tl.where(m_end, b_a, 0.0), axis=0)
            b_agg_b = tl.sum(tl.where(m_end, b_b, 0.0), axis=0)
            if i_lseg > 0:
                if j >= 0:
                    # not resolved by the first poll: let successors skip this tile, then walk back
                    _publish(p_flag, p_ws, i_tile, n_tiles, b_agg_a, b_agg_b, 1, BLOCK_Q)
                    c_a, c_b = _walk_back(p_flag, p_ws, j, i_chain, n_chains, n_tiles, c_a, c_b, BLOCK_Q, LB_WINDOW, POLL_LOAD,
                                          THREADS)
                b_carry = c_b
            _publish(p_flag, p_ws, i_tile, n_tiles, b_agg_a, b_agg_a * b_carry + b_agg_b, 2, BLOCK_Q)

        if SLICED:
            # tiles that hold a sequence's first / last step
            has_first = _holds(t_first, i_seg, BLOCK_T, VARLEN)
            has_last = _holds(t_last, i_seg, BLOCK_T, VARLEN)
            # pass 2: rescan every row's steps from the state entering it, and write the outputs
            b_p = b_b + b_a * b_carry[None, :]  # [R, BLOCK_Q] state after each row
            if SLICE_KEEP:
                # each row rescans its own (kept) steps: the state after the previous row (the carry
                # for row 0) is brought over from the thread that holds it
                o_s = o_rv
                b_h = tl.gather(b_p, tl.maximum(o_rv - 1, 0) + tl.zeros([R, BLOCK_Q], tl.int32), 0)
                b_h = tl.where(o_rv == 0, b_carry[None, :], b_h)
            else:
                # row r re-reads the steps of row r + 1 from the state after row r (no exchange
                # between threads; distinct addresses, so the compiler cannot merge the re-reads
                # with pass 1's loads); the last row re-reads row 0 from the carry
                o_s = (o_rv + 1) % R
                b_h = tl.where(m_end, b_carry[None, :], b_p)
            for k in tl.static_range(SLICE_K):
                t, offs, m = _slice_at(base_q, m_q, o_s * SLICE_K + k, i_seg, T, s_t, BLOCK_T, SCAN_REV)
                if SLICE_KEEP:
                    b_gk = b_raw[2 * k]
                    b_xk = b_raw[2 * k + 1]
                else:
                    b_gk, b_xk = _slice_load(p_g, p_x, t, offs, m, m_q, T, s_t, D, BACKWARD)
                b_gk, b_xk, m_first, m_last, i_state = _slice_inputs(
                    b_gk, b_xk, t, m, p_cu, p_h0, p_hin, i_p, P, Q, q_s, n_seq, t_first, t_last, ACC, BACKWARD, REVERSE,
                    VARLEN, SEARCH_STEPS, HAS_H0, HAS_HIN,
                )
                b_h = b_gk * b_h + b_xk
                tl.store(p_y + offs, b_h.to(p_y.dtype.element_ty), mask=m)
                if BACKWARD:
                    # dg[t] = a[t] * y[t - D]
                    m_p = m_q & (t - D >= 0) & (t - D < T)
                    b_yp = tl.load(p_yf + (offs - D * s_t), mask=m_p, other=0.0).to(ACC)
                    b_yp = _y_before(b_yp, m_first, i_state, p_h0, has_first, ACC, HAS_H0, VARLEN)
                    tl.store(p_dg + offs, (b_h * b_yp).to(p_dg.dtype.element_ty), mask=m)
                    if HAS_HOUT:
                        if has_first:
                            _store_dh0(p_g, offs, p_hout, b_h, m_first, i_state, ACC)
                elif HAS_HOUT:
                    if has_last:
                        tl.store(p_hout + i_state, b_h.to(p_hout.dtype.element_ty), mask=m_last)
            if not LOOKBACK:
                b_carry = tl.sum(tl.where(m_end, b_p, 0.0), axis=0)
        else:
            b_y = b_b + b_a * b_carry[None, :]
            tl.store(p_y + offs, _from_scan_order(b_y, FLIP, R, V, TILE3).to(p_y.dtype.element_ty), mask=m_mem)
            if not LOOKBACK:
                b_carry = tl.sum(tl.where(m_end, b_y, 0.0), axis=0)
            has_first = _holds(t_first, i_seg, BLOCK_T, VARLEN)
            has_last = _holds(t_last, i_seg, BLOCK_T, VARLEN)
            if BACKWARD:
                # dg[t] = a[t] * y[t - D], with y before the first step = h0 (or 0)
                b_ym = tl.load(p_yf + offs, mask=m_mem, other=0.0)
                b_yp = _to_scan_order(_load_shifted(p_yf, base_q, m_q, t_row, s_t, T, 0.0, b_ym, -D, V), FLIP, BLOCK_T, TILE3).to(ACC)
                b_yp = _y_before(b_yp, m_first, i_state, p_h0, has_first, ACC, HAS_H0, VARLEN)
                tl.store(p_dg + offs, _from_scan_order(b_y * b_yp, FLIP, R, V, TILE3).to(p_dg.dtype.element_ty), mask=m_mem)
                if HAS_HOUT:
                    if has_first:
                        _store_dh0(p_g, _to_scan_order(offs, FLIP, BLOCK_T, TILE3), p_hout, b_y, m_first, i_state, ACC)
            elif HAS_HOUT:
                if has_last:
                    tl.store(p_hout + i_state, b_y.to(p_hout.dtype.element_ty), mask=m_last)


@dataclass(frozen=True)
class ScanConfig:
    """Tile shape and launch width of one scan launch (see ``pick_config``)."""

    block_t: int
    block_q: int
    num_warps: int
    lookback: bool | None = None
    """Split a chain over programs with the look-back (True), walk it in one program (False), or
    decide from the number of chains (None, see ``use_lookback``)."""
    slice_k: int = 1
    """Contiguous channels: steps per row of the sliced tile (block_t // slice_k rows, a power of
    two); ignored when time is contiguous."""
    slice_keep: bool = True
    """Contiguous channels: keep the slices in registers between the two passes (else re-read)."""
    prefetch: bool = True
    """Contiguous channels, one program per chain: load segment i + 1 before segment i's passes."""
    stages: int = 1
    """One program per chain: software-pipelining stages of the segment loop (1: none)."""
    lookback_window: bool | None = None
    """Look-back: read the flags of 32 x num_warps predecessors per step (True) or one (False; see
    ``_walk_back``); None: the window in forward passes only (H100, notes/scan.md: forward +4–16 %,
    backward −5–25 %, its registers)."""

    def window(self, backward: bool) -> bool:
        """Whether a look-back pass (``backward`` or not) reads a window of flags."""
        return not backward if self.lookback_window is None else self.lookback_window


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def vector_steps(itemsize: int, time_contiguous: bool) -> int:
    """Steps per 16-byte vector along a contiguous time axis (1 when channels are contiguous)."""
    return 16 // itemsize if time_contiguous else 1


# Contiguous channels, per (itemsize, pass): (rows, slice_k, block_q, num_warps, slice_keep, prefetch, stages) of
# a sliced tile. "fwd" / "bwd": one program per chain; "lookback" / "lookback-bwd": one tile per program,
# forward / backward pass. From the H100 sweeps of notes/scan.md (version 8 and session 8,
# benchmarks/scan_tune.py): float32 chain walks re-read their slices and let Triton's pipeliner
# stage the loads 3 segments deep (fwd 0.93 → 0.94–0.95, bwd 0.78–0.80 → 0.93–0.94 of the floor), and
# so do 16-bit backward chain walks on 64-channel tiles (0.59 → 0.78, 0.70 → 0.89); 16-bit look-back
# backward re-reads (0.47 → 0.59, 0.34 → 0.52); float64 from the offline counts only.
SLICED_TILES = {
    (8, "fwd"): (16, 8, 16, 4, True, False, 1), (8, "bwd"): (16, 8, 16, 4, True, False, 1),
    (8, "lookback"): (16, 8, 16, 4, True, False, 1), (8, "lookback-bwd"): (16, 8, 16, 4, True, False, 1),
    (4, "fwd"): (16, 8, 32, 4, False, False, 3), (4, "bwd"): (16, 8, 32, 4, False, False, 3),
    (4, "lookback"): (16, 8, 32, 4, True, False, 1), (4, "lookback-bwd"): (16, 8, 32, 4, True, False, 1),
    (2, "fwd"): (16, 8, 32, 4, True, False, 1), (2, "bwd"): (16, 4, 64, 4, False, False, 3),
    (2, "lookback"): (16, 8, 32, 4, True, False, 1), (2, "lookback-bwd"): (16, 8, 32, 4, False, False, 1),
}


@functools.lru_cache(maxsize=4096)
def pick_config(T: int, Q: int, itemsize: int, time_contiguous: bool, tile3: bool, mode: str = "fwd") -> ScanConfig:
    """Tile shape from the H200 sweep (notes/scan.md).

    Contiguous time: a forward-direction forward pass takes plain tiles of up to 4096 steps of
    one row (one tile per row up to T = 4096: no look-back); a 3-D tile (reverse scan, backward)
    takes 2048 steps of 2 rows, since Triton moves a [BLOCK_T, 1] scan off the vectorised layout.
    32 elements per thread in either case. ``mode`` "walk" (16/32-bit, chains walked by one
    program, chosen after the look-back decision, which the plain tiles make): plain tiles of
    8192 steps when T > 4096, and 8 warps for those and for 3-D tiles of 2048 steps (H100,
    notes/scan.md: (2,256,65536) forward 0.911 → 0.928 fp32, backward 0.909 → 0.927; the
    look-back keeps 4 warps, 8 lose 4–5 % there).
    Contiguous channels: a sliced tile of ``SLICED_TILES`` for ``mode`` ("fwd" or "bwd" when one
    program walks each chain, "lookback" / "lookback-bwd" when chains are split over programs;
    rows x slice_k steps by block_q channels), shrunk for short T (fewer steps per row first, then fewer rows) and
    narrow Q, with fewer warps when it holds fewer vectors."""
    small = 2 if itemsize == 8 else 1  # float64 tiles hold half as many steps
    if time_contiguous:
        v = vector_steps(itemsize, True)
        walk = mode == "walk" and itemsize <= 4
        if tile3:
            block_t = max(min(_pow2_at_least(T), 2048 // small), v)
            block_q = min(max(_pow2_at_least(Q), 2), max(2, 4096 // small // block_t))
        elif walk and T > 4096:
            return ScanConfig(8192, 1, 8)
        else:
            block_t = max(min(_pow2_at_least(T), 4096 // small), v)
            block_q = min(_pow2_at_least(Q), max(1, 4096 // small // block_t))
        num_warps = 8 if walk and tile3 and block_t == 2048 else max(1, min(4, block_t * block_q // 512))
        return ScanConfig(block_t, block_q, num_warps)
    rows, slice_k, block_q, num_warps, keep, prefetch, stages = SLICED_TILES[itemsize, mode]
    full = rows * block_q
    block_t = min(rows * slice_k, _pow2_at_least(T))
    slice_k = min(slice_k, block_t)
    block_q = min(block_q, _pow2_at_least(Q))
    num_warps = max(1, num_warps * (block_t // slice_k) * block_q // full)
    return ScanConfig(block_t, block_q, num_warps, slice_k=slice_k, slice_keep=keep, prefetch=prefetch, stages=stages)


def use_lookback(n_chains: int, n_seg: int, in_flight: int, device: torch.device) -> bool:
    """Split chains over programs with the look-back only when a chain has several segments and
    one program per chain would hold fewer than 4096 elements per SM in flight (the H200 runs of
    notes/scan.md, version 6: 512 chains of 4096-step tiles reach 0.89 of the floor that way).
    ``in_flight``: the elements one walking program keeps in flight (``_plan``: its tile, a third
    more for the pipelined 16-bit backward tiles)."""
    if n_seg == 1:
        return False
    return n_chains * in_flight < 4096 * _host.sm_count(device)


@dataclass(frozen=True)
class View:
    """A tensor seen as (P, T, Q) with element strides (s_p, s_t, s_q)."""

    P: int
    T: int
    Q: int
    s_p: int
    s_t: int
    s_q: int


def view_of(x: Tensor, dim: int) -> View | None:
    """The (P, T, Q) view of ``x`` scanned along ``dim`` without a copy, or None if there is none.

    Time-contiguous data (the scanned axis innermost, e.g. (B, D, T) with dim=-1) becomes
    (1, T, rows) with row stride T; row-major data with the scanned axis outside (e.g. (B, T, D)
    with dim=1) becomes (B, T, D). Channel index q (or row) then enumerates the state's elements
    in order. Computed from the shape and strides alone (cached): no tensor is made.
    """
    return _view(x.shape, x.stride(), dim % x.dim())


def _contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """``Tensor.is_contiguous()`` for these sizes and strides (size-1 axes and empty tensors
    ignore strides, as PyTorch does)."""
    if 0 in shape:
        return True
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1:
            if s != expected:
                return False
            expected *= n
    return True


@functools.lru_cache(maxsize=1024)
def _view(shape: tuple[int, ...], strides: tuple[int, ...], dim: int) -> View | None:
    T = shape[dim]
    rows = math.prod(shape) // T
    moved = (*shape[:dim], *shape[dim + 1 :], T), (*strides[:dim], *strides[dim + 1 :], strides[dim])
    if _contiguous(*moved):
        return View(1, T, rows, 0, 1, T)
    if _contiguous(shape, strides):
        Q = math.prod(shape[dim + 1 :])
        return View(rows // Q, T, Q, T * Q, Q, 1)
    return None


class _Plan(NamedTuple):
    """Everything ``scan_launch`` derives from the problem's shape and flags (cached)."""

    grid: tuple[int, int, int]
    static: tuple  # LeanKernel's key part: constexprs, num_warps, pointer dtypes
    ints: tuple[int, ...]
    consts: tuple
    num_warps: int
    lookback_tiles: int  # tiles of look-back state to allocate (0: no look-back)
    block_q: int
    acc: torch.dtype  # accumulation dtype (the look-back records')
    gluon: bool  # the pass runs through gluon_walk.walk_fwd_launch instead


@functools.lru_cache(maxsize=1024)
def _plan(
    v: View, dtype: torch.dtype, device: torch.device, reverse: bool, backward: bool, n_seq: int,
    optional: tuple[bool, ...], config: ScanConfig | None, pick: Callable[..., ScanConfig], split: Callable[..., bool],
    gluon: bool = False,
) -> _Plan:
    """The launch of one pass; ``optional``: whether initial_state, dfinal, state_out and
    cu_seqlens are given; ``pick`` and ``split``: the tile and look-back rules (``pick_config``
    and ``use_lookback``, part of the cache key so that replacing either takes effect); ``gluon``:
    ``gluon_walk.ENABLED`` (likewise). A pass with no explicit ``config`` that
    ``gluon_walk.use_gluon_walk`` accepts runs the Gluon walk."""
    has_h0, has_hin, has_hout, varlen = optional
    scan_rev = reverse != backward
    itemsize = dtype.itemsize
    vec = vector_steps(itemsize, v.s_t == 1)
    cfg = config or pick(v.T, v.Q, itemsize, v.s_t == 1, vec > 1 and (scan_rev or backward), "bwd" if backward else "fwd")
    slice_k = cfg.slice_k if vec == 1 else 1
    rows = cfg.block_t // slice_k
    if cfg.block_t % slice_k or rows & (rows - 1):
        raise ValueError(f"config {cfg}: block_t must be slice_k times a power of two")
    n_qblk, n_seg = -(-v.Q // cfg.block_q), -(-v.T // cfg.block_t)
    # 16-bit backward walks over contiguous channels (3-stage pipelined tiles) count a third more
    # elements in flight: at 128 chains of 64 channels the walk reaches 0.86 of the floor against
    # the look-back's 0.70, at 96 chains 0.66 against 0.68 (H100, notes/scan.md session 12)
    in_flight = cfg.block_t * cfg.block_q * (4 if backward and itemsize == 2 and vec == 1 else 3) // 3
    lookback = split(v.P * n_qblk, n_seg, in_flight, device) if cfg.lookback is None else cfg.lookback and n_seg > 1
    if lookback and config is None and vec == 1:
        # chains split over programs take the look-back's own tile
        cfg = pick(v.T, v.Q, itemsize, False, False, "lookback-bwd" if backward else "lookback")
        slice_k = cfg.slice_k
        n_qblk, n_seg = -(-v.Q // cfg.block_q), -(-v.T // cfg.block_t)
        lookback = n_seg > 1
    elif not lookback and config is None and vec > 1:
        # contiguous time, one program per chain: the chain walk's own tile (may be longer)
        cfg = pick(v.T, v.Q, itemsize, True, vec > 1 and (scan_rev or backward), "walk")
        n_qblk, n_seg = -(-v.Q // cfg.block_q), -(-v.T // cfg.block_t)
    n_chains = v.P * n_qblk
    n_tiles = n_chains * n_seg
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    stages = 1 if lookback else cfg.stages
    if varlen and itemsize == 4 and config is None:
        # float32 over packed sequences: the pipeliner also stages each slice's edge data (and state
        # gathers) in shared memory, so 3 stages hold one program per SM and run slower than 2 (H100,
        # 4×8192×2048 forward 0.64 vs 0.87 of the floor, backward 0.78 vs 0.89), or overflow it with
        # states (128 × 32 backward: 311 KB, sm_90a). 16-bit tiles stage little there and keep 3
        # (bfloat16 backward 8×2048×2048: 0.82 vs 0.73 with 2). notes/scan.md, session 11.
        stages = min(stages, 2)
    consts = (
        acc, cfg.block_t, cfg.block_q, vec, slice_k,
        bool(cfg.slice_keep and vec == 1),  # SLICE_KEEP
        bool(cfg.prefetch and vec == 1 and not lookback),  # PREFETCH
        stages,  # STAGES
        math.ceil(math.log2(n_seq)) if n_seq > 1 else 0,  # SEARCH_STEPS
        reverse, backward, scan_rev, varlen, lookback,
        lookback and cfg.window(backward),  # LB_WINDOW
        device.type == "cuda", 32 * cfg.num_warps,  # POLL_LOAD (the interpreter has no inline assembly), THREADS
        has_h0, has_hin, has_hout,
    )
    # pointer dtypes: gates, tokens, out, y, dgates, initial_state, dfinal, state_out, cu_seqlens,
    # flags, records (None-ness and alignment are LeanKernel's own key)
    dtypes = (dtype,) * 5 + (dtype,) * 3 + (torch.int32, torch.int32, acc)
    use_gluon = gluon and config is None and gluon_walk.use_gluon_walk(
        dtype, device, vec == 1 and v.s_q == 1, lookback, scan_rev, backward, varlen)
    return _Plan(
        (n_tiles if lookback else n_chains, 1, 1), (consts, cfg.num_warps, dtypes),
        (v.T, v.P, v.Q, v.s_p, v.s_t, v.s_q, n_qblk, n_seg, n_seq), consts, cfg.num_warps,
        n_tiles if lookback else 0, cfg.block_q, acc, use_gluon,
    )


def scan_launch(
    gates: Tensor,
    tokens: Tensor,
    out: Tensor,
    view: View,
    *,
    reverse: bool,
    initial_state: Tensor | None,
    state_out: Tensor | None,
    cu_seqlens: Tensor | None,
    y: Tensor | None = None,
    dgates: Tensor | None = None,
    dfinal: Tensor | None = None,
    config: ScanConfig | None = None,
) -> triton.compiler.CompiledKernel:
    """Launch one forward (``y is None``) or backward pass. All data tensors share ``view``'s
    strides and ``tokens``' dtype; states are contiguous (N, *other) or (*other). Backward:
    ``tokens`` is dy, ``out`` receives dx, ``dgates`` dg, ``state_out`` d initial_state; ``y``
    is the forward output. Returns the compiled kernel (registers and spills are on it)."""
    plan = _plan(
        view, tokens.dtype, tokens.device, reverse, y is not None, 1 if cu_seqlens is None else cu_seqlens.shape[0] - 1,
        (initial_state is not None, dfinal is not None, state_out is not None, cu_seqlens is not None), config,
        pick_config, use_lookback, gluon_walk.ENABLED,
    )
    if plan.gluon:
        return gluon_walk.walk_fwd_launch(gates, tokens, out, view.P, view.T, view.Q, view.s_p, view.s_t,
                                          initial_state, state_out)
    flags = records = None
    if plan.lookback_tiles:
        flags = torch.zeros(plan.lookback_tiles, dtype=torch.int32, device=tokens.device)
        records = torch.empty(3, plan.lookback_tiles, plan.block_q, dtype=plan.acc, device=tokens.device)
    ptrs = (gates, tokens, out, y, dgates, initial_state, dfinal, state_out, cu_seqlens, flags, records)
    return _SCAN(plan.grid, plan.static, ptrs, plan.ints, (), lambda: _options(plan.consts, plan.num_warps))


# constexpr parameters of _linear_scan_kernel, in order (after 11 pointers and 9 integers, no
# floats: LeanKernel's argument order)
CONSTEXPRS = (
    "ACC", "BLOCK_T", "BLOCK_Q", "V", "SLICE_K", "SLICE_KEEP", "PREFETCH", "STAGES", "SEARCH_STEPS", "REVERSE", "BACKWARD",
    "SCAN_REV", "VARLEN", "LOOKBACK", "LB_WINDOW", "POLL_LOAD", "THREADS", "HAS_H0", "HAS_HIN", "HAS_HOUT",
)
N_POINTERS, N_INTS = 11, 9


def _options(consts: tuple, num_warps: int) -> dict:
    """``kernel[grid](...)``'s keyword arguments for ``scan_launch``'s constexpr values."""
    opts = dict(zip(CONSTEXPRS, consts, strict=True))
    opts["ACC"] = tl.float64 if opts["ACC"] == torch.float64 else tl.float32
    return dict(opts, num_warps=num_warps)


_SCAN = LeanKernel(_linear_scan_kernel)
