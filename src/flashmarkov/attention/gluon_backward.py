"""Gluon backward kernels of attention for Hopper (sm_90): dK/dV and dQ, built like ``gluon_forward``.

The Triton backward (``backward.py``) runs dK/dV and dQ as two kernels; these replace them in the
Gluon forward's scope (``gluon_forward.eligible``) from ``MIN_WORK``, dK/dV at ``DKDV_HEAD_DIMS`` and
dQ at ``DQ_HEAD_DIMS`` (head dims by their ``gluon_forward.width``). Both are deterministic (no atomics). Each has a one-warp TMA producer and two
consumer warpgroups of 64 rows (240 registers) that take two ping-pong turns per tile.

dQ: a program owns 128 query rows of one (sequence, query head); q and dO are resident, K/V tiles
stream through the forward's ring (``kv_ring`` / ``stream_kv``). Per K tile: S_j = Q·K_jᵀ and
dP_j = dO·V_jᵀ in the first turn, then dS_j = P_j ∘ (dP_j − Δ) (P_j = exp2(S_j·scale·log2 e −
lse·log2 e), lse from the forward, Δ from ``backward``'s preprocess) while the other warpgroup's
products run, and dQ += dS_j·K_j in the second. (Issuing dQ += dS_{j-1}·K_{j-1} with S_j and dP_j,
as the forward overlaps its products, keeps S, dP, dQ and dS live at once: 224 registers at
D = 128, spilled.) dQ · scale leaves through the q slot with TMA.

dK/dV: a program owns 128 keys of one (sequence, key/value head); K and V are resident, (q, dO)
tiles of 64 rows of every query head of the GQA group stream through a ring. Per tile, transposed
as the Triton kernel: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ in the first turn, Pᵀ and dSᵀ, then dV += Pᵀ·dO and
dK += dSᵀ·Q in the second. Non-causal needs no mask (padding rows are zero-filled with lse and Δ
read as 0: they contribute nothing); under the causal mask the diagonal tiles run in their own
loop. dK · scale and dV leave through the K and V slots with TMA (clipped at the head's end).
At D = 256 the two warpgroups split columns instead of keys (``KV_PART``).
"""

from __future__ import annotations

import torch

from .. import _host
from .._launch import LeanKernel
from . import gluon_forward as gf

Tensor = torch.Tensor

NUM_WG = 2  # consumer warpgroups of 64 rows (queries for dQ, keys for dK/dV)
STAGES = {64: 3, 128: 2, 256: 2}  # dQ: K/V ring depth (shared memory at D = 128: q and dO 64 KB + 2·2·32 KB;
# D = 256: q and dO 128 KB + 2·2·16 KB)
DQ_BLOCK_N = {64: 128, 128: 128, 256: 32}  # dQ: keys per K/V tile (64 at D = 256 would need 256 KB)
KV_STAGES = {64: 3, 128: 3, 256: 2}  # dK/dV: (q, dO) ring depth (shared memory at D = 128: K, V 64 KB + 3·32 KB;
# D = 256: K, V 64 KB + 2·64 KB)
KV_PART = {64: 64, 128: 128, 256: 128}
"""dK/dV: columns per K, V, q and dO tile. Below the head dim (D = 256: width 128) the kernel splits columns instead of
keys between its two warpgroups: a program owns 64 keys, warpgroup 0 computes Sᵀ and warpgroup 1 dPᵀ over all
columns, they exchange dPᵀ − Δ, Pᵀ and dSᵀ through shared memory (``_kv_part_step``), and warpgroup w accumulates
columns w·128 … + 127 of dK and dV (a 64 × 256 float32 dK and dV per warpgroup would need 256 registers per
thread). Shared memory at D = 256: K, V 64 KB + 2·64 KB + 32 KB exchanged = 230 KB."""
DQ_HEAD_DIMS = (128, 256)
"""Head dims whose dQ runs here: at D = 64 the Triton dQ is faster (H100: 2×16×8192×64 1341 vs
1628 µs, 4×8×2048×64 93 vs 111); at D = 128 this one (2×16×8192×128 2173 vs 3058 µs, causal 1175
vs 1646, 1×32×16384×128 9317 vs 14391); at D = 256 (session 18, gluon-bwd-d256-ab-0094dfe.json, kernel
µs) 2×16×4096×256 1273 vs 1895, causal 738 vs 1060; 4×16×1024×256 186 vs 271."""
DKDV_HEAD_DIMS = (64, 128, 256)
"""Head dims whose dK/dV run here (H100, Gluon vs Triton: 2×16×8192×128 3381 vs 4114 µs, causal 1904
vs 2823; 2×16×8192×64 2216 vs 2465, causal 1263 vs 1528; 8×16×2048×64 650 vs 634, a wash). Since
session 16's lse/Δ loads the Gluon kernel is 3–9 % faster again (2×16×8192×64 2.17 ms, causal 1.13;
dkdv-lse-overlap-ab.json); 8×16×2048×64 not re-measured. D = 256 (column parts, session 18,
gluon-bwd-d256-ab-0094dfe.json; Sᵀ and dPᵀ then in both warpgroups): 2×16×4096×256 2680 vs 5105, causal
1476 vs 2488; 1×16×8192×256 5412 vs 10687; 4×16×1024×256 382 vs 673. With the exchange (``KV_PART``;
gluon-bwd-d256-exchange-1d94a50.json) 1888, causal 1006; 3926; 281."""
MIN_WORK = {(64, False): 1 << 36, (64, True): 1 << 34, (128, False): 1 << 34, (128, True): 1 << 33,
            (256, False): 1 << 30, (256, True): 1 << 30}
