"""The known answers of math.md §4 through the public DiffusionMap (float64, CPU):
circle (exact discrete spectrum and its Bessel limit), sphere (Fibonacci lattice), flat torus,
density independence at α = 1 against α = 0, ψ_0 ≡ 1 and π-normalisation, P ψ = λ ψ, Nyström at
the training points, the Doob transform's exact spectrum with top eigenvalue 1, and the carré du
champ trace."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flashmarkov.diffusion import DiffusionMap, FlashDiffusion, SymmetricMarkov, block_eigsh

from . import dense


@pytest.mark.parametrize("eigensolver,n", [("dense", 400), ("lobpcg", 700)])
def test_circle_exact_spectrum(eigensolver, n):
    beta = 50.0
    X = dense.circle(n).numpy()
    dm = DiffusionMap(n_components=8, alpha=1.0, bandwidth=beta, tol=1e-10, eigensolver=eigensolver).fit(X)
    exact = dense.circle_eigenvalues(n, beta, 9).numpy()
    assert np.abs(dm.eigenvalues_ - exact).max() <= 1e-8
    # the Bessel limit the discrete spectrum converges to
    for k, ref in enumerate((0.99498737, 0.98010025, 0.95578336, 0.92275325), start=1):
        assert abs(exact[2 * k - 1] - ref) < 1e-8
        assert abs(dense.bessel_ratio(k, 2 * beta) - ref) < 1e-8
    # eigenvectors: each pair spans {cos kθ, sin kθ}
    theta = np.arctan2(X[:, 1], X[:, 0])
    psi = dm.eigenvectors_
    for k in (1, 2, 3, 4):
        exact_pair = torch.tensor(np.stack([np.cos(k * theta), np.sin(k * theta)], 1))
        assert dense.subspace_angle(torch.tensor(psi[:, 2 * k - 1 : 2 * k + 1]), exact_pair) < 1e-6


def test_sphere_fibonacci():
    beta = 20.0
    X = dense.fibonacci_sphere(2000).numpy()
    dm = DiffusionMap(n_components=8, bandwidth=beta, tol=1e-8, eigensolver="lobpcg").fit(X)
    exact = np.array(dense.sphere_eigenvalues(beta, 2))
    assert np.abs(dm.eigenvalues_ - exact).max() < 5e-6
    assert abs(exact[1] - (1 / math.tanh(2 * beta) - 1 / (2 * beta))) < 1e-12
    for ref, got in zip((0.975, 0.926875), (exact[1], exact[4])):
        assert abs(got - ref) < 2e-3
    # 4β(1 − λ_l) → l(l + 1): 2 and 6 up to O(1/β)
    mu = 4 * beta * (1 - dm.eigenvalues_[1:])
    assert np.abs(mu[:3] - 2).max() < 0.1 and np.abs(mu[3:8] - 6).max() < 0.3


def test_torus_product_spectrum():
    n, beta = 22, 6.0
    X = dense.torus(n).numpy()
    dm = DiffusionMap(n_components=12, alpha=0.5, bandwidth=beta, eigensolver="dense").fit(X)
    exact = dense.torus_eigenvalues(n, beta, 13).numpy()
    assert np.abs(dm.eigenvalues_ - exact).max() < 1e-10
    lam = dense.circle_spectrum(n, beta, 2).numpy()
    assert abs(exact[1] - lam[1]) < 1e-12 and abs(exact[5] - lam[1] ** 2) < 1e-12


def test_density_independence_alpha_one():
    """A circle sampled with density ratio ~1.9: at α = 1 the first pair's 4β(1 − λ) stays at
    the Laplace–Beltrami value 1; at α = 0 the density splits it."""
    X = dense.circle(1000, density_ratio=1.9).numpy()
    mu = {}
    for alpha in (1.0, 0.0):
        dm = DiffusionMap(n_components=2, alpha=alpha, bandwidth=50.0, eigensolver="dense").fit(X)
        mu[alpha] = 200.0 * (1 - dm.eigenvalues_[1:])
    assert np.abs(mu[1.0] - 1).max() < 0.01
    assert mu[0.0][0] < 0.95 and mu[0.0][1] > 1.1


@pytest.mark.parametrize("eigensolver", ["dense", "lobpcg"])
def test_trivial_eigenvector_and_eigen_equation(eigensolver):
    """ψ_0 ≡ 1, Σ π ψ_k ψ_l = δ_kl, P ψ = λ ψ to the eigensolver's accuracy, P 1 = 1."""
    gen = np.random.default_rng(3)
    X = gen.standard_normal((500, 3)) * np.array([1.0, 0.5, 0.2]) + 4.0
    dm = DiffusionMap(n_components=5, alpha=0.5, bandwidth=0.8, tol=1e-10, eigensolver=eigensolver).fit(X)
    psi, lam, pi = dm.eigenvectors_, dm.eigenvalues_, dm.stationary_
    assert np.all(psi[:, 0] == 1.0) and lam[0] == 1.0
    assert np.abs(psi.T @ (pi[:, None] * psi) - np.eye(6)).max() < 1e-10
    n = dense.normalise(torch.tensor(X), 0.8, 0.5)
    P = n["P"].numpy()
    assert np.abs(P @ psi - psi * lam[None, :]).max() < 1e-8
    assert np.abs(P.sum(1) - 1).max() < 1e-13
    ref_lam, ref_psi = dense.spectrum(torch.tensor(X), 0.8, 0.5, 5)
    assert np.abs(lam - ref_lam.numpy()).max() < 1e-12
    assert np.abs(np.abs(psi) - np.abs(ref_psi.numpy())).max() < 1e-6  # simple eigenvalues: ± only
    # the stationary distribution of P
    assert np.abs(pi @ P - pi).max() < 1e-15


