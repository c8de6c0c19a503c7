"""The Markov operators of flashmarkov.diffusion.operator against dense float64 matrices:
FlashDiffusion for α ∈ {0, ½, 1}, with and without h, Q = K and Q ≠ K; the symmetric operator's
normalisation, M, P and its Doob transform; the asymmetric operator's products, singular
triplets and Arnoldi eigenvalues; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flashmarkov.diffusion import FlashDiffusion, SymmetricMarkov, asymmetric_operator

from ..conftest import DEVICE, assert_close, rel_err
from . import dense

GEN = torch.Generator().manual_seed(5)


def points(n: int, d: int, dtype: torch.dtype = torch.float64, shift: float = 3.0) -> torch.Tensor:
    """Random points away from the origin (the operator must centre them itself)."""
    return (torch.randn(n, d, generator=GEN, dtype=torch.float64) + shift).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_h", [False, True])
@pytest.mark.parametrize("same", [True, False])
def test_flash_diffusion_dense(same, with_h, alpha, dtype):
    K = points(133, 5, dtype)
    Q = K if same else points(37, 5, dtype, shift=3.3)
    V = torch.randn(133, 3, generator=GEN, dtype=torch.float64).to(dtype)
    h = (0.5 + torch.rand(133, generator=GEN, dtype=torch.float64)).to(dtype) if with_h else None
    out = FlashDiffusion(Q, K, V, beta=0.4, alpha=alpha, h=h)
    ref = dense.flash_diffusion(Q, K, V, 0.4, alpha, h)
    assert out.dtype == dtype
    assert_close(out, ref, dtype, f"FlashDiffusion alpha={alpha} h={with_h} same={same}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flash_diffusion_triton_kernels(dtype, triton_backend):
    """The primitive through the Triton kernels (interpreted on CPU, compiled on a GPU), Q ≠ K with h."""
    K, Q = points(45, 3, dtype), points(17, 3, dtype, shift=3.5)
    V = torch.randn(45, 5, generator=GEN, dtype=torch.float64).to(dtype)
    h = (0.5 + torch.rand(45, generator=GEN, dtype=torch.float64)).to(dtype)
    out = FlashDiffusion(*(t.to(triton_backend) for t in (Q, K, V)), beta=0.7, alpha=0.5, h=h.to(triton_backend))
    assert_close(out.cpu(), dense.flash_diffusion(Q, K, V, 0.7, 0.5, h), dtype, "FlashDiffusion on Triton kernels")


def test_flash_diffusion_is_P_and_Ph():
    """Q = K gives P V exactly; with h, P^h V; P 1 = 1 and P^h 1 = 1."""
    X = points(90, 3)
    V = torch.randn(90, 2, generator=GEN, dtype=torch.float64)
    h = 0.2 + torch.rand(90, generator=GEN, dtype=torch.float64)
    for alpha in (0.0, 0.5, 1.0):
        n = dense.normalise(X, 0.7, alpha)
        assert rel_err(FlashDiffusion(X, X, V, 0.7, alpha), n["P"] @ V) < 1e-12
        nh = dense.normalise(X, 0.7, alpha, h=h)
        assert rel_err(FlashDiffusion(X, X, V, 0.7, alpha, h=h), nh["P"] @ V) < 1e-12
        ones = torch.ones(90, 1, dtype=torch.float64)
        assert (FlashDiffusion(X, X, ones, 0.7, alpha, h=h) - 1).abs().max() < 1e-13


def test_flash_diffusion_numpy_and_vector():
    K = points(60, 4).numpy()
    Q = points(7, 4).numpy()
    v = np.random.default_rng(0).standard_normal(60)
    out = FlashDiffusion(Q, K, v, beta=0.3, alpha=1.0)
    assert isinstance(out, np.ndarray) and out.shape == (7,)
    ref = dense.flash_diffusion(torch.from_numpy(Q), torch.from_numpy(K), torch.from_numpy(v)[:, None], 0.3, 1.0)[:, 0]
    assert np.abs(out - ref.numpy()).max() < 1e-12


def test_flash_diffusion_half_inputs():
    """float16 inputs compute in float32 and return float16."""
    K = points(80, 3, torch.float16)
    V = torch.randn(80, 2, generator=GEN).to(torch.float16)
    out = FlashDiffusion(K, K, V, beta=0.5, alpha=0.5)
    assert out.dtype == torch.float16
    assert_close(out, dense.flash_diffusion(K, K, V, 0.5, 0.5), torch.float16, "FlashDiffusion float16")


def test_flash_diffusion_far_queries():
    """Queries far from every key (every kernel value underflows) still get a convex average."""
    K = points(50, 2)
    Q = K[:3] + 1e3
    V = torch.randn(50, 2, generator=GEN, dtype=torch.float64)
    out = FlashDiffusion(Q, K, V, beta=5.0, alpha=0.5)
    assert torch.isfinite(out).all()
    assert (out <= V.max(0).values + 1e-12).all() and (out >= V.min(0).values - 1e-12).all()


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(beta=0.0), ValueError, "beta"),
        (dict(beta=-1.0), ValueError, "beta"),
        (dict(beta="x"), TypeError, "beta"),
        (dict(alpha=1.5), ValueError, "alpha"),
        (dict(alpha=-0.1), ValueError, "alpha"),
        (dict(h=-np.ones(20)), ValueError, "h must be > 0"),
        (dict(h=np.zeros(20)), ValueError, "h must be > 0"),
        (dict(h=np.ones(19)), ValueError, "h has 19"),
        (dict(Q=np.ones((4, 2))), ValueError, "features"),
        (dict(V=np.ones((19, 2))), ValueError, "V has 19 rows"),
        (dict(K=np.full((20, 3), np.nan)), ValueError, "K contains"),
        (dict(Q=np.array([[np.inf, 0, 0]])), ValueError, "Q contains"),
        (dict(V=np.ones((20, 2, 2))), ValueError, "V must be"),
        (dict(Q=np.ones(3)), ValueError, "Q must be 2-D"),
        (dict(K=[["a", "b", "c"]]), TypeError, "K must hold numbers"),
    ],
)
def test_flash_diffusion_bad_input(kwargs, err, match):
    args = dict(Q=np.ones((4, 3)), K=np.random.default_rng(1).standard_normal((20, 3)), V=np.ones((20, 2)), beta=1.0, alpha=0.5, h=None)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        FlashDiffusion(**args)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_sigma", [False, True])
@pytest.mark.parametrize("with_h", [False, True])
def test_symmetric_operator_dense(alpha, with_sigma, with_h):
    X = points(111, 3)
    sigma = (0.5 + torch.rand(111, generator=GEN, dtype=torch.float64)) if with_sigma else None
    h = (0.3 + torch.rand(111, generator=GEN, dtype=torch.float64)) if with_h else None
    op = SymmetricMarkov(X, 0.8, alpha, sigma=sigma, h=h)
    n = dense.normalise(X, 0.8, alpha, sigma, h)
    for name in ("q", "w", "d", "pi"):
        assert rel_err(getattr(op, name), n[name]) < 1e-12, name
    V = torch.randn(111, 4, generator=GEN, dtype=torch.float64)
    assert rel_err(op.matmat(V), n["M"] @ V) < 1e-12
    assert rel_err(op.apply(V), n["P"] @ V) < 1e-12
    rows = torch.tensor([3, 0, 110])
    assert rel_err(op.apply(V, rows=rows), (n["P"] @ V)[rows]) < 1e-12
    assert rel_err(op.dense(), n["M"]) < 1e-12
    # u_0 ∝ g is M's eigenvector with eigenvalue 1
    u0 = op.g / op.g.norm()
    assert (n["M"] @ u0 - u0).norm() < 1e-12


def test_symmetric_operator_float32_products():
    """Float32 products of a float64 operator agree with the dense matrix to float32 accuracy."""
    X = points(200, 3)
    op = SymmetricMarkov(X, 0.5, 1.0)
    V = torch.randn(200, 3, generator=GEN, dtype=torch.float64)
    out = op.matmat(V, torch.float32)
    assert out.dtype == torch.float32
    assert_close(out, dense.normalise(X, 0.5, 1.0)["M"] @ V, torch.float32, "M V in float32")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_sigma", [False, True])
def test_symmetric_operator_plain_product(with_sigma, dtype, triton_backend, monkeypatch):
    """operator.SYMMETRIC_PRODUCT = False: M·V by the plain kernel (every tile) agrees with the
    dense matrix as the symmetric kernel does (Triton kernels, interpreted on CPU, compiled on a GPU)."""
    from flashmarkov.diffusion import operator

    X = points(70, 3)
    sigma = (0.5 + torch.rand(70, generator=GEN, dtype=torch.float64)) if with_sigma else None
    dev = triton_backend
    op = SymmetricMarkov(X.to(dev, dtype), 0.8, 1.0, sigma=None if sigma is None else sigma.to(dev, dtype))
    V = torch.randn(70, 5, generator=GEN, dtype=torch.float64)
    expected = dense.normalise(X, 0.8, 1.0, sigma)["M"] @ V
    for symmetric in (True, False):
        monkeypatch.setattr(operator, "SYMMETRIC_PRODUCT", symmetric)
        assert_close(op.matmat(V.to(dev, dtype)).cpu(), expected, dtype, f"M V symmetric={symmetric}")


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_asymmetric_products(dtype, backend, monkeypatch):
    """P V and Pᵀ U against dense float64, twice each (the Triton path packs its points once, on the
    first product: ``tiles.PackedProduct``)."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", backend)
    device = DEVICE if backend == "triton" else "cpu"
    Q, K = points(70, 3, dtype), points(90, 3, dtype, shift=3.4)
    op = asymmetric_operator(Q.to(device), K.to(device), beta=0.6, alpha=0.5)
    w = dense.kernel(K, K, 0.6).sum(1).pow(-0.5)
    A = dense.kernel(Q, K, 0.6) * w[None, :]
    P = A / A.sum(1, keepdim=True)
    for _ in range(2):
        V, U = torch.randn(90, 3, generator=GEN, dtype=torch.float64), torch.randn(70, 2, generator=GEN, dtype=torch.float64)
        assert_close(op.matvec(V.to(device, dtype)).cpu(), P @ V, dtype, "P V")
        assert_close(op.rmatvec(U.to(device, dtype)).cpu(), P.T @ U, dtype, "P^T U")


