"""Gluon forward of softmax attention for Hopper (sm_90): warp-specialised, TMA-fed, wgmma.

The Triton forward (``forward.py``) waits on every QKᵀ product before its softmax and loads K/V
with the same warps that compute; on an H100 it reaches ~490 TFLOP/s at (2, 16, 8192, 128) bf16
against cuDNN's ~650 (notes/attention.md). This kernel is the FlashAttention-3 structure in Gluon:

- a work item is 64·NUM_WG query rows of one (sequence, query head): NUM_WG consumer warpgroups
  of 64 rows (2 at D = 128 and 256, 3 at D = 64; the default partition and worker partitions), which
  share the K/V tiles. Persistent programs, one per SM, walk the items in turn (the next item's
  q and K/V load during this one's last products and epilogue; o leaves through slots of its
  own, above D = 128 through the q slots, which then take the next q only after o's store:
  ``_o_in_q``). Causal items are row blocks, longest first within groups of heads
  (``causal_groups``), taken in rounds of alternating direction; a causal forward of many rounds launches one program
  per item instead (``attention_forward``). Non-causal items follow ``plan``: where the last round
  would leave SMs idle, each (sequence, head) gets fewer big items and some of 64·(NUM_WG − 1)
  rows, after all the big ones. A
  warpgroup without rows in an item (past the sequence's end, or a small item's last) idles: it
  only keeps the ring's and the turns' protocol;
- a one-warp producer partition loads q once and streams K/V tiles of BLOCK_N keys through a
  ring of STAGES shared-memory slots with TMA, each slot with ready / empty mbarriers (empty
  counts one arrival per consumer);
- a consumer's step j issues S_j = Q·K_jᵀ and O += P_{j-1}·V_{j-1} together, then runs the
  softmax of S_j while they run; P goes from the S accumulator to the A operand in registers.
  The consumers issue in turns (an mbarrier each, FlashAttention-3's ping-pong), so one's
  products run during another's softmax;
- masks only where needed: the tiles reaching past a warpgroup's first row under the causal
  mask (Sq = Sk), the last tile otherwise (the end of the keys). TMA zero-fills rows past each
  head's end (4-D descriptors over (B, H, S, D) with the tensors' own strides: "bshd" views
  need no copy) and clips the o store there.

Scope (``supported`` says when): CUDA capability 9.0, float16 / bfloat16, head dim 64, 128 or 256 (or
72…120 and 136…248 in steps of 8, run at width 128 and 256: ``width``),
dense (B, H, S, D) with unit head-dim stride and 16-byte aligned strides and bases, no sliding
window, no softcap, positive scale, causal only with Sq = Sk, and enough work (``MIN_WORK``) to
be the faster one. Everything else runs the Triton forward. Online softmax in base 2, as ``forward.py``; o and lse (natural log) alike.
"""

from __future__ import annotations

import functools
import heapq
import math

import torch

from .. import _host
from .._launch import LeanKernel, TmaArg

Tensor = torch.Tensor

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
except ImportError:  # a Triton without Gluon: the Triton forward serves every case
    gluon = None

ENABLED = True
"""False: every forward runs the Triton kernel (for measuring one against the other)."""

WG_M = 64  # rows per consumer warpgroup (one wgmma M)
NUM_WG = {64: 3, 128: 2, 256: 2}  # consumer warpgroups per head dim
BLOCK_N = {64: 128, 128: 128, 256: 64}  # keys per K/V tile (Gluon tiles are powers of two: FlashAttention-3's 176 is not open)
STAGES = {64: 3, 128: 2, 256: 2}  # K/V ring depth per head dim (shared memory at D = 128: q 32 KB + 2·2·32 KB;
# D = 256: q 64 KB (o leaves through it) + 2·2·32 KB = 197 KB)
MAXNREG = {3: 128, 2: 168}  # registers per thread at launch per consumer count: warpgroups × MAXNREG ≤ 512
MIN_WORK = {(64, False): 1 << 33, (64, True): 1 << 35, (128, False): 1 << 30, (128, True): 1 << 30,
            (256, False): 1 << 26, (256, True): 1 << 26}
"""(head dim, causal) -> the B·Hq·Sq·Sk·D (halved under the causal mask) from which the Gluon forward
runs; below it the Triton forward. H100, bf16, kernel µs Gluon vs Triton, with the descriptors'
encodings reused (LeanKernel.TmaArg; session 11, probe-small-gluon log): D = 128 gains from 2^30
(8×8×512×128 30.4 vs 35.6, causal 28.7 vs 31.1; 16×8×512×128 50.5 vs 65.8); D = 64 loses on small
grids (16×8×512×64 37.5 vs 35.3, 32×8×128×64 18.8 vs 15.0), is level at 2^33 (4×8×2048×64 87.4 vs
89.8) and gains causal only on long rows (8×16×2048×64, 2^34: 207 vs 210; 2×16×8192×64, 2^36: 614
vs 739). D = 256 (session 18, gluon-fwd-d256-small.json): faster at every size measured, from 2^26
(1×8×256×256 15.3 vs 19.6; 16×8×512×256 78.0 vs 113.0; 4×8×2048×256 211.7 vs 330.6, cuDNN 218.9)."""
# causal forwards of at most this many items per SM run persistent programs (``attention_forward``)
CAUSAL_PERSISTENT_ROUNDS = 4
# the causal walk keeps (sequence, head) pairs in groups whose K/V stay in L2 (``causal_groups``)
CAUSAL_L2_BYTES = 24 << 20  # K/V bytes of all heads below which any grouping is allowed (H100: 50 MB of L2)
CAUSAL_MIN_REUSE = 8  # above it, at least this many concurrent programs per head (programs / heads per group)
CAUSAL_PERSISTENT_MIN_WORK = {64: 1 << 32, 128: 1 << 30, 256: 1 << 30}
"""head dim -> the threshold (if lower than ``MIN_WORK``'s) of causal forwards that run persistent
programs (``CAUSAL_PERSISTENT_ROUNDS``): H100, session 15 (attn-causal-probe), 4×8×2048×64 (2^32)
60.3–61.2 µs against the Triton forward's 67.5 (cuDNN 61.3–61.8); with one program per item the
Gluon forward stays 3–4 % behind the per-item kernel before it at D = 64 (8×16×2048×64 216.9 against
208.0 µs), so those keep ``MIN_WORK``."""
DYNAMIC_HEAD_DIMS = (128,)
"""Head dims whose causal forwards of more than ``CAUSAL_PERSISTENT_ROUNDS`` items per SM run persistent
programs that take items from a global counter; the others launch one program per item. H100, session 16
(attn-causal-dynamic-probe): D = 128 gains 1–4 % (2×16×8192×128 952 against 982 µs, 2×32×8192×128 1875
against 1951, 1×32×16384×128 3548 against 3592), D = 64 loses 7–8 % (8×16×2048×64 233 against 217 µs,
8×8×2048×64 129 against 119)."""
LOG2E = 1.4426950408889634


