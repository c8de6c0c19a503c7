"""The folded Gaussian product M·W on Hopper (sm_90), in Gluon: what ``tiles._gaussian_tiles_kernel``
computes for the queries-are-keys FOLD job (the eigensolver's products and the benchmark's M·V),
with the next key tile's scores on the tensor cores while this tile's exponentials run.

Why a second kernel: Triton waits on every wgmma right after issuing it (``warp_group_dot_wait
{pendings = 0}``), so a program's q·k product, its exponentials and its P·W product run one after
the other; at d = 16 the 64-wide folded q·k product (4 k-steps) costs as much tensor time as the
exponentials cost MUFU time (Nsight Compute on the H100: tensor pipe 49 %, XU 56 %, issue 54 %:
notes/diffusion-tiles.md). Here the scores of key tile j + 1 are issued (async wgmma) before the
exponentials of tile j, and waited on after tile j's P·W.

Operands are those of ``tiles._launch`` with FOLD (same packing, same G, same splits); the
values' hi / lo parts are applied as lo·hi + hi·lo + hi·hi into a fresh tile, then one
round-to-nearest add into the running accumulator (``tiles._pv``'s accuracy argument).
"""

from __future__ import annotations

import torch

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    _jit = gluon.jit
except ImportError:  # no Gluon: tiles.py's Triton kernel serves every device
    gluon = gl = mbarrier = tma = warpgroup_mma = warpgroup_mma_wait = TensorDescriptor = None
    _jit = lambda fn: fn  # noqa: E731

Tensor = torch.Tensor

BLOCK_M, BLOCK_N, NUM_WARPS, STAGES = 128, 64, 8, 4


@_jit
def _pow2(top, TOP: gl.constexpr):
    """2^e (float32) with top · 2^−e in [2^TOP, 2^(TOP+1)) from top's exponent bits; 1 where top is 0
    (``tiles._pow2_factor``)."""
    e = ((top.to(gl.int32, bitcast=True) >> 23) & 0xFF) - TOP
    return gl.where(top > 0, (gl.maximum(e, 1) << 23).to(gl.float32, bitcast=True), 1.0)


@_jit
def _tile_pv(b_s, g, wh, wl, P_LAYOUT: gl.constexpr, O_LAYOUT: gl.constexpr, BM: gl.constexpr, BV: gl.constexpr):
    """Issue (async) P·W of one key tile: P = exp2(g · s) split into float16 hi + lo against the
    values' hi / lo tiles in shared memory, lo·hi + hi·lo + hi·hi from a zero accumulator."""
    b_p = gl.exp2(b_s * g)
    b_ph = b_p.to(gl.float16)
    b_pl = (b_p - b_ph.to(gl.float32)).to(gl.float16)
    b_ph = gl.convert_layout(b_ph, P_LAYOUT)
    b_pl = gl.convert_layout(b_pl, P_LAYOUT)
    b_t = warpgroup_mma(b_pl, wh, gl.zeros([BM, BV], gl.float32, O_LAYOUT), use_acc=False, is_async=True)
    b_t = warpgroup_mma(b_ph, wl, b_t, is_async=True)
    return warpgroup_mma(b_ph, wh, b_t, is_async=True)