"""(head dim, causal) -> the B·Hq·Sq·Sk·D (halved under the causal mask) from which the backward
kernels run here: where they beat the Triton kernels by >= 3 % and the public fwd+bwd is bound by
the GPU rather than by the host. H100, session 17 (benchmarks/results/h100-2026-11-23-session17/):
pre + dK/dV + dQ launched directly (bwd-paths.json, µs, Triton → these): D = 64 4×8×2048 284 →
276, causal 210 → 184, 8×16×2048 1070 → 1053, causal 694 → 609; D = 128 16×8×512 198 → 168,
causal 177 → 137, 8×8×1024 307 → 249, causal 263 → 187, 4×8×2048 530 → 427, causal 425 → 294.
The public fwd+bwd, 5 interleaved rounds (public-ab-a9688fa.json, median µs, autograd's device
thread / calling thread): 4×8×2048×128 650 / 643 → 543 / 543, causal 749 / 499 → 703 / 481;
but 4×8×2048×64 456 / 411 → 577 / 444 and causal 398 / 270 → 492 / 398, 16×8×512×128 mixed:
below ~0.5 ms of kernels a call is host-bound and its rounds spread by ±50 % whichever kernels
run, so smaller problems keep the Triton kernels. The Gluon launches cost little host time
now (LeanKernel reuses their descriptor encodings: +7 µs per backward for dK/dV,
gluon-bwd-host-a9688fa.log); until session 11 each encoded its descriptors (~25–30 µs apiece).
D = 256 from 2^30, where both Gluon kernels were faster at the smallest sizes measured
(gluon-bwd-d256-small-0094dfe.json, kernel µs: 2×8×512×256 dK/dV 28 vs 46, dQ 25 vs 34; 1×8×1024×256 causal
50 vs 80 and 44 vs 62); below 2^30 not measured."""


def plan(q: Tensor, k: Tensor, v: Tensor, do: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, prob) -> tuple[bool, bool]:
    """(dK/dV, dQ): which of ``prob``'s (a ``forward.Problem``) backward kernels run here — the Gluon
    forward's scope (``gluon_forward.eligible``, checked once for all seven tensors), ``MIN_WORK``
    and the head-dim tables."""
    if not gf.eligible(prob, MIN_WORK, (q, k, v, do, dq, dk, dv)):
        return False, False
    w = gf.width(prob.head_dim)
    return w in DKDV_HEAD_DIMS, w in DQ_HEAD_DIMS


