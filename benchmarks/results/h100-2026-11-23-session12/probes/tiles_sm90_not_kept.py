"""The folded Gaussian product M·W on Hopper (sm_90), in Gluon, warp-specialised with ping-pong.

``tiles._gaussian_tiles_kernel`` runs the queries-are-keys FOLD job (the eigensolver's products and
the benchmark's M·V) at a time per key tile that matches its tensor-core time plus its exponential
time, as if the two never overlapped (notes/diffusion-tiles.md, sessions 7 and 12): Triton waits on
each wgmma, and the four programs an SM holds fall into step. This kernel is FlashAttention-3's
schedule for the same product:

- a program owns 64·NUM_WG query rows; NUM_WG consumer warpgroups of 64 rows share the key and
  value tiles, which a one-warp producer streams through a STAGES-deep ring with TMA (ready: the
  tile's bytes; empty: one arrival per consumer);
- a consumer's step j issues S_j = Q̃·K̃_jᵀ and the three products of tile j − 1's P·W (lo·hi, hi·lo,
  hi·hi from a zero accumulator, ``tiles._pv``'s accuracy argument) together, in its turn (an
  mbarrier per warpgroup, passed on after issuing), then computes tile j's exponentials and P split
  while they run; after they finish, one round-to-nearest add into the running accumulator;
- P = exp2(G·S) (the multiply skipped when G = 1, ``tiles._fold_scale``), split into float16 hi
  (mantissa mask) + lo, goes from registers to the wgmma A operand.

Operands are those of ``tiles._gaussian_launch`` with FOLD (same packing, same G); no key splits
(``tiles._gaussian_launch`` takes this kernel for launches with enough row blocks only).
"""

from __future__ import annotations

import torch

from .. import _host

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except ImportError:  # no Gluon: tiles.py's Triton kernel serves every device
    gluon = None

Tensor = torch.Tensor

ENABLED = True
"""False: every product runs tiles.py's Triton kernel (for measuring one against the other)."""
WG_M = 64  # rows per consumer warpgroup (one wgmma M)
NUM_WG = 2  # consumer warpgroups per program
BLOCK_N = 128  # keys per tile
STAGES = 3  # ring depth
MAXNREG = {3: 128, 2: 168}  # registers per thread at launch; the partitions then take 240 / 24 (2) or 160 / 24 (3)
MIN_ROWS = 32768
"""Fewest query points from which the Gluon kernel runs (below, the Triton kernel with its key splits)."""


def available(device: torch.device, n_q: int, block_v: int) -> bool:
    """Whether a FOLD product of ``n_q`` query points and ``block_v``-column value blocks runs here."""
    return (gluon is not None and ENABLED and device.type == "cuda" and n_q >= MIN_ROWS and block_v in (16, 32)
            and _host.capability(device) == (9, 0))