@_jit
def _fold_matmat_kernel(
    q_desc,          # [n_q_pad, D] float16: the folded query operand (tiles._pack_points, fold="query")
    k_desc,          # [n_k_pad, D] float16: the folded key operand
    wh_desc, wl_desc,  # [n_k_pad, ldw] float16: values (column scale folded in) times 2^-e, hi and lo parts
    out_ptr,         # [splits, n_q, m] float32: key split i_s writes its partial product to out[i_s]
    rs_ptr,          # [n_q] row scale (ROW_SCALE)
    vtop_ptr,        # [m] max |w| per column: W̃ = W · 2^-e
    c_ptr,           # [1] c = beta · log2(e)
    topk_ptr,        # [1] max |k − centre|: G of the folded operands (tiles._fold_scale)
    n_q, n_k, m,
    keys_per_split,  # keys per program along grid axis 2 (a multiple of BLOCK_N)
    ROW_SCALE: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr,
):
    """out[i_s] = diag(rs) · exp2(G · Q̃ K̃ᵀ) · W for one (row block, value block, key split)
    program; K and W tiles stream through a STAGES-deep TMA ring."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    D: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    BV: gl.constexpr = wh_desc.block_type.shape[1]
    S_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BN, 16])
    O_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BV, 16])
    P_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_LAYOUT, k_width=2)
    i_m = gl.program_id(0)
    i_v = gl.program_id(1)
    i_s = gl.program_id(2)

    q_s = gl.allocate_shared_memory(gl.float16, [BM, D], q_desc.layout)
    k_s = gl.allocate_shared_memory(gl.float16, [STAGES, BN, D], k_desc.layout)
    wh_s = gl.allocate_shared_memory(gl.float16, [STAGES, BN, BV], wh_desc.layout)
    wl_s = gl.allocate_shared_memory(gl.float16, [STAGES, BN, BV], wl_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)
    mbarrier.init(q_bar, count=1)

    k_lo = i_s * keys_per_split
    n_t = gl.cdiv(gl.minimum(k_lo + keys_per_split, n_k) - k_lo, BN)
    tile_bytes: gl.constexpr = k_desc.block_type.nbytes + 2 * wh_desc.block_type.nbytes
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [i_m * BM, 0], q_bar, q_s)
    for i in gl.static_range(STAGES):
        live = i < n_t
        mbarrier.expect(bars.index(i), tile_bytes, pred=live)
        tma.async_copy_global_to_shared(k_desc, [k_lo + i * BN, 0], bars.index(i), k_s.index(i), pred=live)
        tma.async_copy_global_to_shared(wh_desc, [k_lo + i * BN, i_v * BV], bars.index(i), wh_s.index(i), pred=live)
        tma.async_copy_global_to_shared(wl_desc, [k_lo + i * BN, i_v * BV], bars.index(i), wl_s.index(i), pred=live)

    c = gl.load(c_ptr)
    top = gl.load(topk_ptr)
    g = _pow2(c * D * top * top, 13)  # G: the folded operands hold s / G
    b_zero = gl.zeros([BM, BN], gl.float32, S_LAYOUT)
    b_acc = gl.zeros([BM, BV], gl.float32, O_LAYOUT)

    mbarrier.wait(q_bar, 0)
    mbarrier.wait(bars.index(0), 0)
    b_s = warpgroup_mma(q_s, k_s.index(0).permute((1, 0)), b_zero, use_acc=False, is_async=True)
    b_s = warpgroup_mma_wait(num_outstanding=0, deps=(b_s,))
    for j in range(n_t - 1):
        st = j % STAGES
        nx = (j + 1) % STAGES
        # the next tile's scores first (async), then this tile's exponentials and P·W
        mbarrier.wait(bars.index(nx), ((j + 1) // STAGES) & 1)
        b_sn = warpgroup_mma(q_s, k_s.index(nx).permute((1, 0)), b_zero, use_acc=False, is_async=True)
        b_t = _tile_pv(b_s, g, wh_s.index(st), wl_s.index(st), P_LAYOUT, O_LAYOUT, BM, BV)
        b_sn, b_t = warpgroup_mma_wait(num_outstanding=0, deps=(b_sn, b_t))
        b_acc = b_acc + b_t
        b_s = b_sn
        # every warpgroup is done with stage st: refill it with tile j + STAGES
        gl.thread_barrier()
        live = j + STAGES < n_t
        row = k_lo + (j + STAGES) * BN
        mbarrier.expect(bars.index(st), tile_bytes, pred=live)
        tma.async_copy_global_to_shared(k_desc, [row, 0], bars.index(st), k_s.index(st), pred=live)
        tma.async_copy_global_to_shared(wh_desc, [row, i_v * BV], bars.index(st), wh_s.index(st), pred=live)
        tma.async_copy_global_to_shared(wl_desc, [row, i_v * BV], bars.index(st), wl_s.index(st), pred=live)
    st = (n_t - 1) % STAGES
    b_t = _tile_pv(b_s, g, wh_s.index(st), wl_s.index(st), P_LAYOUT, O_LAYOUT, BM, BV)
    b_t = warpgroup_mma_wait(num_outstanding=0, deps=(b_t,))
    b_acc = b_acc + b_t
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))
    mbarrier.invalidate(q_bar)

    o_m = i_m * BM + gl.arange(0, BM, layout=gl.SliceLayout(1, O_LAYOUT))
    o_v = i_v * BV + gl.arange(0, BV, layout=gl.SliceLayout(0, O_LAYOUT))
    m_m = o_m < n_q
    m_v = o_v < m
    if ROW_SCALE:
        b_acc = b_acc * gl.expand_dims(gl.load(rs_ptr + o_m, mask=m_m, other=0.0), 1)
    b_acc = b_acc * gl.expand_dims(_pow2(gl.load(vtop_ptr + o_v, mask=m_v, other=0.0), 13), 0)
    p_out = out_ptr + i_s * n_q * m + gl.expand_dims(o_m, 1) * m + gl.expand_dims(o_v, 0)
    gl.store(p_out, b_acc, mask=gl.expand_dims(m_m, 1) & gl.expand_dims(m_v, 0))


def available(device: torch.device) -> bool:
    """Gluon present and the device a Hopper GPU (sm_90)."""
    return gluon is not None and device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0)


def descriptors(qh: Tensor, kh: Tensor, wh: Tensor, wl: Tensor, block_v: int) -> tuple:
    """TMA descriptors of the packed operands for ``_fold_matmat_kernel``."""
    width = qh.shape[1]
    lay = lambda shape: gl.NVMMASharedLayout.get_default_for(shape, gl.float16)  # noqa: E731
    return (
        TensorDescriptor.from_tensor(qh, [BLOCK_M, width], lay([BLOCK_M, width])),
        TensorDescriptor.from_tensor(kh, [BLOCK_N, width], lay([BLOCK_N, width])),
        TensorDescriptor.from_tensor(wh, [BLOCK_N, block_v], lay([BLOCK_N, block_v])),
        TensorDescriptor.from_tensor(wl, [BLOCK_N, block_v], lay([BLOCK_N, block_v])),
    )
