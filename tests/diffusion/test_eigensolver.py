"""The block eigensolver on operators with a known spectrum: accuracy against the exact
eigenpairs, exact deflation of a known eigenvector, the precision stages, clusters and
multiplicities, the small-n dense fallback, and an honest ``converged`` flag."""

from __future__ import annotations

import pytest
import torch

from flashmarkov.diffusion import Stage, block_eigsh, dense_eigsh

from . import dense


def operator(n: int, lam: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense symmetric matrix Q diag(lam) Qᵀ with a random orthogonal Q; returns (A, Q)."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (Q * lam[None, :]) @ Q.T, Q


def spectrum(n: int, gap: float = 0.02) -> torch.Tensor:
    """Descending eigenvalues in [0, 1]: 1, then a geometric decay with a pair and a triple."""
    lam = torch.cat([torch.tensor([1.0, 0.97, 0.97, 0.95, 0.9, 0.9, 0.9, 0.85]), torch.linspace(0.85 - gap, 0.0, n - 8)])
    return lam.double()


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("deflate", [False, True])
def test_block_eigsh_known_spectrum(k, deflate):
    n = 400
    lam = spectrum(n)
    A, Q = operator(n, lam)
    res = block_eigsh(lambda V: A @ V, n, k, tol=1e-10, deflate=Q[:, 0] if deflate else None)
    expect = lam[1 : k + 1] if deflate else lam[:k]
    assert res.converged
    assert (res.eigenvalues - expect).abs().max() < 1e-12
    assert (A @ res.eigenvectors - res.eigenvectors * res.eigenvalues[None, :]).norm(dim=0).max() <= 1e-10
    assert (res.eigenvectors.T @ res.eigenvectors - torch.eye(k, dtype=torch.float64)).abs().max() < 1e-12
    if deflate:
        assert (Q[:, 0] @ res.eigenvectors).abs().max() < 1e-12
    # the eigenspace, not only the values, over the leading clusters the k vectors hold whole
    first = 1 if deflate else 0
    whole = [m for m in range(1, k + 1) if lam[first + m - 1] > lam[first + m]]
    if whole:  # k = 1 after deflation holds half of a pair: only its eigenvalue is determined
        m = whole[-1]
        assert dense.subspace_angle(res.eigenvectors[:, :m], Q[:, first : first + m]) < 1e-8


def test_block_eigsh_stages():
    """A float32 first stage then a float64 stage reaches float64 accuracy; the float32 stage
    alone stops at its floor and says so."""
    n = 500
    lam = spectrum(n)
    A, Q = operator(n, lam, seed=1)
    A32 = A.float()
    calls = {"f32": 0, "f64": 0}

    def mm32(V):
        calls["f32"] += 1
        return A32 @ V.float()

    def mm64(V):
        calls["f64"] += 1
        return A @ V

    res = block_eigsh([Stage(mm32, 1e-5, "float32"), Stage(mm64)], n, 4, tol=1e-11, deflate=Q[:, 0])
    assert res.converged and calls["f32"] > 0 and calls["f64"] > 0
    assert (res.eigenvalues - lam[1:5]).abs().max() < 1e-12
    assert res.residuals.max() <= 1e-11
    only32 = block_eigsh([Stage(mm32, 0.0, "float32")], n, 4, tol=1e-11, deflate=Q[:, 0], patience=10, maxiter=300)
    assert not only32.converged
    assert only32.residuals.max() > 1e-11
    assert (only32.eigenvalues - lam[1:5]).abs().max() < 1e-5


def clustered_spectrum(n: int) -> torch.Tensor:
    """1, then S²-like clusters of 3, 5, 7, … eigenvalues exp(−l(l+1)/80), each split by ~1e-4."""
    lam, l = [], 1
    while len(lam) < n - 1:
        base = torch.exp(torch.tensor(-l * (l + 1) / 80, dtype=torch.float64)).item()
        lam += [base * (1 + 1e-4 * (i - l)) for i in range(2 * l + 1)]
        l += 1
    return torch.tensor([1.0] + sorted(lam[: n - 1], reverse=True), dtype=torch.float64)


@pytest.mark.parametrize("noise", [1e-4, 1e-6])
def test_block_eigsh_noisy_products(noise):
    """Products with fresh relative noise each call (the GPU's float32 products: ~1e-4 before the
    tiles' accumulation fix, ≲1e-6 after) on a clustered spectrum: the residuals settle at the
    noise level and the eigenvalues stay within it — a P block renormalised after projection
    amplified the noise by 1 / residual (1e-4: residuals 3e-2, eigenvalues off by 8e-3) — and
    at the floor (noise ≈ tol) the solver gives up after a few failed verifications instead of
    iterating to maxiter."""
    n, k = 600, 8
    lam = clustered_spectrum(n)
    A, Q = operator(n, lam, seed=5)
    gen = torch.Generator().manual_seed(6)

    def noisy(V):
        return (A @ V) * (1 + noise * torch.randn(V.shape, generator=gen, dtype=torch.float64))

    res = block_eigsh(noisy, n, k, tol=1e-6, deflate=Q[:, 0], maxiter=200)
    assert not res.converged and res.iterations < 60
    assert res.residuals.max() <= 3 * noise
    assert (res.eigenvalues - lam[1 : k + 1]).abs().max() <= 0.3 * noise


def test_block_eigsh_verifies_residuals():
    """The returned residuals are those of the true operator (a fresh product), and they are small."""
    n = 300
    lam = spectrum(n)
    A, _ = operator(n, lam, seed=2)
    res = block_eigsh(lambda V: A @ V, n, 5, tol=1e-9)
    true = (A @ res.eigenvectors - res.eigenvectors * res.eigenvalues[None, :]).norm(dim=0)
    assert torch.allclose(res.residuals, true, rtol=1e-6, atol=1e-14)
    assert true.max() <= 1e-9


def test_block_eigsh_maxiter_not_converged():
    n = 300
    A, _ = operator(n, spectrum(n, gap=1e-4), seed=3)
    res = block_eigsh(lambda V: A @ V, n, 8, tol=1e-12, maxiter=3)
    assert not res.converged and res.iterations == 3


def test_block_eigsh_small_n_dense_fallback():
    n = 20
    lam = torch.linspace(1, 0, n, dtype=torch.float64)
    A, Q = operator(n, lam, seed=4)
    res = block_eigsh(lambda V: A @ V, n, 4, tol=1e-10, deflate=Q[:, 0])
    assert (res.eigenvalues - lam[1:5]).abs().max() < 1e-12


def test_dense_eigsh_deflation():
    n = 50
    lam = torch.linspace(1, 0.1, n, dtype=torch.float64)
    A, Q = operator(n, lam, seed=5)
    res = dense_eigsh(A, 3, deflate=Q[:, 0] * 7.0)
    assert (res.eigenvalues - lam[1:4]).abs().max() < 1e-12
    assert res.residuals.max() < 1e-12


def test_block_eigsh_bad_k():
    A = torch.eye(30, dtype=torch.float64)
    with pytest.raises(ValueError, match="k=30"):
        block_eigsh(lambda V: A @ V, 30, 30, deflate=torch.ones(30))
    with pytest.raises(ValueError, match="k=0"):
        block_eigsh(lambda V: A @ V, 30, 0)


def test_block_eigsh_verbose_progress(capsys):
    n = 200
    A, _ = operator(n, spectrum(n), seed=6)
    quiet = block_eigsh(lambda V: A @ V, n, 3, tol=1e-9)
    loud = block_eigsh(lambda V: A @ V, n, 3, tol=1e-9, verbose=True)
    assert "eigensolver it" in capsys.readouterr().out
    assert torch.equal(quiet.eigenvalues, loud.eigenvalues)
