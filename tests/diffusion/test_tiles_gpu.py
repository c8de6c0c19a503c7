"""flashmarkov.diffusion.tiles on the GPU: the compiled Triton kernels at larger sizes against the
float64 reference (computed on the GPU, chunked), the symmetric kernel against the plain one,
and half-precision input refused."""

from __future__ import annotations

import pytest
import torch

from flashmarkov.diffusion import reference, tiles

from ..conftest import DEVICE, GPU_DTYPES, TOLERANCE, assert_close, rel_err

pytestmark = pytest.mark.gpu
DTYPES = [torch.float32, torch.float64]


def data(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(n, d, generator=g, device=DEVICE, dtype=torch.float64)
    return (x - x.mean(0)).to(dtype)


def positive(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    return (0.5 + torch.rand(n, generator=g, device=DEVICE, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,m", [(20_000, 3, 16), (8191, 16, 11), (5000, 17, 1), (3001, 100, 70)])
def test_matmat_and_sym(n, d, m, dtype, nan_alloc):
    X, V = data(n, d, dtype, 0), data(n, m, dtype, 1)
    r = positive(n, dtype, 2)
    beta = 1.0 / (2 * d)
    expected = reference.gaussian_matmat_ref(X.double(), X.double(), V.double(), beta, row_scale=r.double(), col_scale=r.double())
    assert_close(tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r), expected, dtype, "gaussian_matmat")
    assert_close(tiles.gaussian_matmat_sym(X, V, beta, scale=r), expected, dtype, "gaussian_matmat_sym")
    sigma = positive(n, dtype, 3)
    expected = reference.gaussian_matmat_ref(
        X.double(), X.double(), V.double(), beta, sigma_q=sigma.double(), sigma_k=sigma.double()
    )
    assert_close(tiles.gaussian_matmat_sym(X, V, beta, sigma=sigma), expected, dtype, "sym with sigma")


@pytest.mark.parametrize("n,offset", [(65_536, 0.0), (20_000, 100.0)])
def test_float32_error_does_not_grow(n, offset):
    """float32 products to ~5e-7 whatever N and wherever the cloud sits: the tensor cores'
    float32 accumulation truncates, so summing all N keys inside the MMAs lost ~N·2^-25
    (2e-4 at N = 65 536 on the H200); each key tile now starts a fresh MMA accumulator. Points
    100 away from the origin are centred at the keys' mean before the norm expansion."""
    X = data(n, 3, torch.float64, 20) + offset
    X, V, r = X.float(), data(n, 16, torch.float32, 21), positive(n, torch.float32, 22)
    rows, beta = 2048, 1.0 / 6
    expected = reference.gaussian_matmat_ref(
        X[:rows].double(), X.double(), V.double(), beta, row_scale=r[:rows].double(), col_scale=r.double()
    )
    plain = tiles.gaussian_matmat(X[:rows], X, V, beta, row_scale=r[:rows], col_scale=r)
    sym = tiles.gaussian_matmat_sym(X, V, beta, scale=r)[:rows]
    for name, out in (("plain", plain), ("sym", sym)):
        err = rel_err(out, expected)
        assert err <= 5e-6, f"{name}: relative error {err:.2e} at N = {n}, offset {offset}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_is_deterministic(dtype):
    """Without atomics the plain product is bitwise reproducible (the symmetric one is not)."""
    X, V = data(9000, 5, dtype, 14), data(9000, 16, dtype, 15)
    first = tiles.gaussian_matmat(X, X, V, 0.2)
    assert torch.equal(first, tiles.gaussian_matmat(X, X, V, 0.2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nq,nk,d", [(10_000, 7001, 3), (999, 30_000, 16)])
def test_rowsum_and_softmax(nq, nk, d, dtype, nan_alloc):
    Q, K, V = data(nq, d, dtype, 4), data(nk, d, dtype, 5), data(nk, 16, dtype, 6)
    cs, bias = positive(nk, dtype, 7), data(nk, 1, dtype, 8).view(-1)
    Qd, Kd, Vd = Q.double(), K.double(), V.double()
    assert_close(
        tiles.gaussian_rowsum(Q, K, 0.3, col_scale=cs),
        reference.gaussian_rowsum_ref(Qd, Kd, 0.3, col_scale=cs.double()),
        dtype,
        "gaussian_rowsum",
    )
    for shift in (0.0, 20.0):
        out, lse = tiles.gaussian_softmax_apply(Q + shift, K, V, 0.3, log_bias=bias)
        expected, expected_lse = reference.gaussian_softmax_apply_ref(Qd + shift, Kd, Vd, 0.3, log_bias=bias.double())
        tol = 1 if shift == 0 else 50  # float32: the shift costs ~1e-7·‖q‖² in each distance
        assert torch.isfinite(out).all() and torch.isfinite(lse).all()
        assert (out.double() - expected).norm() <= tol * TOLERANCE[dtype] * expected.norm()
        assert (lse.double() - expected_lse).abs().max() <= tol * TOLERANCE[dtype] * expected_lse.abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 10, 64])
def test_knn(k, dtype):
    X = data(6000, 5, dtype, 9)
    dist, index = tiles.knn(X, X, k, exclude_self=True)
    expected_d, expected_i = reference.knn_ref(X.double(), X.double(), k, exclude_self=True)
    if dtype == torch.float64:
        assert_close(dist, expected_d, dtype, "knn distances")
        assert torch.equal(index, expected_i)
    else:  # float32 distances are off by ~1e-7·(‖q‖² + ‖k‖²): close neighbours may swap
        scale = 1e-5 * (X.double() ** 2).sum(1).max() * 2
        assert ((dist.double() - expected_d).abs() <= scale).all()
        assert (index != torch.arange(6000, device=DEVICE)[:, None]).all()
        assert (index.sort(1).values.diff(dim=1) > 0).all()
        found = reference.sq_dist(X.double(), X.double()).gather(1, index)
        assert ((found - expected_d).abs() <= scale).all()
    ties = torch.randint(0, 4, (3000, 2), device=DEVICE).to(dtype)
    dist, index = tiles.knn(ties, ties, k)
    expected_d, expected_i = reference.knn_ref(ties.double(), ties.double(), k)
    assert torch.equal(dist.double(), expected_d) and torch.equal(index, expected_i)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bgh_sums(dtype):
    X = data(20_000, 3, dtype, 10)
    eps = torch.logspace(-3, 2, 64, device=DEVICE, dtype=dtype)
    out = tiles.bgh_sums(X, eps)
    expected = reference.bgh_sums_ref(X.double(), eps.double())
    assert out.dtype == torch.float64
    # float32 distances carry ~1e-7·‖x‖² absolute error; at ε = 1e-3 that moves exp(−d2/ε) by ~1e-4
    assert_close(out, expected, dtype if dtype == torch.float64 else torch.float16, "bgh_sums")


@pytest.mark.parametrize("dtype", [d for d in GPU_DTYPES if d not in DTYPES])
def test_half_refused(dtype):
    X = data(100, 3, torch.float32, 11).to(dtype)
    with pytest.raises(TypeError, match="X has dtype"):
        tiles.gaussian_matmat_sym(X, X, 1.0)


def test_compile_and_opcheck_on_gpu():
    """The ops trace under torch.compile with the Triton kernels, and pass opcheck on CUDA."""
    X, V = data(2000, 3, torch.float32, 12), data(2000, 4, torch.float32, 13)

    def product(X, V):
        r = tiles.gaussian_rowsum(X, X, 0.5).rsqrt()
        return tiles.gaussian_matmat_sym(X, V, 0.5, scale=r), tiles.gaussian_matmat(X, X, V, 0.5, row_scale=r, col_scale=r)

    torch._dynamo.reset()
    got = torch.compile(product, fullgraph=True)(X, V)
    want = product(X, V)
    for g, w in zip(got, want):
        assert_close(g, w.double(), torch.float32, "compiled")
    torch.library.opcheck(
        tiles.gaussian_matmat_op, (X, X, V, 0.5, None, None, None, None), test_utils=("test_schema", "test_faketensor")
    )