def width(head_dim: int) -> int | None:
    """The head-dim width the Gluon kernels run ``head_dim`` at: 64, 128 and 256 as they are, 72…120 (multiples
    of 8: 16-byte rows) at 128 and 136…248 at 256 — TMA zero-fills the columns past the head dim on loads (they
    add nothing to q·k, and give o columns nobody reads) and clips them on stores (the Triton kernels pad to
    the same powers of two); None: the Triton kernels only."""
    if head_dim == 64:
        return 64
    if head_dim % 8 == 0 and 64 < head_dim <= 256:
        return 128 if head_dim <= 128 else 256
    return None


def supported(q: Tensor, k: Tensor, v: Tensor, o: Tensor, prob) -> bool:
    """Whether ``prob`` (a ``forward.Problem``) on these canonical tensors runs the Gluon forward."""
    min_work, w = MIN_WORK, width(prob.head_dim)
    if prob.has_right and w is not None and _persistent(q.shape[0] * prob.hq * _host.cdiv(prob.max_sq, WG_M * NUM_WG[w]), q.device):
        min_work = {**MIN_WORK, (w, True): min(MIN_WORK[w, True], CAUSAL_PERSISTENT_MIN_WORK[w])}
    return eligible(prob, min_work, (q, k, v, o))


def _persistent(n_causal_items: int, device: torch.device) -> bool:
    """Whether a causal forward of this many items runs persistent programs (``attention_forward``)."""
    return n_causal_items <= CAUSAL_PERSISTENT_ROUNDS * _host.sm_count(device)


def eligible(prob, min_work: dict, tensors: tuple[Tensor, ...]) -> bool:
    """The Gluon kernels' common scope (module docstring), with ``min_work`` per (``width``, causal)
    and every tensor in ``tensors`` expressible as a TMA descriptor."""
    q = tensors[0]
    if gluon is None or not ENABLED or q.device.type != "cuda":
        return False
    w = width(prob.head_dim)
    if q.dtype not in (torch.float16, torch.bfloat16) or w is None:
        return False
    if prob.varlen or prob.has_left or prob.softcap > 0 or not prob.scale > 0:
        return False
    if prob.has_right and (prob.wr != 0 or prob.max_sq != prob.max_sk):
        return False
    work = q.shape[0] * prob.hq * prob.max_sq * prob.max_sk * prob.head_dim >> prob.has_right
    if work < min_work[w, prob.has_right] or _host.capability(q.device) != (9, 0):
        return False
    for x in tensors:
        s = x.stride()
        # TMA: unit head-dim stride, 16-byte aligned base and strides, no zero (broadcast) stride
        if s[3] != 1 or x.data_ptr() % 16 or any(st <= 0 or st * x.element_size() % 16 for st in s[:3]):
            return False
    return True


@functools.cache
def _smem_layout(head_dim: int, rows: int, dtype: torch.dtype):
    gdt = gl.bfloat16 if dtype == torch.bfloat16 else gl.float16
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, head_dim], gdt)


def descriptor(x: Tensor, rows: int, cols: int | None = None) -> TmaArg:
    """A TMA descriptor argument over canonical (B, H, S, D) ``x`` with blocks of ``rows`` positions
    and ``cols`` columns, by default ``width(D)`` (LeanKernel encodes it once per address, shape and
    strides)."""
    w = cols or width(x.shape[3])
    return TmaArg(x, (1, 1, rows, w), _smem_layout(w, rows, x.dtype))


def _program_time(rows: int, n_wg: int) -> float:
    """A program's estimated time, as a fraction of a full one's, for ``rows`` valid query rows
    (warpgroups past them idle: ``_consumer``). Measured on an H100 by forcing plans (session 14,
    gluon-plan-probe): at D = 64 two of three warpgroups take ~0.87 of the time (4×8×2048×64:
    (8, 4) 84.6 µs, (10, 1) 88.5, (9, 3) 87.2, (7, 6) 100.9, which a 0.87 model orders alike);
    at D = 128 one warpgroup alone is no faster than two (no partner to hide its softmax
    behind: (16, 0) 122.6 µs, (15, 2) 140.1). Measured with one program per item, before the
    persistent programs, which walk the items in the same order."""
    idle = n_wg - min(_host.cdiv(rows, WG_M), n_wg)
    return 1.0 if n_wg - idle < 2 else 1.0 - 0.13 * idle