def test_asymmetric_svds_and_eigs():
    Q, K = points(300, 2), points(300, 2, shift=3.2)
    op = asymmetric_operator(Q, K, beta=0.5, alpha=1.0)
    w = dense.kernel(K, K, 0.5).sum(1).pow(-1.0)
    A = dense.kernel(Q, K, 0.5) * w[None, :]
    P = A / A.sum(1, keepdim=True)
    U, s, V = op.svds(4, tol=1e-11)
    s_ref = torch.linalg.svdvals(P)[:4]
    assert (s - s_ref).abs().max() < 1e-9
    assert (P @ V - U * s[None, :]).norm(dim=0).max() < 1e-8
    assert (P.T @ U - V * s[None, :]).norm(dim=0).max() < 1e-8
    vals, vecs = op.eigs(3)
    ref = np.linalg.eigvals(P.numpy())
    ref = ref[np.argsort(-np.abs(ref))][:3]
    assert np.abs(vals - ref).max() < 1e-9
    assert abs(vals[0] - 1) < 1e-10  # P 1 = 1 and P is row-stochastic
    Pn = P.numpy()
    assert np.abs(Pn @ vecs - vecs * vals[None, :]).max() < 1e-8


def test_asymmetric_bad_input():
    with pytest.raises(ValueError, match="features"):
        asymmetric_operator(np.ones((3, 2)), np.ones((5, 3)))
    op = asymmetric_operator(points(10, 2), points(12, 2))
    with pytest.raises(ValueError, match="square"):
        op.eigs(2)