@pytest.mark.parametrize("bandwidth", [0.8, "self-tuning"])
def test_nystrom_at_training_points(bandwidth):
    gen = np.random.default_rng(4)
    X = gen.standard_normal((300, 2))
    dm = DiffusionMap(n_components=4, bandwidth=bandwidth, t=2.0, eigensolver="dense")
    emb = dm.fit_transform(X)
    assert np.abs(dm.transform(X) - emb).max() < 1e-10 * np.abs(emb).max()
    assert np.abs(emb - dm.eigenvectors_[:, 1:] * dm.eigenvalues_[None, 1:] ** 2).max() < 1e-14
    # the Nyström operator is FlashDiffusion with new queries (α cancels nothing else)
    if bandwidth == 0.8:
        Y = gen.standard_normal((20, 2))
        lam = dm.eigenvalues_[1:]
        ext = FlashDiffusion(Y, X, dm.eigenvectors_[:, 1:], beta=0.8, alpha=1.0) / lam[None, :] * lam[None, :] ** 2
        assert np.abs(dm.transform(Y) - ext).max() < 1e-10


def test_doob_transform_spectrum():
    """P^h = diag(Ph)⁻¹ P diag(h): the symmetric conjugate diag(s) M diag(s) has P^h's exact
    spectrum, its top eigenvalue is 1 with eigenvector (d h Ph)^½ (ψ_0 ≡ 1)."""
    X = dense.circle(300)
    h = torch.exp(torch.cos(torch.atan2(X[:, 1], X[:, 0]))) + 0.1
    op = SymmetricMarkov(X, 30.0, 1.0, h=h)
    Ph = dense.normalise(X, 30.0, 1.0, h=h)["P"]
    assert (Ph.sum(1) - 1).abs().max() < 1e-13
    exact = np.sort(np.linalg.eigvals(Ph.numpy()).real)[::-1]
    assert abs(exact[0] - 1) < 1e-12
    res = block_eigsh(op.matmat, op.n, 6, tol=1e-11)
    assert np.abs(res.eigenvalues.numpy() - exact[:6]).max() < 1e-10
    u0 = op.g / op.g.norm()
    assert (op.matmat(u0[:, None])[:, 0] - u0).abs().max() < 1e-13
    deflated = op.eigsh(5, tol=1e-11)
    assert np.abs(deflated.eigenvalues.numpy() - exact[1:6]).max() < 1e-10
    psi = op.right_eigenvectors(torch.cat([u0[:, None], deflated.eigenvectors], 1))
    assert (psi[:, 0] - 1).abs().max() < 1e-12
    assert (Ph @ psi[:, 1:] - psi[:, 1:] * deflated.eigenvalues[None, :]).abs().max() < 1e-9
    ones = torch.ones(300, 1, dtype=torch.float64)
    assert (FlashDiffusion(X, X, ones, 30.0, 1.0, h=h) - 1).abs().max() < 1e-13


def test_carre_du_champ_trace_circle():
    """Σ_a Γ_β(x_a, x_a) = 4β(1 − λ_1) at every point of the equispaced circle → 1.00253."""
    beta = 50.0
    for n, tol_limit in ((400, 1e-6), (64, 1e-2)):
        X = dense.circle(n).numpy()
        dm = DiffusionMap(n_components=2, bandwidth=beta, eigensolver="dense").fit(X)
        trace = dm.carre_du_champ(X, X).sum(1)
        lam1 = dense.circle_spectrum(n, beta, 1)[1].item()
        assert np.abs(trace - 4 * beta * (1 - lam1)).max() < 1e-10
        assert abs(trace.mean() - 1.00253) < tol_limit + 1e-5
    assert abs(4 * beta * (1 - dense.bessel_ratio(1, 2 * beta)) - 1.00253) < 5e-6
