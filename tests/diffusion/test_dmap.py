"""DiffusionMap as an estimator: parameters, outputs and their types, diffusion time, carré du
champ and metric against the dense pairwise definition, bandwidth selection against brute
force, and every bad input of the issue (NaN/inf, too few points, β ≤ 0, α outside [0, 1],
mismatched features, transform before fit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmarkov.diffusion import DiffusionMap
from flashmarkov.diffusion import bandwidth as bw

from . import dense


def blob(n: int = 200, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) * np.linspace(1.0, 0.4, d) + 2.0


def test_params_roundtrip():
    dm = DiffusionMap(n_components=3, alpha=0.5, bandwidth="knn", t=2.0, tol=1e-7, eigensolver="dense", device="cpu", verbose=False)
    p = dm.get_params()
    assert p == dict(n_components=3, alpha=0.5, bandwidth="knn", t=2.0, tol=1e-7, eigensolver="dense", device="cpu", verbose=False)
    assert dm.set_params(n_components=4, t=0.0) is dm and dm.n_components == 4 and dm.t == 0.0
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        dm.set_params(beta=1.0)
    assert "n_components=4" in repr(dm)


def test_outputs_numpy_and_torch():
    X = blob()
    dm = DiffusionMap(n_components=3, bandwidth=0.5, eigensolver="dense")
    emb = dm.fit_transform(X)
    assert isinstance(emb, np.ndarray) and emb.shape == (200, 3)
    assert dm.eigenvalues_.shape == (4,) and dm.eigenvectors_.shape == (200, 4)
    assert np.all(np.diff(dm.eigenvalues_) <= 0) and dm.eigenvalues_[0] == 1.0
    assert dm.beta_ == 0.5 and dm.sigma_ is None and dm.intrinsic_dimension_ is None
    emb_t = DiffusionMap(n_components=3, bandwidth=0.5, eigensolver="dense").fit_transform(torch.tensor(X))
    assert isinstance(emb_t, torch.Tensor)
    assert np.abs(emb_t.numpy() - emb).max() < 1e-12
    # float32 data computes with float32 products and still agrees to float32 accuracy
    emb32 = DiffusionMap(n_components=3, bandwidth=0.5, eigensolver="lobpcg", tol=1e-5).fit_transform(torch.tensor(X, dtype=torch.float32))
    assert np.abs(np.abs(emb32.numpy()) - np.abs(emb)).max() < 1e-3


def test_dense_and_lobpcg_agree():
    X = blob(600, 3, seed=1)
    a = DiffusionMap(n_components=5, bandwidth=1.0, eigensolver="dense").fit(X)
    b = DiffusionMap(n_components=5, bandwidth=1.0, eigensolver="lobpcg", tol=1e-10).fit(X)
    assert np.abs(a.eigenvalues_ - b.eigenvalues_).max() < 1e-12
    assert np.abs(a.eigenvectors_ - b.eigenvectors_).max() < 1e-6  # same sign convention
    assert b.residuals_.max() <= 1e-10


@pytest.mark.parametrize("t", [0.0, 0.5, 3.0])
def test_diffusion_time(t):
    X = blob(150)
    dm = DiffusionMap(n_components=2, bandwidth=0.5, t=t, eigensolver="dense")
    emb = dm.fit_transform(X)
    assert np.abs(emb - dm.eigenvectors_[:, 1:] * dm.eigenvalues_[None, 1:] ** t).max() < 1e-14


def test_carre_du_champ_and_metric_dense():
    X = blob(120, 2, seed=2)
    beta = 0.7
    dm = DiffusionMap(n_components=3, alpha=0.5, bandwidth=beta, eigensolver="dense").fit(X)
    P = dense.normalise(torch.tensor(X), beta, 0.5)["P"].numpy()
    rng = np.random.default_rng(0)
    f, g = rng.standard_normal(120), rng.standard_normal(120)
    pairwise = 0.5 * (P * (f[None, :] - f[:, None]) * (g[None, :] - g[:, None])).sum(1)
    assert np.abs(dm.carre_du_champ(f, g, scaled=False) - pairwise).max() < 1e-12
    assert np.abs(dm.carre_du_champ(f, g) - 4 * beta * pairwise).max() < 1e-11
    C = dm.embedding_
    G = dm.metric()
    assert G.shape == (120, 3, 3)
    for a in range(3):
        for b in range(3):
            ref = 0.5 * (P * (C[None, :, a] - C[:, None, a]) * (C[None, :, b] - C[:, None, b])).sum(1)
            assert np.abs(G[:, a, b] - 4 * beta * ref).max() < 1e-11
    rows = [5, 0, 119]
    assert np.abs(dm.metric(rows=rows) - G[rows]).max() < 1e-13
    F = rng.standard_normal((120, 2))
    assert np.abs(dm.metric(coords=F, scaled=False)[:, 0, 1] - dm.carre_du_champ(F[:, 0], F[:, 1], scaled=False)).max() < 1e-12


def test_metric_nan_poisoned(nan_alloc):
    X = blob(80, 2, seed=3)
    dm = DiffusionMap(n_components=4, bandwidth=0.7, eigensolver="dense").fit(X)
    G = dm.metric()
    assert np.isfinite(G).all()
    assert np.abs(G - G.transpose(0, 2, 1)).max() == 0


def test_bandwidth_median_and_knn_brute_force():
    X = torch.tensor(blob(300, 3, seed=4))
    Xc = X - X.mean(0)
    d2 = torch.cdist(Xc, Xc).square()
    iu = torch.triu_indices(300, 300, 1)
    assert math.isclose(bw.median_beta(Xc), 1 / d2[iu[0], iu[1]].median().item(), rel_tol=1e-12)
    kth = d2.masked_fill(torch.eye(300, dtype=torch.bool), math.inf).sort(1).values[:, bw.KNN_K - 1]
    assert math.isclose(bw.knn_beta(Xc), 1 / kth.mean().item(), rel_tol=1e-10)
    sigma = bw.self_tuning_sigma(Xc)
    kth7 = d2.masked_fill(torch.eye(300, dtype=torch.bool), math.inf).sort(1).values[:, bw.SELF_TUNING_K - 1].sqrt()
    assert (sigma - kth7).abs().max() < 1e-10
    assert (bw.self_tuning_sigma_new(Xc, Xc) - kth7).abs().max() < 1e-10


@pytest.mark.parametrize("shape,dim", [("circle", 1), ("sphere", 2)])
def test_bgh_intrinsic_dimension(shape, dim):
    X = dense.circle(300) if shape == "circle" else dense.fibonacci_sphere(600)
    b = bw.bgh(X, n_grid=24)
    assert abs(b.intrinsic_dimension - dim) < 0.25
    assert b.beta == pytest.approx(1 / b.eps_grid[int(b.log_slopes.argmax())].item())
    if shape == "circle":
        dm = DiffusionMap(n_components=2, bandwidth="bgh", eigensolver="dense").fit(X.numpy())
        assert dm.bandwidth_.method == "bgh" and abs(dm.intrinsic_dimension_ - dim) < 0.25


def test_bgh_same_for_float32_and_float64():
    """BGH estimates in float64 whatever the data's dtype: the float32 points (the GPU's dtype)
    give the β of the same points in float64 (float32 distances moved the grid's lower end, the
    closest pair's distance, and with it β by ~1e-3)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((700, 3))
    X = torch.tensor(X / np.linalg.norm(X, axis=1, keepdims=True) + 0.01 * rng.standard_normal((700, 3)))
    X32 = X.float().double()  # the same points, exactly representable in float32
    b64, b32 = bw.bgh(X32), bw.bgh(X32.float())
    assert math.isclose(b32.beta, b64.beta, rel_tol=1e-12)
    assert math.isclose(b32.intrinsic_dimension, b64.intrinsic_dimension, rel_tol=1e-9)


def test_self_tuning_fit():
    X = blob(250, 2, seed=5)
    dm = DiffusionMap(n_components=3, bandwidth="self-tuning", eigensolver="dense").fit(X)
    assert dm.beta_ == 1.0 and dm.sigma_.shape == (250,)
    n = dense.normalise(torch.tensor(X - X.mean(0)), 1.0, 1.0, sigma=torch.tensor(dm.sigma_))
    P = n["P"].numpy()
    psi, lam = dm.eigenvectors_, dm.eigenvalues_
    assert np.abs(P @ psi - psi * lam[None, :]).max() < 1e-10


@settings(max_examples=8, deadline=None)
@given(n=st.integers(6, 60), d=st.integers(1, 4), k=st.integers(1, 4), alpha=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_property_eigenpairs(n, d, k, alpha, seed):
    """Any small data set: ψ_0 ≡ 1, π-orthonormal ψ, P ψ = λ ψ, eigenvalues in [0, 1]."""
    if n < k + 2:
        k = n - 2
    X = np.random.default_rng(seed).standard_normal((n, d)) * 3
    dm = DiffusionMap(n_components=k, alpha=alpha, bandwidth="median", eigensolver="dense").fit(X)
    psi, lam, pi = dm.eigenvectors_, dm.eigenvalues_, dm.stationary_
    P = dense.normalise(torch.tensor(X - X.mean(0)), dm.beta_, alpha)["P"].numpy()
    assert np.all(psi[:, 0] == 1) and np.all(lam[1:] <= 1 + 1e-12) and np.all(lam > -1e-12)
    assert np.abs(psi.T @ (pi[:, None] * psi) - np.eye(k + 1)).max() < 1e-8
    assert np.abs(P @ psi - psi * lam[None, :]).max() < 1e-8 * max(1.0, np.abs(psi).max())


@pytest.mark.parametrize(
    "params,X,err,match",
    [
        ({}, np.full((20, 2), np.nan), ValueError, "NaN or infinite"),
        ({}, np.array([[0.0, np.inf]] * 20), ValueError, "NaN or infinite"),
        (dict(n_components=8), np.random.default_rng(0).standard_normal((9, 2)), ValueError, "N >= n_components \\+ 2 = 10"),
        (dict(bandwidth=0.0), None, ValueError, "beta"),
        (dict(bandwidth=-2.0), None, ValueError, "beta"),
        (dict(bandwidth="silverman"), None, ValueError, "bandwidth='silverman'"),
        (dict(bandwidth=[1.0]), None, TypeError, "bandwidth"),
        (dict(alpha=1.2), None, ValueError, "alpha"),
        (dict(alpha=-0.5), None, ValueError, "alpha"),
        (dict(n_components=0), None, ValueError, "n_components"),
        (dict(n_components=2.5), None, TypeError, "n_components"),
        (dict(t=-1.0), None, ValueError, "t=-1.0"),
        (dict(tol=0.0), None, ValueError, "tol"),
        (dict(eigensolver="arpack"), None, ValueError, "eigensolver"),
        ({}, np.ones(20), ValueError, "X must be 2-D"),
        ({}, "abc", TypeError, "X must hold numbers"),
        ({}, torch.ones(20, 2, dtype=torch.int64), TypeError, "floating"),
    ],
)
def test_bad_input(params, X, err, match):
    X = blob(30, 2) if X is None else X
    with pytest.raises(err, match=match):
        DiffusionMap(**params).fit(X)


def test_transform_errors():
    dm = DiffusionMap(n_components=2, bandwidth=0.5)
    with pytest.raises(ValueError, match="not fitted yet: call fit before transform"):
        dm.transform(blob(5, 3))
    with pytest.raises(ValueError, match="not fitted"):
        dm.eigenvalues_  # noqa: B018
    dm.fit(blob(40, 3))
    with pytest.raises(ValueError, match="Y has 2 features but the map was fitted on 3"):
        dm.transform(blob(5, 2))
    with pytest.raises(ValueError, match="Y contains"):
        dm.transform(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="f has 5 rows"):
        dm.carre_du_champ(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="rows must index"):
        dm.metric(rows=[40])


def test_fit_through_triton_kernels(triton_backend, monkeypatch):
    """The whole estimator on the Triton kernels (interpreted on CPU, compiled on a GPU): the
    reference path's eigenpairs and Nyström values."""
    X = blob(70, 3, seed=6)
    tri = DiffusionMap(n_components=3, bandwidth=0.6, eigensolver="lobpcg", tol=1e-9, device=triton_backend).fit(X)
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "reference")
    ref = DiffusionMap(n_components=3, bandwidth=0.6, eigensolver="dense", device="cpu").fit(X)
    assert np.abs(tri.eigenvalues_ - ref.eigenvalues_).max() < 1e-10
    # Nyström runs its products in the map's dtype: float64 here on the CPU, float32 on a GPU (documented)
    assert np.abs(tri.transform(X[:5]) - ref.embedding_[:5]).max() < (1e-7 if tri._dtype == torch.float64 else 1e-6)
