"""flashmarkov.diffmax on a CUDA GPU: the compiled row kernels (rows in one block and streamed
rows up to 2^20, every dtype including bfloat16, float64 to 1e-10) and the fused attention
kernels against float64 references."""

from __future__ import annotations

import pytest
import torch

from flashmarkov.diffmax import diffmax_attention, diffmax_bisect, diffmax_bisect_ref
from flashmarkov.diffmax.op import diffmax_op

from ..conftest import GPU_DTYPES, assert_close
from .helpers import independent_diffmax
from .test_attention import ATTN_CASES, _check_attention
from .test_diffmax import ALPHAS, _check_row_op

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("shape,dim", [((3, 4, 1), -1), ((3, 7, 1000), -1), ((3, 2, 8192), -1), ((3, 2, 8193), -1), ((3, 1, 2**20), -1), ((3, 300, 37), 1), ((3, 4099, 2), 1)])
def test_gpu_rows(shape, dim, alpha, dtype, nan_alloc):
    _check_row_op(shape, dim, dtype, "cuda", ALPHAS[alpha])


@pytest.mark.parametrize("alpha", [0.001, 0.2, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("n", [100, 4096, 5000, 70000])
def test_gpu_float64_converges(n, alpha):
    z = 5 * torch.randn(16, n, dtype=torch.float64, device="cuda")
    p = diffmax_bisect(z, alpha)
    assert (p - independent_diffmax(z, alpha)).abs().max().item() <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_benchmark_shape(dtype):
    """1×8×4096×4096 scores (the benchmark's shape) against the float64 reference, 4096 rows
    at a time."""
    z = (3 * torch.randn(1, 8, 4096, 4096, device="cuda")).to(dtype)
    p = diffmax_bisect(z, 0.5)
    rows = p.view(-1, 4096)
    zr = z.view(-1, 4096)
    for start in range(0, rows.shape[0], 4096):
        ref = diffmax_bisect_ref(zr[start : start + 4096].double(), 0.5, n_iter=60)
        assert_close(rows[start : start + 4096], ref, dtype, f"rows {start}..")


def test_gpu_repeatable_and_compiled():
    z = torch.randn(64, 3000, device="cuda", requires_grad=True)
    a = torch.full((64, 1), 0.7, device="cuda", requires_grad=True)
    first = diffmax_bisect(z, a)
    assert torch.equal(first, diffmax_bisect(z, a))
    compiled = torch.compile(lambda x, al: diffmax_bisect(x, al), fullgraph=True)
    torch.testing.assert_close(compiled(z, a), first)
    torch.library.opcheck(diffmax_op, (z, a, 0.5, -1, 50, True))


@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("case", ATTN_CASES)
def test_gpu_attention_small(case, dtype, nan_alloc):
    _check_attention(dtype=dtype, device="cuda", **ATTN_CASES[case])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "shape,causal,window",
    [((1, 4, 2, 300, 513, 64, 64), True, (-1, -1)), ((2, 2, 2, 1000, 1000, 64, 64), False, (-1, -1)),
     ((1, 2, 1, 777, 777, 128, 128), True, (100, -1)), ((1, 2, 2, 257, 257, 40, 72), False, (-1, -1)),
     ((1, 2, 1, 333, 333, 64, 256), True, (-1, -1))],  # Dv > 128 >= D: the D = 64 tiles with a 256-wide accumulator
)
def test_gpu_attention_sizes(shape, causal, window, dtype, nan_alloc):
    _check_attention(shape, dtype, "cuda", causal=causal, window=window)


def test_gpu_attention_clustered_skips_tiles():
    stats = _check_attention((1, 2, 2, 1024, 1024, 64, 64), torch.bfloat16, "cuda", alpha=0.5, clustered=True)
    assert stats["tile_skip_fraction"] >= 0.45


def test_gpu_attention_benchmark_shape_runs():
    q, k, v = (torch.randn(1, 8, 4096, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    o, stats = diffmax_attention(q, k, v, 0.5, causal=True, return_stats=True)
    o.sum().backward()
    assert torch.isfinite(o).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert 0 <= stats["tile_skip_fraction"] <= 1


@pytest.mark.parametrize("causal", [False, True])
def test_gpu_attention_dkdv_two_programs(causal, nan_alloc, monkeypatch):
    """The dkdv kernel capped at 128 registers with 2 stages (AttnConfig.dkdv_maxnreg,
    dkdv_stages: more programs per SM, a few spilled registers), GQA and masked edge tiles."""
    from flashmarkov.diffmax import attention

    monkeypatch.setattr(attention, "pick_config", lambda d, itemsize: attention.AttnConfig(128, 64, 4, 3, 0, 4, 64, dkdv_maxnreg=128, dkdv_stages=2))
    _check_attention((1, 4, 2, 300, 513, 64, 64), torch.bfloat16, "cuda", causal=causal)