if gluon is not None:

    @gluon.jit
    def _pow2(top, TOP: gl.constexpr):
        """``tiles._pow2_factor``: 2^e with top · 2^−e in [2^TOP, 2^(TOP+1)), 1 where top is 0."""
        e = ((top.to(gl.int32, bitcast=True) >> 23) & 0xFF) - TOP
        return gl.where(top > 0, (gl.maximum(e, 1) << 23).to(gl.float32, bitcast=True), 1.0)

    @gluon.jit
    def _split(s, g, p_layout: gl.constexpr):
        """P = exp2(g · s) (g None: exp2(s)) as float16 hi (mantissa mask) + lo, in the A-operand layout."""
        if g is not None:
            s = s * g
        p = gl.exp2(s)
        pt = (p.to(gl.int32, bitcast=True) & -8192).to(gl.float32, bitcast=True)
        ph = gl.convert_layout(pt.to(gl.float16), p_layout)
        pl = gl.convert_layout((p - pt).to(gl.float16), p_layout)
        return ph, pl

    @gluon.jit
    def _issue_pw(ph, pl, wh, wl, t_zero):
        """Async lo·hi + hi·lo + hi·hi of one key tile into a fresh accumulator."""
        t = warpgroup_mma(pl, wh, t_zero, use_acc=False, is_async=True)
        t = warpgroup_mma(ph, wl, t, is_async=True)
        return warpgroup_mma(ph, wh, t, is_async=True)

    @gluon.jit
    def _consumer_loop(q_s, k_bufs, wh_bufs, wl_bufs, ready, empty, my_turn, next_turn, g, n_tiles,
                       first: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr):
        """All key tiles of one warpgroup (module docstring); ``g`` None: G = 1. Returns the accumulator."""
        BM: gl.constexpr = q_s.type.shape[0]
        STAGES: gl.constexpr = k_bufs.type.shape[0]
        BN: gl.constexpr = k_bufs.type.shape[1]
        BV: gl.constexpr = wh_bufs.type.shape[2]
        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        t_zero = gl.zeros([BM, BV], gl.float32, o_layout)
        acc = gl.zeros([BM, BV], gl.float32, o_layout)

        # step 0: S_0 alone
        mbarrier.wait(ready.index(0), 0)
        mbarrier.wait(my_turn, first)
        s_tok = warpgroup_mma(q_s, k_bufs.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        s = warpgroup_mma_wait(0, deps=(s_tok,))
        ph, pl = _split(s, g, p_layout)
        for j in range(1, n_tiles):
            i_k = j % STAGES
            i_w = (j - 1) % STAGES
            mbarrier.wait(ready.index(i_k), (j // STAGES) & 1)
            mbarrier.wait(my_turn, (j & 1) ^ first)
            s_tok = warpgroup_mma(q_s, k_bufs.index(i_k).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            t = _issue_pw(ph, pl, wh_bufs.index(i_w), wl_bufs.index(i_w), t_zero)
            mbarrier.arrive(next_turn, count=1)
            s = warpgroup_mma_wait(3, deps=(s_tok,))  # S_j done; tile j − 1's P·W may run on
            ph, pl = _split(s, g, p_layout)
            t = warpgroup_mma_wait(0, deps=(t,))
            mbarrier.arrive(empty.index(i_w), count=1)
            acc = acc + t
        # the last tile's P·W
        j = n_tiles
        i_w = (j - 1) % STAGES
        mbarrier.wait(my_turn, (j & 1) ^ first)
        t = _issue_pw(ph, pl, wh_bufs.index(i_w), wl_bufs.index(i_w), t_zero)
        mbarrier.arrive(next_turn, count=1)
        t = warpgroup_mma_wait(0, deps=(t,))
        mbarrier.arrive(empty.index(i_w), count=1)
        return acc + t

    @gluon.jit
    def _consumer(args, ROW_SCALE: gl.constexpr, WG: gl.constexpr):
        """Consumer warpgroup WG: rows m0 + 64·WG … + 63 of the program's block, value block i_v."""
        (q_desc, k_desc, wh_desc, wl_desc, p_out, p_rs, p_vtop, p_c, p_topk, q_bufs, k_bufs, wh_bufs, wl_bufs,
         q_bar, ready, empty, turn, n_q, n_k, m) = args
        BM: gl.constexpr = q_desc.block_type.shape[0]
        D: gl.constexpr = q_desc.block_type.shape[1]
        BN: gl.constexpr = k_desc.block_type.shape[0]
        BV: gl.constexpr = wh_desc.block_type.shape[1]
        NUM_WG: gl.constexpr = q_bufs.type.shape[0]
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BV, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        first: gl.constexpr = 1 if WG == 0 else 0  # warpgroup 0 opens every round of turns
        i_m, i_v = gl.program_id(0), gl.program_id(1)
        row0 = i_m * (NUM_WG * BM) + WG * BM
        n_tiles = gl.cdiv(n_k, BN)
        # G of the folded operands (tiles._fold_scale, from the keys' top and c)
        top = gl.load(p_topk)
        g = gl.maximum(_pow2(gl.load(p_c) * D * top * top, 13), 1.0)
        q_s = q_bufs.index(WG)
        mbarrier.wait(q_bar, 0)
        if g == 1.0:
            acc = _consumer_loop(q_s, k_bufs, wh_bufs, wl_bufs, ready, empty, turn.index(WG),
                                 turn.index((WG + 1) % NUM_WG), None, n_tiles, first, s_layout, o_layout, p_layout)
        else:
            acc = _consumer_loop(q_s, k_bufs, wh_bufs, wl_bufs, ready, empty, turn.index(WG),
                                 turn.index((WG + 1) % NUM_WG), g, n_tiles, first, s_layout, o_layout, p_layout)
        o_m = row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, o_layout))
        o_v = i_v * BV + gl.arange(0, BV, layout=gl.SliceLayout(0, o_layout))
        m_m = o_m < n_q
        m_v = o_v < m
        if ROW_SCALE:
            acc = acc * gl.expand_dims(gl.load(p_rs + o_m, mask=m_m, other=0.0), 1)
        acc = acc * gl.expand_dims(_pow2(gl.load(p_vtop + o_v, mask=m_v, other=0.0), 13), 0)
        p = p_out + gl.expand_dims(o_m.to(gl.int64), 1) * m + gl.expand_dims(o_v, 0)
        gl.store(p, acc, mask=gl.expand_dims(m_m, 1) & gl.expand_dims(m_v, 0))

    @gluon.jit
    def _producer(args, ROW_SCALE: gl.constexpr, WG: gl.constexpr):
        """One warp: the program's query tiles once, then key and value tiles through the ring."""
        (q_desc, k_desc, wh_desc, wl_desc, p_out, p_rs, p_vtop, p_c, p_topk, q_bufs, k_bufs, wh_bufs, wl_bufs,
         q_bar, ready, empty, turn, n_q, n_k, m) = args
        BM: gl.constexpr = q_desc.block_type.shape[0]
        BN: gl.constexpr = k_desc.block_type.shape[0]
        BV: gl.constexpr = wh_desc.block_type.shape[1]
        NUM_WG: gl.constexpr = q_bufs.type.shape[0]
        STAGES: gl.constexpr = k_bufs.type.shape[0]
        i_m, i_v = gl.program_id(0), gl.program_id(1)
        mbarrier.expect(q_bar, NUM_WG * q_desc.block_type.nbytes)
        for w in gl.static_range(NUM_WG):
            tma.async_copy_global_to_shared(q_desc, [i_m * (NUM_WG * BM) + w * BM, 0], q_bar, q_bufs.index(w))
        tile_bytes: gl.constexpr = k_desc.block_type.nbytes + 2 * wh_desc.block_type.nbytes
        for j in range(gl.cdiv(n_k, BN)):
            i_s = j % STAGES
            mbarrier.wait(empty.index(i_s), ((j // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(i_s), tile_bytes)
            tma.async_copy_global_to_shared(k_desc, [j * BN, 0], ready.index(i_s), k_bufs.index(i_s))
            tma.async_copy_global_to_shared(wh_desc, [j * BN, i_v * BV], ready.index(i_s), wh_bufs.index(i_s))
            tma.async_copy_global_to_shared(wl_desc, [j * BN, i_v * BV], ready.index(i_s), wl_bufs.index(i_s))

    @gluon.jit
    def _fold_matmat_ws_kernel(
        q_desc,            # [n_q_pad, D] float16: the folded query operand (tiles._pack_points, fold="query")
        k_desc,            # [n_k_pad, D] float16: the folded key operand
        wh_desc, wl_desc,  # [n_k_pad, ldw] float16: values (column scale folded in) times 2^-e, hi and lo parts
        p_out,             # [n_q, m] float32
        p_rs,              # [n_q] row scale (ROW_SCALE)
        p_vtop,            # [m] max |w| per column: W̃ = W · 2^-e
        p_c,               # [1] c = beta · log2(e)
        p_topk,            # [1] max |k − centre|: G of the folded operands
        n_q, n_k, m,
        ROW_SCALE: gl.constexpr, STAGES: gl.constexpr, NUM_WG: gl.constexpr,
    ):
        q_bufs = gl.allocate_shared_memory(gl.float16, [NUM_WG] + q_desc.block_type.shape, q_desc.layout)
        k_bufs = gl.allocate_shared_memory(gl.float16, [STAGES] + k_desc.block_type.shape, k_desc.layout)
        wh_bufs = gl.allocate_shared_memory(gl.float16, [STAGES] + wh_desc.block_type.shape, wh_desc.layout)
        wl_bufs = gl.allocate_shared_memory(gl.float16, [STAGES] + wl_desc.block_type.shape, wl_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turn = gl.allocate_shared_memory(gl.int64, [NUM_WG, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for w in gl.static_range(NUM_WG):
            mbarrier.init(turn.index(w), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=NUM_WG)
        args = (q_desc, k_desc, wh_desc, wl_desc, p_out, p_rs, p_vtop, p_c, p_topk, q_bufs, k_bufs, wh_bufs, wl_bufs,
                q_bar, ready, empty, turn, n_q, n_k, m)
        if NUM_WG == 3:
            gl.warp_specialize([(_consumer, (args, ROW_SCALE, 0)), (_consumer, (args, ROW_SCALE, 1)),
                                (_consumer, (args, ROW_SCALE, 2)), (_producer, (args, ROW_SCALE, 2))], [4, 4, 1], [160, 160, 24])
        else:
            gl.warp_specialize([(_consumer, (args, ROW_SCALE, 0)), (_consumer, (args, ROW_SCALE, 1)),
                                (_producer, (args, ROW_SCALE, 1))], [4, 1], [240, 24])


def fold_matmat(qh: Tensor, kh: Tensor, wh: Tensor, wl: Tensor, out: Tensor, row_scale: Tensor | None, vtop: Tensor,
                c: Tensor, topk: Tensor, n_q: int, n_k: int, m: int, block_v: int) -> None:
    """out (n_q, m) = diag(row_scale) · exp2(G · Q̃ K̃ᵀ) · W from the packed FOLD operands (``available``
    must hold)."""
    width = qh.shape[1]
    lay = lambda shape: gl.NVMMASharedLayout.get_default_for(shape, gl.float16)  # noqa: E731
    descs = (
        TensorDescriptor.from_tensor(qh, [WG_M, width], lay([WG_M, width])),
        TensorDescriptor.from_tensor(kh, [BLOCK_N, width], lay([BLOCK_N, width])),
        TensorDescriptor.from_tensor(wh, [BLOCK_N, block_v], lay([BLOCK_N, block_v])),
        TensorDescriptor.from_tensor(wl, [BLOCK_N, block_v], lay([BLOCK_N, block_v])),
    )
    grid = (_host.cdiv(n_q, WG_M * NUM_WG), wh.shape[1] // block_v)
    _fold_matmat_ws_kernel[grid](
        *descs, out, row_scale, vtop, c, topk, n_q, n_k, m,
        ROW_SCALE=row_scale is not None, STAGES=STAGES, NUM_WG=NUM_WG, num_warps=4, maxnreg=MAXNREG[NUM_WG],
    )
