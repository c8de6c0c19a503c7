"""flashmarkov.diffusion on a CUDA GPU (the compiled Triton kernels): acceptance 2 of issue 5
(N = 20 000, eigenvalues within 1e-6 relative of dense float64, subspace angles ≤ 1e-4), the
primitive and the operators against float64 references at sizes the CPU cannot afford, the
mixed-precision stages reaching float64 accuracy, and the estimator's CPU/GPU agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flashmarkov.diffusion import DiffusionMap, FlashDiffusion, SymmetricMarkov, asymmetric_operator

from ..conftest import GPU_DTYPES, TOLERANCE, rel_err
from . import dense

pytestmark = pytest.mark.gpu


def random_sphere(n: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, 3))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def dense_M(X: torch.Tensor, beta: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """M and d^½ in float64 on the GPU, from exact pairwise differences (row blocks)."""
    X = X.double()
    K = torch.cat([torch.exp(-beta * torch.cdist(X[i : i + 2048], X, compute_mode="donot_use_mm_for_euclid_dist").square())
                   for i in range(0, X.shape[0], 2048)])
    w = K.sum(1).pow(-alpha)
    K.mul_(w[:, None]).mul_(w[None, :])
    d = K.sum(1)
    K.div_(d.sqrt()[:, None]).div_(d.sqrt()[None, :])
    return K, d.sqrt()


def test_acceptance_2_n20000():
    """N = 20 000 random points on S², β = 20: the top 8 nontrivial eigenpairs (the l = 1 and
    l = 2 clusters) from DiffusionMap on the GPU against float64 eigh of the dense matrix."""
    n, beta, k = 20_000, 20.0, 8
    X = torch.tensor(random_sphere(n))
    dm = DiffusionMap(n_components=k, bandwidth=beta, tol=1e-6, device="cuda").fit(X)
    lam = dm.eigenvalues_.double()
    assert lam.is_cuda
    M, _ = dense_M(X.cuda(), beta, 1.0)
    evals, evecs = torch.linalg.eigh(M)
    del M
    ref_lam, ref_U = evals.flip(0)[: k + 1], evecs.flip(1)[:, : k + 1]
    assert ((lam - ref_lam).abs() / ref_lam).max().item() <= 1e-6
    # ψ √π = u: compare M's eigenvectors, per whole cluster (l = 1: 3 vectors; l ≤ 2: 8)
    U = dm.eigenvectors_.double() * dm.stationary_.double().sqrt()[:, None]
    for lo, hi in ((0, 1), (1, 4), (1, 9)):
        angle = dense.subspace_angle(U[:, lo:hi], ref_U[:, lo:hi])
        assert angle <= 1e-4, f"subspace angle {angle:.2e} for eigenvectors {lo}..{hi - 1}"
    assert dm.residuals_.max().item() <= 1e-6


def test_mixed_precision_reaches_float64():
    """float32 products then float64 products on the GPU: float64-accurate eigenvalues."""
    n, beta = 6000, 50.0
    X = dense.circle(n).cuda()
    op = SymmetricMarkov(X, beta, 1.0)
    res = op.eigsh(8, tol=1e-10)
    exact = dense.circle_eigenvalues(n, beta, 9)[1:].cuda()
    assert res.converged and (res.eigenvalues - exact).abs().max().item() <= 1e-10


@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_h", [False, True])
def test_flash_diffusion_gpu(dtype, alpha, with_h):
    gen = torch.Generator().manual_seed(1)
    K = torch.randn(3001, 7, generator=gen, dtype=torch.float64) + 2
    Q = torch.randn(1003, 7, generator=gen, dtype=torch.float64) + 2
    V = torch.randn(3001, 16, generator=gen, dtype=torch.float64)
    h = 0.5 + torch.rand(3001, generator=gen, dtype=torch.float64) if with_h else None
    ref = dense.flash_diffusion(Q, K, V, 0.3, alpha, h)
    args = [t.to("cuda", dtype) for t in (Q, K, V)]
    out = FlashDiffusion(*args, beta=0.3, alpha=alpha, h=None if h is None else h.to("cuda", dtype))
    assert out.dtype == dtype and out.is_cuda
    # half inputs are rounded before the float32 computation: compare with the rounded inputs
    if dtype in (torch.float16, torch.bfloat16):
        ref = dense.flash_diffusion(*(a.double().cpu() for a in args), 0.3, alpha, None if h is None else h.to(dtype).double())
    tol = max(TOLERANCE[dtype], TOLERANCE[torch.float32]) if dtype != torch.float64 else 1e-10
    assert rel_err(out.cpu(), ref) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_operator_products_gpu(dtype):
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(4099, 5, generator=gen, dtype=torch.float64) * 0.7 + 1
    sigma = 0.5 + torch.rand(4099, generator=gen, dtype=torch.float64)
    n = dense.normalise(X, 1.3, 0.5, sigma=sigma)
    op = SymmetricMarkov(X.to("cuda", dtype), 1.3, 0.5, sigma=sigma.to("cuda", dtype))
    V = torch.randn(4099, 16, generator=gen, dtype=torch.float64)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert rel_err(op.matmat(V.to("cuda", dtype)).cpu(), n["M"] @ V) <= tol
    assert rel_err(op.apply(V.to("cuda", dtype)).cpu(), n["P"] @ V) <= tol


def test_asymmetric_gpu():
    gen = torch.Generator().manual_seed(3)
    Q = torch.randn(2500, 3, generator=gen, dtype=torch.float64)
    K = Q + 0.05 * torch.randn(2500, 3, generator=gen, dtype=torch.float64)
    op = asymmetric_operator(Q.cuda(), K.cuda(), beta=2.0, alpha=0.5)
    w = dense.kernel(K, K, 2.0).sum(1).pow(-0.5)
    A = dense.kernel(Q, K, 2.0) * w[None, :]
    P = A / A.sum(1, keepdim=True)
    U, s, V = op.svds(5, tol=1e-10)
    assert (s.cpu() - torch.linalg.svdvals(P)[:5]).abs().max() <= 1e-8
    vals, _ = op.eigs(4)
    ref = np.linalg.eigvals(P.numpy())
    assert np.abs(vals - ref[np.argsort(-np.abs(ref))][:4]).max() <= 1e-8


@pytest.mark.parametrize("bandwidth", ["median", "knn", "bgh", "self-tuning"])
def test_dmap_gpu_matches_cpu(bandwidth):
    """The GPU fit (float32 products) agrees with the CPU float64 fit; Nyström reproduces it."""
    X = random_sphere(3000, seed=4) + 0.01 * np.random.default_rng(5).standard_normal((3000, 3))
    cpu = DiffusionMap(n_components=5, bandwidth=bandwidth, tol=1e-9, device="cpu", eigensolver="lobpcg").fit(X)
    gpu = DiffusionMap(n_components=5, bandwidth=bandwidth, tol=1e-5, device="cuda").fit(X)
    assert math.isclose(gpu.beta_, cpu.beta_, rel_tol=1e-4)
    assert np.abs(gpu.eigenvalues_ - cpu.eigenvalues_).max() <= 1e-5
    emb = gpu.embedding_
    assert np.abs(gpu.transform(X) - emb).max() <= 1e-3 * np.abs(emb).max()
    G = gpu.metric(rows=np.arange(100))
    assert G.shape == (100, 5, 5) and np.isfinite(G).all()


def test_dmap_torch_cuda_input_and_memory():
    """A CUDA tensor input stays on its device; a fit at N = 200 000 keeps memory O(N)."""
    X = torch.tensor(random_sphere(200_000, seed=6), device="cuda", dtype=torch.float32)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    dm = DiffusionMap(n_components=10, bandwidth=20.0, tol=1e-5).fit(X)
    peak = torch.cuda.max_memory_allocated() - base
    assert dm.embedding_.is_cuda and dm.embedding_.shape == (200_000, 10)
    assert peak <= 2**30, f"peak {peak / 2**20:.0f} MiB"
    assert dm.residuals_.max().item() <= 1e-5