def attention_dkdv(q: Tensor, k: Tensor, v: Tensor, do: Tensor, dk: Tensor, dv: Tensor, lse: Tensor, delta: Tensor,
                   prob) -> None:
    """Launch the Gluon dK/dV kernel (``plan``'s first flag must hold): writes dk, dv (like k, v)."""
    b, hkv, sk, _ = k.shape
    d, m = gf.width(prob.head_dim), gf.WG_M
    part = KV_PART[d]
    keys = m * NUM_WG if part == d else m  # keys per program (``KV_PART``)
    _DKDV(
        (_host.cdiv(sk, keys), hkv, b), (q.dtype, d, prob.has_right),
        tuple(gf.descriptor(x, m, part) for x in (q, k, v, do, dk, dv)) + (lse, delta),
        (lse.stride(0), lse.stride(1), prob.max_sq, prob.hq // prob.hkv), (prob.scale * gf.LOG2E, prob.scale),
        lambda: dict(HEAD_DIM=d, CAUSAL=prob.has_right, STAGES=KV_STAGES[d], NUM_WG=NUM_WG, num_warps=4,
                     maxnreg=gf.MAXNREG[NUM_WG]),
    )


def attention_dq(q: Tensor, k: Tensor, v: Tensor, do: Tensor, dq: Tensor, lse: Tensor, delta: Tensor, prob) -> None:
    """Launch the Gluon dQ kernel (``plan``'s second flag must hold): writes dq (like q). ``lse`` and
    ``delta`` are (B, Hq, Sq) float32 with unit position stride and the same strides."""
    b, hq, sq, _ = q.shape
    d = gf.width(prob.head_dim)
    m, n = gf.WG_M, DQ_BLOCK_N[d]
    _DQ(
        (_host.cdiv(sq, m * NUM_WG), hq, b), (q.dtype, d, prob.has_right),
        (gf.descriptor(q, m), gf.descriptor(k, n), gf.descriptor(v, n), gf.descriptor(do, m), gf.descriptor(dq, m),
         lse, delta),
        (lse.stride(0), lse.stride(1), sq, prob.max_sk, prob.hq // prob.hkv), (prob.scale * gf.LOG2E, prob.scale),
        lambda: dict(HEAD_DIM=d, CAUSAL=prob.has_right, STAGES=STAGES[d], NUM_WG=NUM_WG, num_warps=4,
                     maxnreg=gf.MAXNREG[NUM_WG]),
    )


if gf.gluon is not None:
    gluon, gl = gf.gluon, gf.gl
    mbarrier, tma = gf.mbarrier, gf.tma
    warpgroup_mma, warpgroup_mma_wait, fence_async_shared = gf.warpgroup_mma, gf.warpgroup_mma_wait, gf.fence_async_shared

    @gluon.jit
    def _ds(s, dp, lse2, delta, qk_scale, row0, col0, sk, MASK, CAUSAL: gl.constexpr, dtype: gl.constexpr,
            ds_layout: gl.constexpr):
        """dS = P ∘ (dP − Δ) of one tile, P = exp2(S·c − lse2), in ``dtype`` and the A-operand layout
        of dS·K; MASK (a run-time flag) applies the tile's mask first."""
        if MASK:
            s = gf._mask(s, row0, col0, sk, CAUSAL)
        p = gl.exp2(s * qk_scale - lse2[:, None])
        ds = p * (dp - delta[:, None])
        return gl.convert_layout(ds.to(dtype), ds_layout)

    @gluon.jit
    def _step(j, q_s, do_s, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, my_turn, next_turn, s_zero,
              dq, lse2, delta, qk_scale, row0, sk, first: gl.constexpr, MASK, CAUSAL: gl.constexpr,
              a_layout: gl.constexpr):
        """Step j of a consumer, in two turns: S_j and dP_j, then (after dS_j) dQ += dS_j·K_j.
        Returns dq."""
        STAGES: gl.constexpr = k_bufs.type.shape[0]
        BN: gl.constexpr = k_bufs.type.shape[3]
        HEAD_DIM: gl.constexpr = k_bufs.type.shape[4]
        dtype: gl.constexpr = q_s.dtype
        i_k = j % STAGES
        mbarrier.wait(k_ready.index(i_k), (j // STAGES) & 1)
        mbarrier.wait(v_ready.index(i_k), (j // STAGES) & 1)
        mbarrier.wait(my_turn, first)
        s_tok = warpgroup_mma(q_s, k_bufs.index(i_k).reshape([BN, HEAD_DIM]).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
        dp_tok = warpgroup_mma(do_s, v_bufs.index(i_k).reshape([BN, HEAD_DIM]).permute((1, 0)), s_zero,
                               use_acc=False, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        s, dp = warpgroup_mma_wait(0, deps=(s_tok, dp_tok))
        mbarrier.arrive(v_empty.index(i_k), count=1)
        ds = _ds(s, dp, lse2, delta, qk_scale, row0, j * BN, sk, MASK, CAUSAL, dtype, a_layout)
        mbarrier.wait(my_turn, first ^ 1)
        dq_tok = warpgroup_mma(ds, k_bufs.index(i_k).reshape([BN, HEAD_DIM]), dq, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        dq = warpgroup_mma_wait(0, deps=(dq_tok,))
        mbarrier.arrive(k_empty.index(i_k), count=1)
        return dq

    @gluon.jit
    def _consumer(args, CAUSAL: gl.constexpr, WG: gl.constexpr):
        """Consumer warpgroup WG: dQ of rows m0 + WG·64 … + 63 (module docstring)."""
        (q_desc, k_desc, v_desc, do_desc, dq_desc, p_lse, p_delta, s_lb, s_lh, q_bufs, do_bufs, k_bufs, v_bufs,
         q_bar, k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, qk_scale, scale) = args
        HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
        BM: gl.constexpr = q_desc.block_type.shape[2]
        BN: gl.constexpr = k_desc.block_type.shape[2]
        NUM_WG: gl.constexpr = q_bufs.type.shape[0]
        dtype: gl.constexpr = q_desc.dtype
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        r_layout: gl.constexpr = gl.SliceLayout(1, s_layout)

        i_h, i_b = gl.program_id(1), gl.program_id(2)
        m0, n_tiles = gf._block(sk, NUM_WG * BM, BN, CAUSAL)
        row0 = m0 + WG * BM
        my_turn = turn.index(WG)
        next_turn = turn.index((WG + 1) % NUM_WG)
        first: gl.constexpr = 1 if WG == 0 else 0

        q_s = q_bufs.index(WG).reshape([BM, HEAD_DIM])
        do_s = do_bufs.index(WG).reshape([BM, HEAD_DIM])
        s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
        o_r = row0 + gl.arange(0, BM, layout=r_layout)
        m_r = o_r < sq
        l_off = i_b.to(gl.int64) * s_lb + i_h.to(gl.int64) * s_lh
        lse2 = gl.load(p_lse + l_off + o_r, mask=m_r, other=0.0) * 1.4426950408889634
        delta = gl.load(p_delta + l_off + o_r, mask=m_r, other=0.0)
        dq = gl.zeros([BM, HEAD_DIM], gl.float32, o_layout)

        mbarrier.wait(q_bar, 0)
        for j in range(0, n_tiles):
            dq = _step(j, q_s, do_s, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, my_turn, next_turn,
                       s_zero, dq, lse2, delta, qk_scale, row0, sk, first, gf._masked(j, n_tiles, row0, BN, CAUSAL),
                       CAUSAL, a_layout)

        q_bufs.index(WG).reshape([BM, HEAD_DIM]).store((dq * scale).to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(dq_desc, [i_b, i_h, row0, 0], q_bufs.index(WG))
        tma.store_wait(0)

    @gluon.jit
    def _producer(args, CAUSAL: gl.constexpr, WG: gl.constexpr):
        """One warp: q and dO once, then K/V tiles through the ring (same signature as ``_consumer``)."""
        (q_desc, k_desc, v_desc, do_desc, dq_desc, p_lse, p_delta, s_lb, s_lh, q_bufs, do_bufs, k_bufs, v_bufs,
         q_bar, k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, qk_scale, scale) = args
        BM: gl.constexpr = q_desc.block_type.shape[2]
        BN: gl.constexpr = k_desc.block_type.shape[2]
        NUM_WG: gl.constexpr = q_bufs.type.shape[0]
        i_h, i_b = gl.program_id(1), gl.program_id(2)
        m0, n_tiles = gf._block(sk, NUM_WG * BM, BN, CAUSAL)
        i_hk = i_h // group
        mbarrier.expect(q_bar, NUM_WG * (q_desc.block_type.nbytes + do_desc.block_type.nbytes))
        for w in gl.static_range(NUM_WG):
            tma.async_copy_global_to_shared(q_desc, [i_b, i_h, m0 + w * BM, 0], q_bar, q_bufs.index(w))
            tma.async_copy_global_to_shared(do_desc, [i_b, i_h, m0 + w * BM, 0], q_bar, do_bufs.index(w))
        gf.stream_kv(k_desc, v_desc, k_bufs, v_bufs, k_ready, k_empty, v_ready, v_empty, i_b, i_hk, n_tiles, 0)

    @gluon.jit
    def _attn_bwd_dq_ws_kernel(
        q_desc, k_desc, v_desc, do_desc, dq_desc,  # TMA descriptors: q, dO, dq (B, Hq, Sq, D); k, v (B, Hkv, Sk, D)
        p_lse, p_delta,  # (B, Hq, Sq) float32: the forward's lse (natural log), the preprocess's Δ
        s_lb, s_lh,  # their strides (batch, head), shared
        sq, sk, group, qk_scale, scale,  # lengths, Hq // Hkv, scale · log2 e, scale
        HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr, NUM_WG: gl.constexpr,
    ):
        dtype: gl.constexpr = q_desc.dtype
        q_bufs = gl.allocate_shared_memory(dtype, [NUM_WG] + q_desc.block_type.shape, q_desc.layout)
        do_bufs = gl.allocate_shared_memory(dtype, [NUM_WG] + do_desc.block_type.shape, do_desc.layout)
        k_bufs, v_bufs, q_bar, k_ready, k_empty, v_ready, v_empty, turn = gf.kv_ring(k_desc, v_desc, STAGES, NUM_WG)
        args = (q_desc, k_desc, v_desc, do_desc, dq_desc, p_lse, p_delta, s_lb, s_lh, q_bufs, do_bufs, k_bufs, v_bufs,
                q_bar, k_ready, k_empty, v_ready, v_empty, turn, sq, sk, group, qk_scale, scale)
        gl.warp_specialize([(_consumer, (args, CAUSAL, 0)), (_consumer, (args, CAUSAL, 1)),
                            (_producer, (args, CAUSAL, 1))], [4, 1], [240, 24])

    @gluon.jit
    def _kv_step(t, i_g, m0, k_s, v_s, q_bufs, do_bufs, q_ready, q_empty, my_turn, next_turn, st_zero,
                 dk, dv, p_lse, p_delta, l_off0, s_lh, sq, key0, qk_scale,
                 first: gl.constexpr, MASK: gl.constexpr, st_layout: gl.constexpr, a_layout: gl.constexpr):
        """Step t (ring position) of a dK/dV consumer: the query tile at row m0 of query head i_g of
        the group. First turn: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ; then Pᵀ, dSᵀ (causal mask when MASK);
        second turn: dV += Pᵀ·dO and dK += dSᵀ·Q. Returns (dk, dv)."""
        STAGES: gl.constexpr = q_bufs.type.shape[0]
        BQ: gl.constexpr = q_bufs.type.shape[3]
        HEAD_DIM: gl.constexpr = q_bufs.type.shape[4]
        dtype: gl.constexpr = k_s.dtype
        i_s = t % STAGES
        l_off = l_off0 + i_g.to(gl.int64) * s_lh
        # the tile's lse and Δ loaded once per thread, and moved to the scores' column layout while
        # the first turn's products run (in that layout each thread would address, mask and load 2 × 16
        # columns itself: 549 → 314 instructions per tile at D = 128)
        ld_layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
        o_l = m0 + gl.arange(0, BQ, layout=ld_layout)
        lse_l = gl.load(p_lse + l_off + o_l, mask=o_l < sq, other=0.0) * 1.4426950408889634
        delta_l = gl.load(p_delta + l_off + o_l, mask=o_l < sq, other=0.0)
        q_t = q_bufs.index(i_s).reshape([BQ, HEAD_DIM])
        do_t = do_bufs.index(i_s).reshape([BQ, HEAD_DIM])
        mbarrier.wait(q_ready.index(i_s), (t // STAGES) & 1)
        mbarrier.wait(my_turn, first)
        st_tok = warpgroup_mma(k_s, q_t.permute((1, 0)), st_zero, use_acc=False, is_async=True)
        dpt_tok = warpgroup_mma(v_s, do_t.permute((1, 0)), st_zero, use_acc=False, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        lse2 = gl.convert_layout(lse_l, gl.SliceLayout(0, st_layout))
        delta = gl.convert_layout(delta_l, gl.SliceLayout(0, st_layout))
        st, dpt = warpgroup_mma_wait(0, deps=(st_tok, dpt_tok))
        if MASK:  # causal: keys key0 … key0 + 63 against rows m0 … m0 + 63, a row sees keys ≤ it
            o_q = m0 + gl.arange(0, BQ, layout=gl.SliceLayout(0, st_layout))
            o_k = key0 + gl.arange(0, st.shape[0], layout=gl.SliceLayout(1, st_layout))
            st = gl.where(o_q[None, :] >= o_k[:, None], st, float("-inf"))
        pt = gl.exp2(st * qk_scale - lse2[None, :])
        dst = pt * (dpt - delta[None, :])
        pt16 = gl.convert_layout(pt.to(dtype), a_layout)
        dst16 = gl.convert_layout(dst.to(dtype), a_layout)
        mbarrier.wait(my_turn, first ^ 1)
        dv_tok = warpgroup_mma(pt16, do_t, dv, is_async=True)
        dk_tok = warpgroup_mma(dst16, q_t, dk, is_async=True)
        mbarrier.arrive(next_turn, count=1)
        dv, dk = warpgroup_mma_wait(0, deps=(dv_tok, dk_tok))
        mbarrier.arrive(q_empty.index(i_s), count=1)
        return dk, dv

    @gluon.jit
    def _kv_part_step(t, i_g, m0, k_bufs, v_bufs, q_bufs, do_bufs, q_ready, q_empty, dp_s, p_s, ds_s, x_bar, st_zero,
                      dk, dv, p_lse, p_delta, l_off0, s_lh, sq, key0, qk_scale,
                      MASK: gl.constexpr, st_layout: gl.constexpr, a_layout: gl.constexpr, WG: gl.constexpr):
        """Step t of a dK/dV consumer with column parts (``KV_PART``): warpgroup 0
        computes Sᵀ = K·Qᵀ and Pᵀ, warpgroup 1 dPᵀ = V·dOᵀ and passes dPᵀ − Δ (float32, ``dp_s``) to it;
        warpgroup 0 forms dSᵀ = Pᵀ ∘ (dPᵀ − Δ) and passes Pᵀ and dSᵀ (``p_s``, ``ds_s``) back; each then
        takes dV += Pᵀ·dO and dK += dSᵀ·Q on its column part, from registers (0) or shared memory (1).
        Each product is issued once; the four roundings are those of ``_kv_step`` (Pᵀ and dSᵀ in float32,
        then rounded once). (Both warpgroups computing both Sᵀ and dPᵀ, session 18: 2.68 ms against 1.89
        at 2×16×4096×256.) No turns: the exchange orders the warpgroups.
        ``x_bar``: dPᵀ ready, dPᵀ read, Pᵀ/dSᵀ ready, Pᵀ/dSᵀ read (one arrival each). Returns (dk, dv)."""
        STAGES: gl.constexpr = q_bufs.type.shape[0] // 2
        BQ: gl.constexpr = q_bufs.type.shape[3]
        PART: gl.constexpr = q_bufs.type.shape[4]
        BK: gl.constexpr = k_bufs.type.shape[3]
        dtype: gl.constexpr = k_bufs.dtype
        i_s = t % STAGES
        ph = t & 1
        l_off = l_off0 + i_g.to(gl.int64) * s_lh
        ld_layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
        o_l = m0 + gl.arange(0, BQ, layout=ld_layout)
        if WG == 0:
            r_l = gl.load(p_lse + l_off + o_l, mask=o_l < sq, other=0.0) * 1.4426950408889634
            a_bufs = k_bufs
            b_bufs = q_bufs
        else:
            r_l = gl.load(p_delta + l_off + o_l, mask=o_l < sq, other=0.0)
            a_bufs = v_bufs
            b_bufs = do_bufs
        mbarrier.wait(q_ready.index(i_s), (t // STAGES) & 1)
        tok = st_zero
        for p in gl.static_range(2):  # Sᵀ (warpgroup 0) or dPᵀ (1) over both column parts
            tok = warpgroup_mma(a_bufs.index(p).reshape([BK, PART]), b_bufs.index(i_s * 2 + p).reshape([BQ, PART]).permute((1, 0)),
                                tok, use_acc=p > 0, is_async=True)
        r = gl.convert_layout(r_l, gl.SliceLayout(0, st_layout))
        x = warpgroup_mma_wait(0, deps=(tok,))
        q_t = q_bufs.index(i_s * 2 + WG).reshape([BQ, PART])
        do_t = do_bufs.index(i_s * 2 + WG).reshape([BQ, PART])
        if WG == 0:
            if MASK:  # causal: keys key0 … key0 + 63 against rows m0 … m0 + 63, a row sees keys ≤ it
                o_q = m0 + gl.arange(0, BQ, layout=gl.SliceLayout(0, st_layout))
                o_k = key0 + gl.arange(0, BK, layout=gl.SliceLayout(1, st_layout))
                x = gl.where(o_q[None, :] >= o_k[:, None], x, float("-inf"))
            pt = gl.exp2(x * qk_scale - r[None, :])
            mbarrier.wait(x_bar.index(0), ph)
            dpt = dp_s.load(st_layout)
            gl.thread_barrier()
            mbarrier.arrive(x_bar.index(1), count=1)
            pt16 = pt.to(dtype)
            dst16 = (pt * dpt).to(dtype)
            mbarrier.wait(x_bar.index(3), ph ^ 1)
            p_s.store(pt16)
            ds_s.store(dst16)
            fence_async_shared()
            gl.thread_barrier()
            mbarrier.arrive(x_bar.index(2), count=1)
            dv_tok = warpgroup_mma(gl.convert_layout(pt16, a_layout), do_t, dv, is_async=True)
            dk_tok = warpgroup_mma(gl.convert_layout(dst16, a_layout), q_t, dk, is_async=True)
            dv, dk = warpgroup_mma_wait(0, deps=(dv_tok, dk_tok))
        else:
            mbarrier.wait(x_bar.index(1), ph ^ 1)
            dp_s.store(x - r[None, :])
            gl.thread_barrier()
            mbarrier.arrive(x_bar.index(0), count=1)
            mbarrier.wait(x_bar.index(2), ph)
            dv_tok = warpgroup_mma(p_s, do_t, dv, is_async=True)
            dk_tok = warpgroup_mma(ds_s, q_t, dk, is_async=True)
            dv, dk = warpgroup_mma_wait(0, deps=(dv_tok, dk_tok))
            mbarrier.arrive(x_bar.index(3), count=1)
        mbarrier.arrive(q_empty.index(i_s), count=1)
        return dk, dv

    @gluon.jit
    def _kv_range(sq, BQ: gl.constexpr, BK: gl.constexpr, CAUSAL: gl.constexpr):
        """(first key of the program, first query tile, query tiles per head) that see its keys."""
        n0 = gl.program_id(0) * BK
        q0 = 0
        if CAUSAL:
            q0 = n0 // BQ  # rows ≥ the first key (Sq = Sk)
        return n0, q0, gl.cdiv(sq, BQ) - q0

    @gluon.jit
    def _kv_consumer(args, CAUSAL: gl.constexpr, WG: gl.constexpr, PARTS: gl.constexpr):
        """dK/dV consumer warpgroup WG: keys n0 + WG·64 … + 63 of the program's block (PARTS = 1), or
        column part WG of the block's 64 keys (PARTS > 1)."""
        (q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, p_lse, p_delta, s_lb, s_lh, k_bufs, v_bufs, q_bufs,
         do_bufs, kv_bar, q_ready, q_empty, turn, done, sq, group, qk_scale, scale, dp_s, p_s, ds_s, x_bar) = args
        BK: gl.constexpr = k_desc.block_type.shape[2]  # 64 keys per warpgroup
        BQ: gl.constexpr = q_desc.block_type.shape[2]
        PART: gl.constexpr = k_desc.block_type.shape[3]
        NUM_WG: gl.constexpr = k_bufs.type.shape[0]
        dtype: gl.constexpr = k_desc.dtype
        st_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BQ, 16])
        d_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, PART, 16])
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=d_layout, k_width=2)
        i_hk, i_b = gl.program_id(1), gl.program_id(2)
        KEYS: gl.constexpr = BK * NUM_WG if PARTS == 1 else BK  # keys per program
        n0, q0_tile, n_q = _kv_range(sq, BQ, KEYS, CAUSAL)
        key0 = n0 + WG * BK if PARTS == 1 else n0
        my_turn = turn.index(WG)
        next_turn = turn.index((WG + 1) % NUM_WG)
        first: gl.constexpr = 1 if WG == 0 else 0
        st_zero = gl.zeros([BK, BQ], gl.float32, st_layout)
        k_s = k_bufs.index(WG).reshape([BK, PART])  # the warpgroup's own keys (PARTS = 1)
        v_s = v_bufs.index(WG).reshape([BK, PART])
        dk = gl.zeros([BK, PART], gl.float32, d_layout)
        dv = gl.zeros([BK, PART], gl.float32, d_layout)
        l_off0 = i_b.to(gl.int64) * s_lb + (i_hk * group).to(gl.int64) * s_lh
        mbarrier.wait(kv_bar, 0)
        # per query head of the group: the tiles on the causal diagonal (masked), then the rest
        n_m = 0
        if CAUSAL:
            n_m = gl.minimum(gl.cdiv(key0 + BK - 1 - q0_tile * BQ, BQ), n_q)
        for i_g in range(group):
            t0 = i_g * n_q
            if PARTS > 1:
                for j in range(n_m):
                    dk, dv = _kv_part_step(t0 + j, i_g, (q0_tile + j) * BQ, k_bufs, v_bufs, q_bufs, do_bufs, q_ready,
                                           q_empty, dp_s, p_s, ds_s, x_bar, st_zero, dk, dv, p_lse, p_delta, l_off0,
                                           s_lh, sq, key0, qk_scale, True, st_layout, a_layout, WG)
                for j in range(n_m, n_q):
                    dk, dv = _kv_part_step(t0 + j, i_g, (q0_tile + j) * BQ, k_bufs, v_bufs, q_bufs, do_bufs, q_ready,
                                           q_empty, dp_s, p_s, ds_s, x_bar, st_zero, dk, dv, p_lse, p_delta, l_off0,
                                           s_lh, sq, key0, qk_scale, False, st_layout, a_layout, WG)
            else:
                for j in range(n_m):
                    dk, dv = _kv_step(t0 + j, i_g, (q0_tile + j) * BQ, k_s, v_s, q_bufs, do_bufs, q_ready, q_empty,
                                      my_turn, next_turn, st_zero, dk, dv, p_lse, p_delta, l_off0, s_lh, sq, key0,
                                      qk_scale, first, True, st_layout, a_layout)
                for j in range(n_m, n_q):
                    dk, dv = _kv_step(t0 + j, i_g, (q0_tile + j) * BQ, k_s, v_s, q_bufs, do_bufs, q_ready, q_empty,
                                      my_turn, next_turn, st_zero, dk, dv, p_lse, p_delta, l_off0, s_lh, sq, key0,
                                      qk_scale, first, False, st_layout, a_layout)
        # dK·scale and dV through the K and V slots, TMA stores clipped at the head's end; with column
        # parts every warpgroup reads every slot, so all finish their products first
        if PARTS > 1:
            mbarrier.arrive(done, count=1)
            mbarrier.wait(done, 0)
        k_bufs.index(WG).reshape([BK, PART]).store((dk * scale).to(dtype))
        v_bufs.index(WG).reshape([BK, PART]).store(dv.to(dtype))
        fence_async_shared()
        col = WG * PART if PARTS > 1 else 0
        tma.async_copy_shared_to_global(dk_desc, [i_b, i_hk, key0, col], k_bufs.index(WG))
        tma.async_copy_shared_to_global(dv_desc, [i_b, i_hk, key0, col], v_bufs.index(WG))
        tma.store_wait(0)

    @gluon.jit
    def _kv_producer(args, CAUSAL: gl.constexpr, WG: gl.constexpr, PARTS: gl.constexpr):
        """One warp: the program's K and V once, then (q, dO) tiles of every query head of the group
        through the ring (same signature as ``_kv_consumer``)."""
        (q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, p_lse, p_delta, s_lb, s_lh, k_bufs, v_bufs, q_bufs,
         do_bufs, kv_bar, q_ready, q_empty, turn, done, sq, group, qk_scale, scale, dp_s, p_s, ds_s, x_bar) = args
        BK: gl.constexpr = k_desc.block_type.shape[2]
        BQ: gl.constexpr = q_desc.block_type.shape[2]
        PART: gl.constexpr = k_desc.block_type.shape[3]
        NUM_WG: gl.constexpr = k_bufs.type.shape[0]
        STAGES: gl.constexpr = q_bufs.type.shape[0] // PARTS
        i_hk, i_b = gl.program_id(1), gl.program_id(2)
        KEYS: gl.constexpr = BK * NUM_WG if PARTS == 1 else BK  # keys per program
        n0, q0_tile, n_q = _kv_range(sq, BQ, KEYS, CAUSAL)
        mbarrier.expect(kv_bar, NUM_WG * (k_desc.block_type.nbytes + v_desc.block_type.nbytes))
        for w in gl.static_range(NUM_WG):  # slot w: the keys of warpgroup w, or column part w
            row = n0 + w * BK if PARTS == 1 else n0
            col = w * PART if PARTS > 1 else 0
            tma.async_copy_global_to_shared(k_desc, [i_b, i_hk, row, col], kv_bar, k_bufs.index(w))
            tma.async_copy_global_to_shared(v_desc, [i_b, i_hk, row, col], kv_bar, v_bufs.index(w))
        for t in range(group * n_q):
            i_s = t % STAGES
            i_h = i_hk * group + t // n_q
            m0 = (q0_tile + t % n_q) * BQ
            mbarrier.wait(q_empty.index(i_s), ((t // STAGES) & 1) ^ 1)
            mbarrier.expect(q_ready.index(i_s), PARTS * (q_desc.block_type.nbytes + do_desc.block_type.nbytes))
            for p in gl.static_range(PARTS):
                slot = i_s * PARTS + p
                tma.async_copy_global_to_shared(q_desc, [i_b, i_h, m0, p * PART], q_ready.index(i_s), q_bufs.index(slot))
                tma.async_copy_global_to_shared(do_desc, [i_b, i_h, m0, p * PART], q_ready.index(i_s), do_bufs.index(slot))

    @gluon.jit
    def _attn_bwd_dkdv_ws_kernel(
        q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc,  # TMA descriptors: q, dO (B, Hq, Sq, D); k, v, dk, dv (B, Hkv, Sk, D)
        p_lse, p_delta,  # (B, Hq, Sq) float32: the forward's lse (natural log), the preprocess's Δ
        s_lb, s_lh,  # their strides (batch, head), shared
        sq, group, qk_scale, scale,  # query length, Hq // Hkv, scale · log2 e, scale
        HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr, NUM_WG: gl.constexpr,
    ):
        dtype: gl.constexpr = q_desc.dtype
        PARTS: gl.constexpr = HEAD_DIM // q_desc.block_type.shape[3]  # column parts of a row (1, or NUM_WG)
        k_bufs = gl.allocate_shared_memory(dtype, [NUM_WG] + k_desc.block_type.shape, k_desc.layout)
        v_bufs = gl.allocate_shared_memory(dtype, [NUM_WG] + v_desc.block_type.shape, v_desc.layout)
        q_bufs = gl.allocate_shared_memory(dtype, [STAGES * PARTS] + q_desc.block_type.shape, q_desc.layout)
        do_bufs = gl.allocate_shared_memory(dtype, [STAGES * PARTS] + do_desc.block_type.shape, do_desc.layout)
        kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        q_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turn = gl.allocate_shared_memory(gl.int64, [NUM_WG, 1], mbarrier.MBarrierLayout())
        done = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(kv_bar, count=1)
        mbarrier.init(done, count=NUM_WG)
        for w in gl.static_range(NUM_WG):
            mbarrier.init(turn.index(w), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(q_ready.index(i), count=1)
            mbarrier.init(q_empty.index(i), count=NUM_WG)
        BK: gl.constexpr = k_desc.block_type.shape[2]
        BQ: gl.constexpr = q_desc.block_type.shape[2]
        if PARTS > 1:  # dPᵀ − Δ (float32), Pᵀ and dSᵀ between the warpgroups, and their four barriers (``_kv_part_step``)
            dp_s = gl.allocate_shared_memory(gl.float32, [BK, BQ], gl.NVMMASharedLayout.get_default_for([BK, BQ], gl.float32))
            x_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BK, BQ], dtype)
            p_s = gl.allocate_shared_memory(dtype, [BK, BQ], x_layout)
            ds_s = gl.allocate_shared_memory(dtype, [BK, BQ], x_layout)
            x_bar = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
            for i in gl.static_range(4):
                mbarrier.init(x_bar.index(i), count=1)
        else:
            dp_s = done
            p_s = done
            ds_s = done
            x_bar = done
        args = (q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, p_lse, p_delta, s_lb, s_lh, k_bufs, v_bufs, q_bufs,
                do_bufs, kv_bar, q_ready, q_empty, turn, done, sq, group, qk_scale, scale, dp_s, p_s, ds_s, x_bar)
        gl.warp_specialize([(_kv_consumer, (args, CAUSAL, 0, PARTS)), (_kv_consumer, (args, CAUSAL, 1, PARTS)),
                            (_kv_producer, (args, CAUSAL, 1, PARTS))], [4, 1], [240, 24])

    _DQ = LeanKernel(_attn_bwd_dq_ws_kernel)
    _DKDV = LeanKernel(_attn_bwd_dkdv_ws_kernel)