def _makespan(times: list[float], n_sm: int) -> float:
    """List scheduling of programs of the given times, in launch order, one program per SM at a time."""
    free = [0.0] * n_sm
    for t in times:
        heapq.heapreplace(free, free[0] + t)
    return max(free)


@functools.lru_cache(maxsize=1024)
def plan(sq: int, n_bh: int, n_sm: int, n_wg: int) -> tuple[int, int]:
    """(big, small) work items per (sequence, head) of a non-causal forward over ``sq`` query rows:
    big items of n_wg · 64 rows, first for every (sequence, head) pair, then small ones of
    (n_wg − 1) · 64 rows (the persistent programs walk them in that order), so that the last round
    has finer work units (4×8×2048×64: 8 of 192 rows and 4 of 128 per head instead of 10 and a
    128-row tail: an estimated makespan of 2.87 full items instead of 3 on 132 SMs; 84.6 µs against
    88.0 measured with one program per item). The split with the shortest list-scheduling makespan
    (``_makespan`` of ``_program_time``s) among a few around all-big; all-big unless another is
    ≥ 3 % shorter, or when there are more than 20 000 items (many rounds: the tail is small)."""
    big, small = n_wg * WG_M, (n_wg - 1) * WG_M
    n_full = _host.cdiv(sq, big)
    if n_bh * n_full > 20_000:
        return n_full, 0

    def estimate(n_big: int, n_small: int) -> float:
        rows = [min(big, sq - i * big) for i in range(n_big)]
        first = [_program_time(r, n_wg) for r in rows] * n_bh
        rest = [_program_time(min(small, sq - n_big * big - i * small), n_wg) for i in range(n_small)] * n_bh
        return _makespan(first + rest, n_sm)

    best, best_time = (n_full, 0), estimate(n_full, 0)
    for n_big in range(sq // big, max(sq // big - 2 * n_wg, -1), -1):
        n_small = _host.cdiv(sq - n_big * big, small)
        t = estimate(n_big, n_small)
        if t < best_time * 0.97:
            best, best_time = (n_big, n_small), t
    return best


def _snake_makespan(times: list[float], n_p: int) -> float:
    """The longest program's total when ``n_p`` programs take ``times`` in rounds of alternating
    direction (``_round_item``)."""
    load = [0.0] * n_p
    for w, t in enumerate(times):
        r, i = divmod(w, n_p)
        load[n_p - 1 - i if r % 2 else i] += t
    return max(load)


@functools.lru_cache(maxsize=1024)
def causal_groups(n_bh: int, sq: int, rows: int, kv_bytes: int, n_sm: int) -> int:
    """(sequence, head) pairs per group of the causal walk (``_item``): the items are row blocks of
    ``rows`` rows, longest first within a group of pairs, group after group. One group of every
    pair balances the programs best (globally longest first), but with K/V larger than L2 the
    programs then stream different heads' K/V at once (H100, 8×16×2048×64: 228 µs against 206 for
    the per-item grid, which walks head by head; 1×32×16384×128: 3.89 ms against 3.71). So above
    ``CAUSAL_L2_BYTES`` a group has at most n_sm / ``CAUSAL_MIN_REUSE`` pairs; the group size
    (powers of two and n_bh) with the shortest ``_snake_makespan`` of the items' tiles (+ 1 for
    an item's prologue and epilogue), the smaller on a tie within 0.5 %."""
    n_m = _host.cdiv(sq, rows)
    bn = BLOCK_N[128]  # the model counts 128-key tiles at every head dim (not tuned for D = 256's 64-key tiles)
    tiles = [min(_host.cdiv(sq, bn), _host.cdiv((i + 1) * rows, bn)) + 1.0 for i in reversed(range(n_m))]
    limit = n_bh if kv_bytes <= CAUSAL_L2_BYTES else max(1, n_sm // CAUSAL_MIN_REUSE)
    if n_bh * n_m > 20_000:  # many rounds: any grouping balances
        return 1
    n_p = min(n_bh * n_m, n_sm)
    best_time, best = math.inf, 1
    for g in sorted({1 << e for e in range(n_bh.bit_length())} | {n_bh}):
        if g > limit:
            break
        order = [t for g0 in range(0, n_bh, g) for t in tiles for _ in range(min(g, n_bh - g0))]
        t = _snake_makespan(order, n_p)
        if t < best_time * 0.995:
            best_time, best = t, g
    return best


def attention_forward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, prob) -> None:
    """Launch the Gluon forward (``supported`` must hold): writes o (like q) and lse (float32).
    Persistent programs, one per SM (at most one per work item), walk the items (``_item``):
    ``plan``'s, or causal row blocks of 64 · NUM_WG rows grouped by ``causal_groups``. A causal
    forward of more than ``CAUSAL_PERSISTENT_ROUNDS`` items per SM takes its items head by head,
    longest first within a head, either from a global counter (persistent programs, head dims in
    ``DYNAMIC_HEAD_DIMS``) or as one program per item, and the hardware's scheduler balances
    them: the static rounds of persistent programs can be uneven, and measured slower there (H100,
    benchmarks/results/h100-2026-11-23-session15/attn-groups-probe.json: 1×32×16384×128 3.61 against
    3.33 ms, 8×16×2048×64 245 against 206 µs at the grouping chosen), while on few rounds they gain
    (4×8×2048×64 59.8 against 66.6 µs, 4×8×2048×128 72.6 against 87.7)."""
    b, hq, sq, _ = q.shape
    d = width(prob.head_dim)
    causal, n_wg, n_sm = prob.has_right, NUM_WG[d], _host.sm_count(q.device)
    n_big, n_small = (_host.cdiv(sq, WG_M * n_wg), 0) if causal else plan(sq, b * hq, n_sm, n_wg)
    n_items = b * hq * (n_big + n_small)
    many_rounds = causal and not _persistent(n_items, q.device)
    dynamic = many_rounds and d in DYNAMIC_HEAD_DIMS
    persistent = not many_rounds or dynamic
    n_grp, p_next = 1, None
    if dynamic:  # head by head, longest first within a head, from a counter
        p_next = torch.zeros(1, dtype=torch.int32, device=q.device)
    elif causal and persistent:
        n_grp = causal_groups(b * hq, sq, WG_M * n_wg, b * prob.hkv * prob.max_sk * d * 2 * q.element_size(), n_sm)
    grid = (min(n_items, n_sm) if persistent else n_items, 1, 1)
    _FWD(
        grid, (q.dtype, d, causal, persistent, dynamic),
        (descriptor(q, WG_M), descriptor(k, BLOCK_N[d]), descriptor(v, BLOCK_N[d]), descriptor(o, WG_M), lse, p_next),
        (lse.stride(0), lse.stride(1), sq, prob.max_sk, prob.hq // prob.hkv, hq, n_big, n_small, n_items, n_grp), (prob.scale * LOG2E,),
        lambda: dict(HEAD_DIM=d, CAUSAL=causal, STAGES=STAGES[d], NUM_WG=n_wg, PERSISTENT=persistent, DYNAMIC=dynamic,
                     num_warps=4, maxnreg=MAXNREG[n_wg]),
    )


if gluon is not None:

    @gluon.constexpr_function
    def _o_in_q(head_dim):
        """Whether o leaves through the q slots: above D = 128 a separate o staging (64 KB at D = 256)
        would leave no room for a 2-deep ring of 64-key K/V tiles."""
        return head_dim > 128

    @gluon.jit
    def kv_ring(k_desc, v_desc, STAGES: gl.constexpr, NUM_WG: gl.constexpr):
        """The K/V ring shared by the forward and the dQ kernel: STAGES slots of K and V tiles with
        ready (one arrival: the TMA's bytes) and empty (one arrival per consumer) mbarriers, the
        resident tiles' mbarrier and the consumers' turn mbarriers (allocated after the caller's
        resident q / dO buffers)."""
        dtype: gl.constexpr = k_desc.dtype
        k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
        v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turn = gl.allocate_shared_memory(gl.int64, [NUM_WG, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for w in gl.static_range(NUM_WG):
            mbarrier.init(turn.index(w), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=NUM_WG)
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(v_empty.index(i), count=NUM_WG)
        return k_bufs, v_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, turn

    @gluon.jit
    def stream_kv(k_desc, v_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, i_b, i_hk, n_tiles, g0):
        """The producer's loop over the ring: K and V tiles 0 … n_tiles − 1 of key/value head i_hk,
        the ring's g0-th tile onwards (g0 tiles went through it before: persistent programs)."""
        STAGES: gl.constexpr = k_bufs.type.shape[0]
        BN: gl.constexpr = k_desc.block_type.shape[2]
        for j in range(n_tiles):
            i_s = (g0 + j) % STAGES
            ph = ((g0 + j) // STAGES) & 1
            mbarrier.wait(k_empty.index(i_s), ph ^ 1)
            mbarrier.expect(k_ready.index(i_s), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [i_b, i_hk, j * BN, 0], k_ready.index(i_s), k_bufs.index(i_s))
            mbarrier.wait(v_empty.index(i_s), ph ^ 1)
            mbarrier.expect(v_ready.index(i_s), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [i_b, i_hk, j * BN, 0], v_ready.index(i_s), v_bufs.index(i_s))

    @gluon.jit
    def _block(sk, BLOCK_M: gl.constexpr, BN: gl.constexpr, CAUSAL: gl.constexpr):
        """(first query row, K/V tiles to visit) of this program of a grid (row block, head, batch),
        as the dQ kernel (``gluon_backward``) launches; causal programs in reverse order (longest rows
        first)."""
        i_m = gl.program_id(0)
        n_tiles = gl.cdiv(sk, BN)
        if CAUSAL:
            i_m = gl.num_programs(0) - 1 - i_m
            n_tiles = gl.minimum(n_tiles, gl.cdiv((i_m + 1) * BLOCK_M, BN))
        return i_m * BLOCK_M, n_tiles

    @gluon.jit
    def _round_item(r, CAUSAL: gl.constexpr):
        """This program's work item in round r of the walk (≥ the item count when it has none):
        programs take items round by round, in order; causal rounds alternate direction (snake), which
        in a list-scheduling model keeps longest-first items as even across programs as the hardware's
        own scheduling of a grid (within 0.2 % on the long causal shapes, where plain rounds are 6 %
        longer); measured, many rounds still come out uneven (``attention_forward``)."""
        i_p = gl.program_id(0)
        n_p = gl.num_programs(0)
        if CAUSAL:
            if r % 2 == 1:
                i_p = n_p - 1 - i_p
        return r * n_p + i_p

    @gluon.jit
    def _item(w, n_items, sq, sk, hq, n_big, n_small, n_grp, BLOCK_M: gl.constexpr, BN: gl.constexpr, CAUSAL: gl.constexpr):
        """(batch, head, first query row, end of its rows, K/V tiles) of work item w of n_items.
        Causal: row blocks of BLOCK_M rows (n_big per (batch, head) pair), the pairs in groups of
        n_grp (``causal_groups``), one group after another, longest first within a group: every
        pair's last block, then every pair's last but one, …; the tiles up to the block's last row.
        Else ``plan``'s items, head-major: each pair's ``n_big`` items of BLOCK_M rows, then each
        pair's ``n_small`` of BLOCK_M − 64 rows."""
        if CAUSAL:
            i_g = w // (n_grp * n_big)
            idx = w % (n_grp * n_big)
            n_gh = gl.minimum(n_grp, n_items // n_big - i_g * n_grp)  # pairs in this group (the last may have fewer)
            m0 = (n_big - 1 - idx // n_gh) * BLOCK_M
            i_bh = i_g * n_grp + idx % n_gh
            return (i_bh // hq, i_bh % hq, m0, gl.minimum(m0 + BLOCK_M, sq),
                    gl.minimum(gl.cdiv(sk, BN), gl.cdiv(m0 + BLOCK_M, BN)))
        n_first = n_items // (n_big + n_small) * n_big
        if w < n_first:
            i_bh = w // n_big
            m0 = (w % n_big) * BLOCK_M
            m_end = m0 + BLOCK_M
        else:
            i_bh = (w - n_first) // n_small
            m0 = n_big * BLOCK_M + ((w - n_first) % n_small) * (BLOCK_M - 64)
            m_end = m0 + (BLOCK_M - 64)
        return i_bh // hq, i_bh % hq, m0, gl.minimum(m_end, sq), gl.cdiv(sk, BN)

    @gluon.jit
    def _first_masked(n_tiles, row0, BN: gl.constexpr, CAUSAL: gl.constexpr):
        """The first tile that needs a mask for the warpgroup whose rows start at row0: under the
        causal mask the first tile reaching past row0; else the last tile (the end of the keys)."""
        if CAUSAL:
            return gl.minimum((row0 + 1) // BN, n_tiles - 1)
        else:
            return n_tiles - 1

    @gluon.jit
    def _masked(j, n_tiles, row0, BN: gl.constexpr, CAUSAL: gl.constexpr):
        """Whether tile j needs a mask (``_first_masked`` ≤ j, tested per tile)."""
        if CAUSAL:
            return j * BN + BN - 1 > row0
        else:
            return j == n_tiles - 1

    @gluon.jit
    def _mask(s, row0, col0, sk, CAUSAL: gl.constexpr):
        """Scores of one tile with the invisible entries at -inf: the causal diagonal (Sq = Sk) or
        the keys past the end."""
        s_layout: gl.constexpr = s.type.layout
        o_r = row0 + gl.arange(0, s.shape[0], layout=gl.SliceLayout(1, s_layout))
        o_c = col0 + gl.arange(0, s.shape[1], layout=gl.SliceLayout(0, s_layout))
        if CAUSAL:
            seen = o_c[None, :] <= o_r[:, None]
        else:
            seen = (o_c < sk)[None, :]
        return gl.where(seen, s, float("-inf"))

    @gluon.jit
    def _softmax(s, m_i, l_i, qk_scale, dtype: gl.constexpr, p_layout: gl.constexpr, o_layout: gl.constexpr):
        """One tile's online-softmax step in base 2. s: [64, BLOCK_N] raw scores (wgmma layout);
        m_i, l_i: running max (scaled) and sum per row. Returns (P in ``dtype`` as the A operand
        of P·V, m_new, l_new, alpha: the factor for o, in o's row layout)."""
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        l_new = l_i * alpha + gl.sum(p, axis=1)
        p16 = gl.convert_layout(p.to(dtype), p_layout)
        return p16, m_new, l_new, gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))

    @gluon.jit
    def _step(j, kv0, tc0, q_s, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, my_turn, next_turn, s_zero,
              o, p16, m_i, l_i, alpha, row0, sk, qk_scale,
              first: gl.constexpr, STAGES: gl.constexpr, MASK, CAUSAL: gl.constexpr):
        """Step j of a consumer: issue S_j = Q·K_jᵀ and O += P_{j-1}·V_{j-1} in its turn, the softmax
        of S_j (masked when MASK: a constant, or a run-time flag) while they run. K/V tile j is the
        ring's (kv0 + j)-th and the turn the (tc0 + j)-th (persistent programs: kv0 tiles and tc0
        turns went before). Returns the new (o, p16, m_i, l_i, alpha)."""
        BN: gl.constexpr = k_bufs.type.shape[3]
        HEAD_DIM: gl.constexpr = k_bufs.type.shape[4]
        g = kv0 + j
        i_k = g % STAGES
        i_v = (g - 1) % STAGES
        mbarrier.wait(k_ready.index(i_k), (g // STAGES) & 1)
        mbarrier.wait(v_ready.index(i_v), ((g - 1) // STAGES) & 1)
        mbarrier.wait(my_turn, ((tc0 + j) & 1) ^ first)
        s_tok = warpgroup_mma(q_s, k_bufs.index(i_k).reshape([BN, HEAD_DIM]).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
        o = o * alpha[:, None]
        acc = warpgroup_mma(p16, v_bufs.index(i_v).reshape([BN, HEAD_DIM]), o, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        s = warpgroup_mma_wait(1, deps=(s_tok,))  # S_j done; P_{j-1}·V_{j-1} may run on
        mbarrier.arrive(k_empty.index(i_k), count=1)
        if MASK:
            s = _mask(s, row0, j * BN, sk, CAUSAL)
        dtype: gl.constexpr = p16.dtype
        p_layout: gl.constexpr = p16.type.layout
        o_layout: gl.constexpr = o.type.layout
        p16, m_i, l_i, alpha = _softmax(s, m_i, l_i, qk_scale, dtype, p_layout, o_layout)
        o = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(v_empty.index(i_v), count=1)
        return o, p16, m_i, l_i, alpha

    @gluon.jit
    def _idle(k_empty, v_empty, my_turn, next_turn, n_tiles, kv0, tc0, first: gl.constexpr, STAGES: gl.constexpr):
        """A consumer warpgroup without rows (a small item's last warpgroup, or past the rows' end):
        takes its turns and releases the ring's slots as a computing warpgroup does, without loads or
        products."""
        for j in range(n_tiles + 1):
            mbarrier.wait(my_turn, ((tc0 + j) & 1) ^ first)
            mbarrier.arrive(next_turn, count=1)
            if j < n_tiles:
                mbarrier.arrive(k_empty.index((kv0 + j) % STAGES), count=1)
            if j > 0:
                mbarrier.arrive(v_empty.index((kv0 + j - 1) % STAGES), count=1)

    @gluon.jit
    def _consumer(args, CAUSAL: gl.constexpr, PERSISTENT: gl.constexpr, DYNAMIC: gl.constexpr, WG: gl.constexpr):
        """Consumer warpgroup WG: rows m0 + WG·64 … + 63 of each of the program's work items in turn
        (PERSISTENT: rounds of ``_round_item``), or of item program_id(0) alone. Warpgroup WG waits
        for ``turn[WG]`` and passes the turn to the next one after issuing. ``args``: the kernel's
        descriptors, buffers, barriers and scalars (``_attn_fwd_ws_kernel``)."""
        (q_desc, k_desc, v_desc, o_desc, p_lse, s_lb, s_lh, q_bufs, o_bufs, k_bufs, v_bufs, q_bar, q_empty,
         k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, hq, n_big, n_small, n_items, n_grp, qk_scale,
         p_next, item_s) = args
        if DYNAMIC:  # the producer takes each item from the counter and passes it through item_s
            kv0 = 0
            tc0 = 0
            it = 0
            w = _next_item(q_bar, item_s, 0)
            while w < n_items:
                kv0, tc0, it = _consume_item(args, w, kv0, tc0, it, CAUSAL, WG)
                w = _next_item(q_bar, item_s, it)
        elif PERSISTENT:
            kv0 = 0  # K/V tiles and turns of this program's earlier items
            tc0 = 0
            it = 0
            for r in range(gl.cdiv(n_items, gl.num_programs(0))):
                w = _round_item(r, CAUSAL)
                if w < n_items:
                    kv0, tc0, it = _consume_item(args, w, kv0, tc0, it, CAUSAL, WG)
        else:
            _consume_item(args, gl.program_id(0), 0, 0, 0, CAUSAL, WG)
        tma.store_wait(0)

    @gluon.constexpr_function
    def _item_layout(num_warps):
        """The layout of the one-element item slot's loads and stores (``item_s``)."""
        return gl.BlockedLayout([1], [32], [num_warps], [0])

    @gluon.jit
    def _next_item(q_bar, item_s, it):
        """The program's it-th item (≥ the item count: none left), as the producer wrote it to item_s
        before arriving on q_bar's it-th phase (``_producer``, DYNAMIC)."""
        mbarrier.wait(q_bar, it & 1)
        return gl.max(item_s.load(_item_layout(gl.num_warps())), axis=0)

    @gluon.jit
    def _consume_item(args, w, kv0, tc0, it, CAUSAL: gl.constexpr, WG: gl.constexpr):
        """Consumer warpgroup WG's part of work item w, the program's it-th, whose K/V tiles start at
        the ring's kv0-th and turns at the tc0-th: its rows (``_rows``), or ``_idle`` when it has
        none. Returns the three counters after the item."""
        (q_desc, k_desc, v_desc, o_desc, p_lse, s_lb, s_lh, q_bufs, o_bufs, k_bufs, v_bufs, q_bar, q_empty,
         k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, hq, n_big, n_small, n_items, n_grp, qk_scale,
         p_next, item_s) = args
        STAGES: gl.constexpr = k_bufs.type.shape[0]
        BM: gl.constexpr = q_desc.block_type.shape[2]  # 64
        BN: gl.constexpr = k_desc.block_type.shape[2]
        NUM_WG: gl.constexpr = q_bufs.type.shape[0]
        my_turn = turn.index(WG)
        next_turn = turn.index((WG + 1) % NUM_WG)
        first: gl.constexpr = 1 if WG == 0 else 0  # warpgroup 0 opens every round of turns
        i_b, i_h, m0, m_end, n_tiles = _item(w, n_items, sq, sk, hq, n_big, n_small, n_grp, NUM_WG * BM, BN, CAUSAL)
        row0 = m0 + WG * BM
        if row0 >= m_end:
            mbarrier.arrive(q_empty, count=1)
            _idle(k_empty, v_empty, my_turn, next_turn, n_tiles, kv0, tc0, first, STAGES)
        else:
            _rows(q_bufs, o_bufs.index(WG), k_bufs, v_bufs, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty,
                  my_turn, next_turn, o_desc, p_lse, s_lb, s_lh, i_b, i_h, row0, n_tiles, sq, sk, qk_scale,
                  kv0, tc0, it & 1, first, CAUSAL, WG)
        return kv0 + n_tiles, tc0 + n_tiles + 1, it + 1

    @gluon.jit
    def _rows(q_bufs, o_s, k_bufs, v_bufs, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty, my_turn, next_turn,
              o_desc, p_lse, s_lb, s_lh, i_b, i_h, row0, n_tiles, sq, sk, qk_scale, kv0, tc0, q_phase,
              first: gl.constexpr, CAUSAL: gl.constexpr, WG: gl.constexpr):
        """A consumer warpgroup's work on its 64 rows from row0 (``_consumer``): K/V tiles from the
        ring's kv0-th, turns from the tc0-th, q once ``q_bar`` completes phase ``q_phase``; o leaves
        through ``o_s``, its own slot, whose previous store is waited for first, and q is released to
        the producer (``q_empty``) once the last S is done; at D = 256 ``o_s`` is the q slot, released
        once o's store has completed."""
        HEAD_DIM: gl.constexpr = k_bufs.type.shape[4]
        STAGES: gl.constexpr = k_bufs.type.shape[0]
        BM: gl.constexpr = q_bufs.type.shape[3]  # 64
        BN: gl.constexpr = k_bufs.type.shape[3]
        dtype: gl.constexpr = q_bufs.dtype
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

        q_s = q_bufs.index(WG).reshape([BM, HEAD_DIM])
        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        m_i = gl.full([BM], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
        l_i = gl.zeros([BM], gl.float32, gl.SliceLayout(1, s_layout))
        o = gl.zeros([BM, HEAD_DIM], gl.float32, o_layout)

        # step 0: S_0 alone
        mbarrier.wait(q_bar, q_phase)
        mbarrier.wait(k_ready.index(kv0 % STAGES), (kv0 // STAGES) & 1)
        mbarrier.wait(my_turn, (tc0 & 1) ^ first)
        s_tok = warpgroup_mma(q_s, k_bufs.index(kv0 % STAGES).reshape([BN, HEAD_DIM]).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        s = warpgroup_mma_wait(0, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(kv0 % STAGES), count=1)
        if _first_masked(n_tiles, row0, BN, CAUSAL) == 0:
            s = _mask(s, row0, 0, sk, CAUSAL)
        p16, m_i, l_i, alpha = _softmax(s, m_i, l_i, qk_scale, dtype, p_layout, o_layout)

        # D = 128: unmasked tiles, then the masked ones (a mask tested per tile compiles to selects on
        # every tile: 64 FSEL + 37 ISETP per thread and tile in SASS). D = 64: one loop testing the
        # mask per tile (the split loops or a constant mask spill there: 160 registers per thread)
        j_mask = gl.maximum(_first_masked(n_tiles, row0, BN, CAUSAL), 1)
        if HEAD_DIM > 64:
            for j in range(1, j_mask):
                o, p16, m_i, l_i, alpha = _step(j, kv0, tc0, q_s, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, my_turn,
                                                next_turn, s_zero, o, p16, m_i, l_i, alpha, row0, sk, qk_scale,
                                                first, STAGES, False, CAUSAL)
            for j in range(j_mask, n_tiles):
                o, p16, m_i, l_i, alpha = _step(j, kv0, tc0, q_s, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, my_turn,
                                                next_turn, s_zero, o, p16, m_i, l_i, alpha, row0, sk, qk_scale,
                                                first, STAGES, True, CAUSAL)
        else:
            for j in range(1, n_tiles):
                o, p16, m_i, l_i, alpha = _step(j, kv0, tc0, q_s, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, my_turn,
                                                next_turn, s_zero, o, p16, m_i, l_i, alpha, row0, sk, qk_scale,
                                                first, STAGES, _masked(j, n_tiles, row0, BN, CAUSAL), CAUSAL)
        O_IN_Q: gl.constexpr = _o_in_q(HEAD_DIM)
        if not O_IN_Q:
            mbarrier.arrive(q_empty, count=1)  # every S of this item is done: the producer may load the next item's q

        # the last P·V
        g = kv0 + n_tiles
        i_v = (g - 1) % STAGES
        mbarrier.wait(v_ready.index(i_v), ((g - 1) // STAGES) & 1)
        mbarrier.wait(my_turn, ((tc0 + n_tiles) & 1) ^ first)
        o = o * alpha[:, None]
        acc = warpgroup_mma(p16, v_bufs.index(i_v).reshape([BN, HEAD_DIM]), o, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        o = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(v_empty.index(i_v), count=1)

        # epilogue: o / l through o_s and a TMA store (clipped at the head's end), lse
        l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
        o = o * (1.0 / l_o)[:, None]
        tma.store_wait(0)  # the previous item's o has left o_s
        o_s.reshape([BM, HEAD_DIM]).store(o.to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [i_b, i_h, row0, 0], o_s)
        if O_IN_Q:  # the next item's q may load once o has left the slot
            tma.store_wait(0)
            mbarrier.arrive(q_empty, count=1)
        o_r = row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, s_layout))
        b_lse = (m_i + gl.log2(l_i)) * 0.6931471805599453
        gl.store(p_lse + i_b.to(gl.int64) * s_lb + i_h.to(gl.int64) * s_lh + o_r, b_lse, mask=o_r < sq)

    @gluon.jit
    def _producer(args, CAUSAL: gl.constexpr, PERSISTENT: gl.constexpr, DYNAMIC: gl.constexpr, WG: gl.constexpr):
        """One warp (same signature as ``_consumer``): for each work item in turn, q as soon as every
        consumer released the last (``q_empty``), then its K/V tiles through the ring."""
        (q_desc, k_desc, v_desc, o_desc, p_lse, s_lb, s_lh, q_bufs, o_bufs, k_bufs, v_bufs, q_bar, q_empty,
         k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, hq, n_big, n_small, n_items, n_grp, qk_scale,
         p_next, item_s) = args
        if DYNAMIC:  # items from a global counter, in order: the hardware scheduler's balance, persistent
            kv0 = 0
            it = 0
            w = gl.atomic_add(p_next, 1, sem="relaxed")
            _publish_item(item_s, w, q_empty, it)
            while w < n_items:
                kv0, it = _produce_item(args, w, kv0, it, CAUSAL)
                w = gl.atomic_add(p_next, 1, sem="relaxed")
                _publish_item(item_s, w, q_empty, it)
            mbarrier.arrive(q_bar, count=1)  # no item left: the consumers read w and stop
        elif PERSISTENT:
            kv0 = 0
            it = 0
            for r in range(gl.cdiv(n_items, gl.num_programs(0))):
                w = _round_item(r, CAUSAL)
                if w < n_items:
                    kv0, it = _produce_item(args, w, kv0, it, CAUSAL)
        else:
            _produce_item(args, gl.program_id(0), 0, 0, CAUSAL)

    @gluon.jit
    def _publish_item(item_s, w, q_empty, it):
        """Write the program's it-th item to item_s once every consumer is done with the last one's
        (q_empty's phase before it); the arrival on q_bar that follows (q's expect, or the end) makes
        it visible to them."""
        mbarrier.wait(q_empty, (it & 1) ^ 1)
        item_s.store(gl.full([1], w, gl.int32, _item_layout(gl.num_warps())))
        gl.thread_barrier()

    @gluon.jit
    def _produce_item(args, w, kv0, it, CAUSAL: gl.constexpr):
        """The producer's part of work item w, the program's it-th, whose K/V tiles start at the
        ring's kv0-th; returns the two counters after it."""
        (q_desc, k_desc, v_desc, o_desc, p_lse, s_lb, s_lh, q_bufs, o_bufs, k_bufs, v_bufs, q_bar, q_empty,
         k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, hq, n_big, n_small, n_items, n_grp, qk_scale,
         p_next, item_s) = args
        BM: gl.constexpr = q_desc.block_type.shape[2]
        BN: gl.constexpr = k_desc.block_type.shape[2]
        NUM_WG: gl.constexpr = q_bufs.type.shape[0]
        i_b, i_h, m0, m_end, n_tiles = _item(w, n_items, sq, sk, hq, n_big, n_small, n_grp, NUM_WG * BM, BN, CAUSAL)
        mbarrier.wait(q_empty, (it & 1) ^ 1)
        mbarrier.expect(q_bar, NUM_WG * q_desc.block_type.nbytes)
        for wg in gl.static_range(NUM_WG):
            tma.async_copy_global_to_shared(q_desc, [i_b, i_h, m0 + wg * BM, 0], q_bar, q_bufs.index(wg))
        stream_kv(k_desc, v_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, i_b, i_h // group, n_tiles, kv0)
        return kv0 + n_tiles, it + 1

    @gluon.jit
    def _attn_fwd_ws_kernel(
        q_desc, k_desc, v_desc, o_desc,  # TMA descriptors over (B, Hq, Sq, D), (B, Hkv, Sk, D) ×2, o like q
        p_lse,  # out: lse (B, Hq, Sq) float32, unit position stride
        p_next,  # int32 [1], zero at launch: the next item (DYNAMIC)
        s_lb, s_lh,  # lse strides (batch, head)
        sq, sk, group,  # lengths, Hq // Hkv
        hq, n_big, n_small, n_items,  # query heads; items per (batch, head) of NUM_WG · 64 rows (causal: row blocks) and of (NUM_WG − 1) · 64 rows (``plan``), their total
        n_grp,  # causal: (batch, head) pairs per group of the walk (``causal_groups``)
        qk_scale,  # softmax scale · log2 e
        HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr, NUM_WG: gl.constexpr,
        PERSISTENT: gl.constexpr,  # programs walk the items in rounds; else one program per item
        DYNAMIC: gl.constexpr,  # persistent programs take items from a global counter (p_next)
    ):
        dtype: gl.constexpr = q_desc.dtype
        q_bufs = gl.allocate_shared_memory(dtype, [NUM_WG] + q_desc.block_type.shape, q_desc.layout)
        if _o_in_q(HEAD_DIM):
            o_bufs = q_bufs
        else:  # o leaves through slots of its own while the next item's q loads
            o_bufs = gl.allocate_shared_memory(dtype, [NUM_WG] + q_desc.block_type.shape, q_desc.layout)
        k_bufs, v_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, turn = kv_ring(k_desc, v_desc, STAGES, NUM_WG)
        q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(q_empty, count=NUM_WG)
        item_s = gl.allocate_shared_memory(gl.int32, [1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        args = (q_desc, k_desc, v_desc, o_desc, p_lse, s_lb, s_lh, q_bufs, o_bufs, k_bufs, v_bufs, q_bar, q_empty,
                k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, hq, n_big, n_small, n_items, n_grp, qk_scale,
                p_next, item_s)
        if NUM_WG == 3:  # 192 rows (head dim 64 only), registers per thread (setmaxnreg) ~168 / 160 / 160 / 24
            gl.warp_specialize([(_consumer, (args, CAUSAL, PERSISTENT, DYNAMIC, 0)), (_consumer, (args, CAUSAL, PERSISTENT, DYNAMIC, 1)),
                                (_consumer, (args, CAUSAL, PERSISTENT, DYNAMIC, 2)), (_producer, (args, CAUSAL, PERSISTENT, DYNAMIC, 2))],
                               [4, 4, 1], [160, 160, 24])
        else:  # 128 rows, registers 240 / 240 / 24
            gl.warp_specialize([(_consumer, (args, CAUSAL, PERSISTENT, DYNAMIC, 0)), (_consumer, (args, CAUSAL, PERSISTENT, DYNAMIC, 1)),
                                (_producer, (args, CAUSAL, PERSISTENT, DYNAMIC, 1))], [4, 1], [240, 24])

    _FWD = LeanKernel(_attn_fwd_ws_kernel)
