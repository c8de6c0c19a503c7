"""flashmarkov.diffusion.tiles on CPU: every function on the reference path and through the Triton
interpreter, against dense float64 formulas at awkward sizes; the reference's chunking; the
custom ops (opcheck, torch.compile); bad input."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashmarkov.diffusion import FlashDiffusion, reference, tiles

from ..conftest import DEVICE, TOLERANCE, assert_close, rel_err

DTYPES = [torch.float32, torch.float64]
# (Nq, Nk, d, m): 1 point; sizes that are not multiples of the 16 x 16 interpreter tiles; d
# padded (1, 3, 17) and split into feature chunks (70); several V column blocks (m = 70)
SHAPES = [(1, 1, 1, 1), (37, 130, 3, 5), (130, 37, 17, 16), (37, 37, 1, 16), (20, 45, 70, 3), (19, 23, 2, 70)]


@pytest.fixture(params=["reference", "triton"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs on the reference and on the Triton kernels (interpreted on CPU)."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", request.param)
    return request.param


def dense_d2(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Squared distances in float64 from differences (no norm expansion): the oracle."""
    q, k = q.double(), k.double()
    return ((q[:, None, :] - k[None, :, :]) ** 2).sum(-1)


def points(n: int, d: int, dtype: torch.dtype, spread: float = 1.0) -> torch.Tensor:
    return (spread * torch.randn(n, d, dtype=torch.float64, device=DEVICE)).to(dtype)


def positive(n: int, dtype: torch.dtype) -> torch.Tensor:
    return (0.5 + torch.rand(n, dtype=torch.float64, device=DEVICE)).to(dtype)


def beta_for(d: int) -> float:
    """A bandwidth that keeps the kernel neither ~identity nor ~constant for unit Gaussians."""
    return 0.5 / d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scales", [False, True])
@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_matmat(shape, sigma, scales, dtype, backend, nan_alloc):
    nq, nk, d, m = shape
    Q, K, V = points(nq, d, dtype), points(nk, d, dtype), points(nk, m, dtype)
    rs, cs = (positive(nq, dtype), positive(nk, dtype)) if scales else (None, None)
    sq, sk = (positive(nq, dtype), positive(nk, dtype)) if sigma else (None, None)
    beta = beta_for(d)
    out = tiles.gaussian_matmat(Q, K, V, beta, row_scale=rs, col_scale=cs, sigma_q=sq, sigma_k=sk)
    assert out.dtype == dtype
    G = torch.exp(-beta * dense_d2(Q, K) / ((sq.double()[:, None] * sk.double()[None, :]) if sigma else 1.0))
    W = V.double() * (cs.double()[:, None] if scales else 1.0)
    expected = (G @ W) * (rs.double()[:, None] if scales else 1.0)
    assert_close(out, expected, dtype, "gaussian_matmat")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [0.3, 5.0])
@pytest.mark.parametrize("sigma", [False, True])
def test_same_points(sigma, beta, dtype, backend, nan_alloc):
    """Q is K (the eigensolver's products and row sums): the kernels drop the running maximum
    (each row's own key is at distance 0, so every exponent is ≤ 0 up to rounding)."""
    X, V, r = points(53, 3, dtype), points(53, 6, dtype), positive(53, dtype)
    s = positive(53, dtype) if sigma else None
    G = torch.exp(-beta * dense_d2(X, X) / ((s.double()[:, None] * s.double()[None, :]) if sigma else 1.0))
    out = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r, sigma_q=s, sigma_k=s)
    assert_close(out, r.double()[:, None] * (G @ (r.double()[:, None] * V.double())), dtype, "matmat Q is K")
    assert_close(tiles.gaussian_rowsum(X, X, beta, col_scale=r, sigma_q=s, sigma_k=s), G @ r.double(), dtype, "rowsum Q is K")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("min_tiles", [1, 5, 1000])
@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_same_points_key_splits(offset, sigma, min_tiles, dtype, backend, nan_alloc, monkeypatch):
    """Q is K over many key tiles: the launch splits the keys into ranges (min_tiles 1: one tile
    per split; 5: uneven ranges; 1000: no split) and sums the partial products; with float32
    and no sigma the squared norms are folded into the operands (FOLD), also for a cloud far
    from the origin with a local kernel (beta = 2, beta·‖x‖² ~ 5e3)."""
    monkeypatch.setattr(tiles, "SPLIT_MIN_TILES", min_tiles)
    n, beta = 203, 2.0 if offset else 0.4
    X = (points(n, 3, torch.float64, 0.7) + offset).to(dtype)
    V, r = points(n, 7, dtype), positive(n, dtype)
    s = positive(n, dtype) if sigma else None
    G = torch.exp(-beta * dense_d2(X, X) / ((s.double()[:, None] * s.double()[None, :]) if sigma else 1.0))
    out = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r, sigma_q=s, sigma_k=s)
    assert_close(out, r.double()[:, None] * (G @ (r.double()[:, None] * V.double())), dtype, "matmat key splits")
    assert_close(tiles.gaussian_rowsum(X, X, beta, sigma_q=s, sigma_k=s), G.sum(1), dtype, "rowsum key splits")


@pytest.mark.parametrize("beta", [1e-7, 0.4, 300.0, 3e4])
def test_fold_scales(beta, backend, nan_alloc):
    """float32, Q is K (FOLD) across the operand scales: G = 1 with tiny operands (beta 1e-7: every
    entry ~1, float16 subnormals in the operands), G = 1 (0.4), G > 1 (300: c·D·top² ~ 2^15, the
    loop multiplies by G) and G >> 1 (3e4: only the diagonal survives). A loop that skipped or
    misapplied the multiply computes exp2(s / G) or exp2(G·s): O(1) errors at every G != 1.
    Local kernels carry the norm expansion's exponent error, ~2^−22·beta·R² (R the cloud's
    radius; notes/diffusion-tiles.md), which sets the bound where it exceeds float32's."""
    X, V, r = points(150, 3, torch.float32), points(150, 4, torch.float32), positive(150, torch.float32)
    radius2 = ((X.double() - X.double().mean(0)) ** 2).sum(1).max().item()
    bound = max(TOLERANCE[torch.float32], 2.0**-22 * beta * radius2)
    G = torch.exp(-beta * dense_d2(X, X))
    out = tiles.gaussian_matmat(X, X, V, beta, row_scale=r, col_scale=r)
    assert rel_err(out, r.double()[:, None] * (G @ (r.double()[:, None] * V.double()))) <= bound
    assert rel_err(tiles.gaussian_rowsum(X, X, beta), G.sum(1)) <= bound


def test_key_splits_plan():
    """Splits fill SPLIT_PROGRAMS_PER_SM programs per SM and keep SPLIT_MIN_TILES tiles each."""
    cpu = torch.device("cpu")  # planned as for a 132-SM GPU
    assert tiles.key_splits(4096, 4096, cpu) == 1
    assert tiles.key_splits(128, 256, cpu) == 5
    assert tiles.key_splits(128, 16, cpu) == 16 // tiles.SPLIT_MIN_TILES
    assert tiles.key_splits(1, 4, cpu) == 1


def test_float32_far_from_origin(backend, nan_alloc):
    """float32 points far from the origin (norm ~ 60, spread 0.5) with a local kernel (beta = 4:
    beta·‖x‖² ~ 1e4): the distances' norm expansion must cancel relative to the cloud's radius
    (both paths centre at the keys' mean), not relative to ‖x‖² — uncentred, the exponents
    carry ~beta·2^−22·‖x‖² ≈ 1e-2 of error. Every Gaussian job and kNN against float64."""
    dtype, beta = torch.float32, 4.0
    offset = torch.tensor([40.0, -25.0, 35.0], dtype=torch.float64, device=DEVICE)
    Q, K = (points(70, 3, torch.float64, 0.5) + offset).to(dtype), (points(90, 3, torch.float64, 0.5) + offset).to(dtype)
    V, r = points(90, 5, dtype), positive(90, dtype)
    G = torch.exp(-beta * dense_d2(Q, K))
    Gs = torch.exp(-beta * dense_d2(K, K))
    assert_close(tiles.gaussian_matmat(Q, K, V, beta, col_scale=r), G @ (r.double()[:, None] * V.double()), dtype, "matmat")
    assert_close(tiles.gaussian_rowsum(Q, K, beta), G.sum(1), dtype, "rowsum")
    sym = tiles.gaussian_matmat_sym(K, V, beta, scale=r)
    assert_close(sym, r.double()[:, None] * (Gs @ (r.double()[:, None] * V.double())), dtype, "sym")
    out, lse = tiles.gaussian_softmax_apply(Q, K, V, beta)
    assert_close(out, (G / G.sum(1, keepdim=True)) @ V.double(), dtype, "softmax")
    d2, _ = tiles.knn(Q, K, 4)
    assert_close(d2, dense_d2(Q, K).sort(1).values[:, :4], dtype, "knn distances")


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmat_ranges(dtype, backend, nan_alloc):
    """Value columns spanning 1e-12 … 1e12 and a zero column (each column is scaled on its own),
    points at scales 1e-3 and 1e3 (with beta scaled to match), and queries whose every kernel
    value is tiny (rows keep their own maximum): column by column and row by row."""
    Q, K = points(37, 3, dtype), points(45, 3, dtype)
    V = points(45, 4, dtype) * torch.tensor([1e-12, 1.0, 1e12, 0.0], dtype=dtype, device=DEVICE)
    G = torch.exp(-0.4 * dense_d2(Q, K))
    out = tiles.gaussian_matmat(Q, K, V, 0.4)
    for j in range(3):
        assert_close(out[:, j], G @ V[:, j].double(), dtype, f"value column {j}")
    assert (out[:, 3] == 0).all()
    for scale in (1e-3, 1e3):
        assert_close(tiles.gaussian_matmat(Q * scale, K * scale, V[:, 1:2], 0.4 / scale**2), G @ V[:, 1:2].double(), dtype, f"points x {scale}")
    # queries 6 units out along the first axis, beta = 2: every kernel value is below ~1e-7 and
    # above ~1e-25 (float32 range); float32 distances then carry ~1e-7·‖q‖² error each, hence
    # 1e-4 (without the rows' own maximum these rows would come out 0 or noise)
    far = Q / 4 + torch.tensor([6.0, 0.0, 0.0], dtype=dtype, device=DEVICE)
    G = torch.exp(-2.0 * dense_d2(far, K))
    tol = TOLERANCE[dtype] if dtype == torch.float64 else 1e-4
    positive = V[:, 1:2].abs()  # no cancellation between terms: the relative error is the terms'
    for i, (got, want) in enumerate(zip(tiles.gaussian_matmat(far, K, positive, 2.0), G @ positive.double())):
        assert rel_err(got, want) <= tol, f"far query {i}: {rel_err(got, want):.3g}"
    assert rel_err(tiles.gaussian_rowsum(far, K, 2.0), G.sum(1)) <= tol, "far rowsum"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", ["plain", "col_scale", "sigma"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 130, 3), (130, 37, 17)])
def test_rowsum(shape, options, dtype, backend, nan_alloc):
    nq, nk, d = shape
    Q, K = points(nq, d, dtype), points(nk, d, dtype)
    cs = positive(nk, dtype) if options == "col_scale" else None
    sq, sk = (positive(nq, dtype), positive(nk, dtype)) if options == "sigma" else (None, None)
    out = tiles.gaussian_rowsum(Q, K, 0.3, col_scale=cs, sigma_q=sq, sigma_k=sk)
    G = torch.exp(-0.3 * dense_d2(Q, K) / ((sq.double()[:, None] * sk.double()[None, :]) if sq is not None else 1.0))
    expected = G @ (cs.double() if cs is not None else torch.ones(nk, dtype=torch.float64, device=DEVICE))
    assert out.shape == (nq,) and out.dtype == dtype
    assert_close(out, expected, dtype, "gaussian_rowsum")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", ["plain", "scale", "scale+sigma"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 3, 5), (130, 17, 16), (45, 2, 70)])
def test_matmat_sym(shape, options, dtype, backend, nan_alloc):
    n, d, m = shape
    X, V = points(n, d, dtype), points(n, m, dtype)
    s = positive(n, dtype) if "scale" in options else None
    sigma = positive(n, dtype) if "sigma" in options else None
    beta = beta_for(d)
    out = tiles.gaussian_matmat_sym(X, V, beta, scale=s, sigma=sigma)
    G = torch.exp(-beta * dense_d2(X, X) / ((sigma.double()[:, None] * sigma.double()[None, :]) if sigma is not None else 1.0))
    sd = s.double()[:, None] if s is not None else 1.0
    expected = sd * (G @ (sd * V.double()))
    assert_close(out, expected, dtype, "gaussian_matmat_sym")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0.0, 30.0])
@pytest.mark.parametrize("tile", [(32, 16), (64, 16), (16, 16)])
def test_matmat_sym_tiles(tile, offset, dtype, nan_alloc, monkeypatch):
    """The symmetric kernel (Triton, interpreted on CPU) with row blocks of several key tiles
    (block_m = 2 or 4 x block_n: the diagonal block takes several tiles, and off-diagonal tiles
    start inside a later row block) at a size that is not a multiple of either; float32 folds the
    squared norms (FOLD), also for a cloud far from the origin with a local kernel."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
    cfg = tiles.TileConfig(tile[0], tile[1], 1)
    original = tiles.pick_config
    monkeypatch.setattr(tiles, "pick_config", lambda job, *a: cfg if job == "sym" else original(job, *a))
    n, beta = 107, 2.0 if offset else 0.4
    X = (points(n, 3, torch.float64, 0.7) + offset).to(dtype)
    V, s = points(n, 5, dtype), positive(n, dtype)
    G = torch.exp(-beta * dense_d2(X, X))
    out = tiles.gaussian_matmat_sym(X, V, beta, scale=s)
    assert_close(out, s.double()[:, None] * (G @ (s.double()[:, None] * V.double())), dtype, "sym tiles")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [False, True])
def test_packed_matmat(backend, dtype, sigma, monkeypatch):
    """``PackedProduct`` (the operator's M·V: points packed once) equals ``gaussian_matmat`` bitwise for
    several value blocks and scales, packs its points once on the Triton path, and is within the
    dtype's tolerance of the float64 dense product; a value block that requires a gradient takes the
    custom op (its gradient as the public call's)."""
    n = 70 if dtype == torch.float32 else 45
    X = points(n, 3, torch.float64, 0.8).to(dtype)
    s = positive(n, dtype) if sigma else None
    packs = []
    real_pack = tiles._pack_operands
    monkeypatch.setattr(tiles, "_pack_operands", lambda *a, **k: packs.append(1) or real_pack(*a, **k))
    product = tiles.PackedProduct(X, X, 0.7, sigma_q=s, sigma_k=s)
    for m, seed in ((5, 0), (17, 1), (5, 2)):
        gen = torch.Generator().manual_seed(seed)
        V = torch.randn(n, m, generator=gen, dtype=torch.float64).to(device=X.device, dtype=dtype)
        r = (torch.rand(n, generator=gen, dtype=torch.float64) + 0.5).to(device=X.device, dtype=dtype)
        got = product(V, row_scale=r, col_scale=r)
        assert torch.equal(got, tiles.gaussian_matmat(X, X, V, 0.7, row_scale=r, col_scale=r, sigma_q=s, sigma_k=s))
        d2 = dense_d2(X, X) if s is None else dense_d2(X, X) / (s.double()[:, None] * s.double()[None, :])
        want = r.double()[:, None] * (torch.exp(-0.7 * d2) @ (r.double()[:, None] * V.double()))
        assert_close(got, want, dtype, "packed M·V")
    # the first call packed once; each gaussian_matmat packs again
    assert len(packs) == (4 if backend == "triton" else 0)
    X.mul_(1.5)  # an in-place change of the points: packed again, equal to the fresh product
    got = product(V, row_scale=r, col_scale=r)
    assert torch.equal(got, tiles.gaussian_matmat(X, X, V, 0.7, row_scale=r, col_scale=r, sigma_q=s, sigma_k=s))
    assert len(packs) == (6 if backend == "triton" else 0)
    Xt = X.T.contiguous().T  # the same points, not contiguous: one copy serves as queries and keys
    got = tiles.PackedProduct(Xt, Xt, 0.7, sigma_q=s, sigma_k=s)(V, row_scale=r, col_scale=r)
    assert torch.equal(got, product(V, row_scale=r, col_scale=r))
    got = tiles.gaussian_matmat(Xt, Xt, V, 0.7, row_scale=r, col_scale=r, sigma_q=s, sigma_k=s)
    assert torch.equal(got, product(V, row_scale=r, col_scale=r))
    V = torch.randn(n, 2, dtype=dtype, device=X.device, requires_grad=True)
    product(V, row_scale=r).sum().backward()  # a value block that requires a gradient: the custom op
    dV = V.grad.clone()
    V.grad = None
    tiles.gaussian_matmat(X, X, V, 0.7, row_scale=r, sigma_q=s, sigma_k=s).sum().backward()
    assert torch.equal(dV, V.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_softmax_apply(backend, dtype, monkeypatch):
    """``PackedProduct(softmax=True)`` (the asymmetric operator's products) equals
    ``gaussian_softmax_apply`` bitwise over several value blocks, packs once, packs again after an
    in-place change of its log-bias; misuse raises before any launch."""
    X = points(60, 4, torch.float64, 0.9).to(dtype)
    Y = points(37, 4, torch.float64, 0.9).to(dtype)
    bias = torch.randn(60, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(X)
    packs = []
    real_pack = tiles._pack_operands
    monkeypatch.setattr(tiles, "_pack_operands", lambda *a, **k: packs.append(1) or real_pack(*a, **k))
    product = tiles.PackedProduct(Y, X, 0.4, softmax=True, log_bias=bias)
    for m in (3, 1, 3):
        V = torch.randn(60, m, dtype=torch.float64, generator=torch.Generator().manual_seed(m)).to(X)
        for got, want in zip(product(V), tiles.gaussian_softmax_apply(Y, X, V, 0.4, log_bias=bias), strict=True):
            assert torch.equal(got, want)
    bias.add_(0.5)
    for got, want in zip(product(V), tiles.gaussian_softmax_apply(Y, X, V, 0.4, log_bias=bias), strict=True):
        assert torch.equal(got, want)
    assert len(packs) == (6 if backend == "triton" else 0)  # 2 by the object, 4 by the public calls
    with pytest.raises(ValueError, match="not supported with softmax=True"):
        product(V, row_scale=bias)
    with pytest.raises(ValueError, match="log_bias needs softmax=True"):
        tiles.PackedProduct(Y, X, 0.4, log_bias=bias)


@pytest.mark.parametrize(
    "n,d,dtype,shift",
    [(1, 1, torch.float32, 0.0), (1000, 3, torch.float32, 3.0), (70, 17, torch.float64, -2.0),
     (300, 70, torch.float32, 100.0), (40000, 2, torch.float32, 0.5)],
)
def test_centre_kernels(n, d, dtype, shift, triton_backend):
    """``_centre`` (two launches: per-program column sums and extremes, then one program) gives
    ``reference.centre`` and the float32 top ``_pack_points`` computes, over one or several feature
    chunks and one or many row programs (n = 40 000: 157 programs of 256 rows)."""
    gen = torch.Generator().manual_seed(n + d)
    K = (torch.randn(n, d, generator=gen, dtype=torch.float64) * 2 + shift).to(device=triton_backend, dtype=dtype)
    ctr, top = tiles._centre(K)
    ref = reference.centre(K)
    assert ctr.dtype == K.dtype and torch.equal(ctr, ref)
    if dtype == torch.float32:
        lo, hi = torch.aminmax(K, dim=0)
        assert torch.equal(top, torch.maximum(hi - ref, ref - lo).amax().reshape(1))
    else:
        assert top is None


def test_centre_kernels_ties_and_constants(triton_backend):
    """Means halfway between multiples of the step round half to even, as torch.round; identical
    points (radius 0) keep their mean."""
    K = torch.tensor([[1.5, 0.0, -3.5], [3.5, 1.0, -1.5]], device=triton_backend)  # means 2.5, 0.5, -2.5
    assert torch.equal(tiles._centre(K)[0], reference.centre(K))
    assert tiles._centre(K)[0].tolist() == [2.0, 0.0, -2.0]  # step 1 (the radius over all columns)
    K = torch.full((9, 2), 7.25, device=triton_backend, dtype=torch.float64)
    assert tiles._centre(K)[0].tolist() == [7.25, 7.25]


def _gradient_cases() -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """{name: (function, float64 inputs)} for the gradient tests, and Q, K, V, sq, sk."""
    gen = torch.Generator().manual_seed(0)
    Q, K = (torch.randn(n, 3, generator=gen, dtype=torch.float64).to(DEVICE) for n in (9, 11))
    rs, sq = (torch.rand(9, generator=gen, dtype=torch.float64).to(DEVICE) + 0.5 for _ in range(2))
    cs, sk, h = (torch.rand(11, generator=gen, dtype=torch.float64).to(DEVICE) + 0.5 for _ in range(3))
    V = torch.randn(11, 2, generator=gen, dtype=torch.float64).to(DEVICE)
    bias = torch.randn(11, generator=gen, dtype=torch.float64).to(DEVICE)
    masked = bias.clone()
    masked[3] = -math.inf

    def softmax_both(q, k, v, b):  # out and lse: lse's gradient flows to the points and the log-bias
        out, lse = tiles.gaussian_softmax_apply(q, k, v, 0.7, log_bias=b)
        return out, lse

    cases = {
        "matmat": (lambda q, k, v, r, c: tiles.gaussian_matmat(q, k, v, 0.7, row_scale=r, col_scale=c), (Q, K, V, rs, cs)),
        "matmat sigma": (lambda q, k, v, r, c: tiles.gaussian_matmat(q, k, v, 0.7, row_scale=r, col_scale=c, sigma_q=sq,
                                                                     sigma_k=sk), (Q, K, V, rs, cs)),
        "matmat same": (lambda k, v, c: tiles.gaussian_matmat(k, k, v, 0.7, row_scale=c, col_scale=c), (K, V, cs)),
        "rowsum": (lambda q, k, c: tiles.gaussian_rowsum(q, k, 0.7, col_scale=c, sigma_q=sq, sigma_k=sk), (Q, K, cs)),
        "rowsum same": (lambda k: tiles.gaussian_rowsum(k, k, 0.7), (K,)),
        "softmax": (softmax_both, (Q, K, V, bias)),
        "softmax masked key": (lambda q, k, v: softmax_both(q, k, v, masked), (Q, K, V)),
        "softmax same": (lambda k, v: tiles.gaussian_softmax_apply(k, k, v, 0.7)[0], (K, V)),
        "FlashDiffusion": (lambda q, k, v, hh: FlashDiffusion(q, k, v, beta=0.7, alpha=0.5, h=hh), (Q, K, V, h)),
        "FlashDiffusion same": (lambda k, v: FlashDiffusion(k, k, v, beta=0.7, alpha=1.0), (K, V)),
    }
    return cases, Q, K, V, sq, sk


def _leaves(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.clone().requires_grad_() for t in ts)


def test_gradients(monkeypatch):
    """``gaussian_matmat`` (points, values, scales; with per-point bandwidths; Q ≠ K and Q is K),
    ``gaussian_rowsum``, ``gaussian_softmax_apply`` (points, values, log-bias; a masked key; both outputs)
    and ``FlashDiffusion`` (points, values, Doob h) pass gradcheck in float64 on the reference path."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "reference")
    for name, (fn, inputs) in _gradient_cases()[0].items():
        assert torch.autograd.gradcheck(fn, _leaves(*inputs)), name


@pytest.mark.triton
def test_gradients_triton(monkeypatch):
    """The same gradients with every product of the forward and backward on the Triton kernels (interpreted)
    equal the reference path's (float64, whose formulas gradcheck checks above; gradcheck itself through
    the interpreter takes minutes)."""
    gen = torch.Generator().manual_seed(1)
    for name, (fn, inputs) in _gradient_cases()[0].items():
        got = {}
        for backend in ("reference", "triton"):
            monkeypatch.setenv("FLASHMARKOV_BACKEND", backend)
            ins = _leaves(*inputs)
            outs = fn(*ins)
            outs = outs if isinstance(outs, tuple) else (outs,)
            if backend == "reference":
                cot = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(DEVICE) for o in outs]
            got[backend] = torch.autograd.grad(outs, ins, cot)
        for i, (g, r) in enumerate(zip(got["triton"], got["reference"], strict=True)):
            assert_close(g, r, torch.float64, f"{name}: input {i}")


def test_gradients_edge_cases(backend):
    """Every key masked: out 0, lse −inf and zero gradients, not NaN; a gradient asked of the bandwidths σ
    raises at the backward, naming them."""
    _, Q, K, V, sq, sk = _gradient_cases()
    q, k, v = _leaves(Q, K, V)
    out, lse = tiles.gaussian_softmax_apply(q, k, v, 0.7, log_bias=torch.full((11,), -math.inf, dtype=Q.dtype, device=DEVICE))
    grads = torch.autograd.grad(out.sum() + lse.clamp_min(0).sum(), (q, k, v))
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(lse, torch.full_like(lse, -math.inf))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    with pytest.raises(NotImplementedError, match="gaussian_matmat: gradients with respect to sigma_q are not"):
        tiles.gaussian_matmat(Q, K, V, 0.7, sigma_q=sq.clone().requires_grad_(), sigma_k=sk).sum().backward()
    with pytest.raises(NotImplementedError, match="gaussian_rowsum: gradients with respect to sigma_k"):
        tiles.gaussian_rowsum(Q, K, 0.7, sigma_q=sq, sigma_k=sk.clone().requires_grad_()).sum().backward()


@pytest.mark.parametrize("op", ["matmat", "softmax", "FlashDiffusion"])
def test_float32_gradients(op, backend):
    """Float32 gradients in the points and values (a cloud away from the origin, where (Σ w) q − Σ w k
    would cancel without centring) within float32's tolerance of the float64 ones."""
    gen = torch.Generator().manual_seed(2)
    Q, K = ((torch.randn(n, 5, generator=gen, dtype=torch.float64) * 0.5 + 30.0).to(DEVICE) for n in (70, 90))
    V = torch.randn(90, 3, generator=gen, dtype=torch.float64).to(DEVICE)
    G = torch.randn(70, 3, generator=gen, dtype=torch.float64).to(DEVICE)
    fn = {"matmat": lambda q, k, v: tiles.gaussian_matmat(q, k, v, 0.9),
          "softmax": lambda q, k, v: tiles.gaussian_softmax_apply(q, k, v, 0.9)[0],
          "FlashDiffusion": lambda q, k, v: FlashDiffusion(q, k, v, beta=0.9, alpha=0.5)}[op]

    def grads(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        ins = [x.to(dtype).requires_grad_() for x in (Q, K, V)]
        return torch.autograd.grad(fn(*ins), ins, G.to(dtype))

    for name, got, ref in zip(("dQ", "dK", "dV"), grads(torch.float32), grads(torch.float64), strict=True):
        assert_close(got, ref, torch.float32, name)


def test_matmat_sym_tiles_must_nest(monkeypatch):
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "triton")
    monkeypatch.setattr(tiles, "pick_config", lambda job, *a: tiles.TileConfig(16, 32, 1))
    X = points(40, 2, torch.float32)
    with pytest.raises(RuntimeError, match="multiple of block_n"):
        tiles.gaussian_matmat_sym(X, X, 0.5)


def assert_lse(lse: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """A log-sum-exp is checked absolutely, to TOLERANCE × (1 + its largest magnitude): near 0 a
    relative check would be meaningless, and an absolute error in lse is a relative error in
    the partition sum."""
    assert lse.shape == expected.shape and lse.dtype == dtype, what
    err = (lse.double() - expected).abs().max().item()
    bound = TOLERANCE[dtype] * (1 + expected.abs().max().item())
    assert err <= bound, f"{what}: error {err:.3g} > {bound:.3g} ({dtype})"


def dense_softmax(Q, K, V, beta, log_bias):
    s = -beta * dense_d2(Q, K) + (log_bias.double()[None, :] if log_bias is not None else 0.0)
    return torch.softmax(s, 1) @ V.double(), torch.logsumexp(s, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (37, 130, 3, 5), (130, 37, 17, 16), (19, 23, 2, 70)])
def test_softmax_apply(shape, bias, dtype, backend, nan_alloc):
    nq, nk, d, m = shape
    Q, K, V = points(nq, d, dtype), points(nk, d, dtype), points(nk, m, dtype)
    log_bias = points(nk, 1, dtype).view(-1) if bias else None
    beta = 2.0 / d
    out, lse = tiles.gaussian_softmax_apply(Q, K, V, beta, log_bias=log_bias)
    expected, expected_lse = dense_softmax(Q, K, V, beta, log_bias)
    assert_close(out, expected, dtype, "softmax out")
    assert_lse(lse, expected_lse, dtype, "softmax lse")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_far_queries(dtype, backend, nan_alloc):
    """Queries 40 and 1e4 units away: every score is hugely negative, and the online max keeps
    the softmax exact (no 0/0). At 40 the float32 distances carry ~1e-7·‖q‖² absolute error,
    hence the looser float32 bound; at 1e4 the check is a convex combination of V: no NaN, rows
    of a constant V stay that constant."""
    K, V, bias = points(45, 3, dtype), points(45, 4, dtype), points(45, 1, dtype).view(-1)
    Q = points(21, 3, dtype) + 40.0
    out, lse = tiles.gaussian_softmax_apply(Q, K, V, 1.0, log_bias=bias)
    expected, expected_lse = dense_softmax(Q, K, V, 1.0, bias)
    tol = 1e-10 if dtype == torch.float64 else 2e-3
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert (out.double() - expected).norm() <= tol * expected.norm()
    assert (lse.double() - expected_lse).abs().max() <= tol * expected_lse.abs().max()
    const = torch.full((45, 3), 2.5, dtype=dtype, device=DEVICE)
    out, lse = tiles.gaussian_softmax_apply(Q + 1e4, K, const, 3.0)
    assert torch.isfinite(out).all() and (lse < -1e7).all()
    torch.testing.assert_close(out, torch.full_like(out, 2.5), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_zero_weights(dtype, backend, nan_alloc):
    """log_bias −inf gives weight 0; a query block whose whole first key tile weighs 0 is exact;
    with every weight 0, out is 0 and lse −inf."""
    Q, K, V = points(20, 2, dtype), points(40, 2, dtype), points(40, 3, dtype)
    bias = points(40, 1, dtype).view(-1)
    bias[:20] = -math.inf
    out, lse = tiles.gaussian_softmax_apply(Q, K, V, 0.5, log_bias=bias)
    expected, expected_lse = dense_softmax(Q, K[20:], V[20:], 0.5, bias[20:])
    assert_close(out, expected, dtype, "softmax out with zero weights")
    assert_lse(lse, expected_lse, dtype, "softmax lse with zero weights")
    out, lse = tiles.gaussian_softmax_apply(Q, K, V, 0.5, log_bias=torch.full_like(bias, -math.inf))
    assert (out == 0).all() and (lse == -math.inf).all()


def dense_knn(Q, K, k, exclude_self):
    """(dist2, index) sorted by (distance, index): ties to the smaller index."""
    d2 = dense_d2(Q, K)
    if exclude_self:
        d2.fill_diagonal_(math.inf)
    idx = torch.arange(K.shape[0], device=K.device).expand_as(d2)
    order = torch.sort(d2, dim=1, stable=True).indices[:, :k]
    return d2.gather(1, order), idx.gather(1, order)


KNN_CASES = [  # (Nq, Nk, d), k, exclude_self
    ((1, 1, 1), 1, False), ((37, 37, 3), 36, True), ((37, 37, 3), 37, False), ((130, 130, 2), 5, True),
    ((130, 37, 17), 5, False), ((20, 45, 70), 7, False), ((37, 130, 2), 1, False), ((45, 45, 1), 1, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,exclude_self", KNN_CASES)
def test_knn(shape, k, exclude_self, dtype, backend, nan_alloc):
    nq, nk, d = shape
    K = points(nk, d, dtype)
    Q = K if exclude_self else points(nq, d, dtype)
    dist, index = tiles.knn(Q, K, k, exclude_self=exclude_self)
    expected_d, expected_i = dense_knn(Q, K, k, exclude_self)
    assert dist.dtype == dtype and index.dtype == torch.int64 and index.shape == (nq, k)
    if dtype == torch.float64:
        assert_close(dist, expected_d, dtype, "knn distances")
        assert torch.equal(index, expected_i)
    else:
        # ‖q‖² + ‖k‖² − 2 q·k in float32 is off by ~1e-7 (‖q‖² + ‖k‖²) absolutely, so close
        # neighbours may swap: distances within that, and the indices' true distances too
        scale = 1e-5 * ((Q.double() ** 2).sum(1, keepdim=True) + (K.double() ** 2).sum(1).max())
        assert ((dist.double() - expected_d).abs() <= scale).all(), "knn distances"
        assert ((dense_d2(Q, K).gather(1, index) - expected_d).abs() <= scale).all(), "distances of the knn indices"
        assert (index.sort(1).values.diff(dim=1) > 0).all(), "repeated neighbour"
        if exclude_self:
            assert (index != torch.arange(nq, device=DEVICE)[:, None]).all(), "self among the neighbours"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_ties(dtype, exclude_self, backend, nan_alloc):
    """Integer points with many duplicates: distances are exact in both dtypes and many tie;
    ties go to the smaller index, across tile boundaries too."""
    K = torch.randint(0, 3, (50, 2), device=DEVICE).to(dtype)
    dist, index = tiles.knn(K, K, 12, exclude_self=exclude_self)
    expected_d, expected_i = dense_knn(K, K, 12, exclude_self)
    assert torch.equal(dist.double(), expected_d)
    assert torch.equal(index, expected_i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,n_eps", [(1, 1), (37, 64), (130, 5)])
def test_bgh_sums(n, n_eps, dtype, backend, nan_alloc):
    X = points(n, 3, dtype)
    eps = torch.logspace(-2, 2, n_eps, dtype=torch.float64, device=DEVICE).to(dtype)
    out = tiles.bgh_sums(X, eps)
    d2 = dense_d2(X, X)
    expected = torch.stack([torch.exp(-d2 / e).sum() for e in eps.double()])
    assert out.dtype == torch.float64 and out.shape == (n_eps,)
    assert_close(out, expected, dtype, "bgh_sums")


def test_reference_chunks(monkeypatch: pytest.MonkeyPatch):
    """Blocks of 4 x 64 entries: the references cross row and column blocks (online softmax,
    kNN merges, accumulation) and still match the dense formulas."""
    monkeypatch.setattr(reference, "_BLOCK_ELEMS", 256)
    assert all(
        (r.stop - r.start) * (c.stop - c.start) <= 256 for r, c in reference._blocks(130, 70)
    ) and sum((r.stop - r.start) * (c.stop - c.start) for r, c in reference._blocks(130, 70)) == 130 * 70
    Q, K, V = points(70, 3, torch.float64), points(130, 3, torch.float64), points(130, 5, torch.float64)
    bias = points(130, 1, torch.float64).view(-1)
    G = torch.exp(-0.4 * dense_d2(Q, K))
    assert_close(reference.gaussian_matmat_ref(Q, K, V, 0.4), G @ V, torch.float64, "matmat_ref")
    assert_close(reference.gaussian_rowsum_ref(Q, K, 0.4), G.sum(1), torch.float64, "rowsum_ref")
    out, lse = reference.gaussian_softmax_apply_ref(Q + 20, K, V, 0.4, log_bias=bias)
    expected, expected_lse = dense_softmax(Q + 20, K, V, 0.4, bias)
    assert_close(out, expected, torch.float64, "softmax_ref")
    assert_lse(lse, expected_lse, torch.float64, "softmax_ref lse")
    dist, index = reference.knn_ref(Q, K, 9)
    expected_d, expected_i = dense_knn(Q, K, 9, False)
    assert_close(dist, expected_d, torch.float64, "knn_ref")
    assert torch.equal(index, expected_i)
    eps = torch.tensor([0.3, 3.0], dtype=torch.float64)
    d2 = dense_d2(K, K)
    assert_close(reference.bgh_sums_ref(K, eps), torch.stack([torch.exp(-d2 / e).sum() for e in eps]), torch.float64, "bgh_ref")


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(1, 40), d=st.integers(1, 5), m=st.integers(1, 4), beta=st.floats(0.05, 5.0), seed=st.integers(0, 2**16)
)
def test_identities(n, d, m, beta, seed):
    """On the Triton kernels: row sums are the product with a column of ones; the symmetric
    kernel equals the plain one; the product is linear in V; softmax with log_bias log w is
    the w-weighted product normalised by the w-weighted row sums."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLASHMARKOV_BACKEND", "triton")
        g = torch.Generator(device="cpu").manual_seed(seed)
        X = torch.randn(n, d, generator=g, dtype=torch.float64).to(DEVICE)
        V = torch.randn(n, m, generator=g, dtype=torch.float64).to(DEVICE)
        w = 0.5 + torch.rand(n, generator=g, dtype=torch.float64).to(DEVICE)
        plain = tiles.gaussian_matmat(X, X, V, beta, row_scale=w, col_scale=w)
        assert_close(tiles.gaussian_matmat_sym(X, V, beta, scale=w), plain, torch.float64, "sym vs plain")
        ones = torch.ones(n, 1, dtype=torch.float64, device=DEVICE)
        assert_close(tiles.gaussian_rowsum(X, X, beta, col_scale=w), tiles.gaussian_matmat(X, X, w[:, None] * ones, beta).view(-1), torch.float64, "rowsum")
        out, _ = tiles.gaussian_softmax_apply(X, X, V, beta, log_bias=w.log())
        weighted = tiles.gaussian_matmat(X, X, V, beta, col_scale=w) / tiles.gaussian_rowsum(X, X, beta, col_scale=w)[:, None]
        assert_close(out, weighted, torch.float64, "softmax vs normalised product")


OPS = {
    "gaussian_matmat": lambda Q, K, V, b: (tiles.gaussian_matmat_op, (Q, K, V, 0.3, b[0], b[1], b[2], b[3])),
    "gaussian_rowsum": lambda Q, K, V, b: (tiles.gaussian_rowsum_op, (Q, K, 0.3, b[1], b[2], b[3])),
    "gaussian_matmat_sym": lambda Q, K, V, b: (tiles.gaussian_matmat_sym_op, (K, V, 0.3, b[1], b[3])),
    "gaussian_softmax_apply": lambda Q, K, V, b: (tiles.gaussian_softmax_apply_op, (Q, K, V, 0.3, b[1])),
    "knn": lambda Q, K, V, b: (tiles.knn_op, (K, K, 3, True)),
    "bgh_sums": lambda Q, K, V, b: (tiles.bgh_sums_op, (K, torch.tensor([0.5, 2.0], dtype=torch.float64))),
}


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name, monkeypatch: pytest.MonkeyPatch):
    """The custom ops (reference path on CPU) pass torch.library.opcheck: schema, fake, AOT dispatch
    (the V-gradients of matmat and softmax-apply: ``test_value_gradients``)."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "reference")
    Q, K, V = points(7, 2, torch.float64), points(9, 2, torch.float64), points(9, 3, torch.float64)
    extras = (positive(7, torch.float64), positive(9, torch.float64), positive(7, torch.float64), positive(9, torch.float64))
    op, args = OPS[name](Q, K, V, extras)
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_compile(monkeypatch: pytest.MonkeyPatch):
    """One fullgraph torch.compile over every function (reference path on CPU): no graph break,
    the same values as eager."""
    monkeypatch.setenv("FLASHMARKOV_BACKEND", "reference")
    X, V = points(30, 3, torch.float64), points(30, 2, torch.float64)
    eps = torch.tensor([0.5, 2.0], dtype=torch.float64)

    def everything(X, V):
        q = tiles.gaussian_rowsum(X, X, 0.7)
        r = q.rsqrt()
        out = tiles.gaussian_matmat_sym(X, V, 0.7, scale=r) + tiles.gaussian_matmat(X, X, V, 0.7, row_scale=r, col_scale=r)
        soft, lse = tiles.gaussian_softmax_apply(X, X, V, 0.7, log_bias=-q.log())
        dist, index = tiles.knn(X, X, 4, exclude_self=True)
        return out, soft, lse, dist, index, tiles.bgh_sums(X, eps)

    torch._dynamo.reset()
    compiled = torch.compile(everything, fullgraph=True, backend="aot_eager")(X, V)
    for got, want in zip(compiled, everything(X, V)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def _bad_calls():
    Q, K, V = points(5, 2, torch.float32), points(6, 2, torch.float32), points(6, 3, torch.float32)
    ok = torch.ones(6, device=DEVICE)  # on the points' device: each case's own check answers, not the device check
    eps = torch.tensor([1.0], device=DEVICE)
    return [
        ("dtype", TypeError, "Q has dtype", lambda: tiles.gaussian_matmat(Q.half(), K, V, 1.0)),
        ("bf16", TypeError, "X has dtype", lambda: tiles.gaussian_matmat_sym(K.bfloat16(), V, 1.0)),
        ("mixed", TypeError, "K has dtype", lambda: tiles.gaussian_rowsum(Q, K.double(), 1.0)),
        ("not tensor", TypeError, "Q must be a torch.Tensor", lambda: tiles.knn(Q.tolist(), K, 2)),
        ("1-D", ValueError, "Q must have at least 2", lambda: tiles.gaussian_matmat(Q[0], K, V, 1.0)),
        ("3-D", ValueError, "K must be 2-D", lambda: tiles.gaussian_matmat(Q, K[None], V, 1.0)),
        ("empty", ValueError, "K must be 2-D", lambda: tiles.gaussian_rowsum(Q, K[:0], 1.0)),
        ("features", ValueError, "K has 3 features", lambda: tiles.gaussian_matmat(Q, points(6, 3, torch.float32), V, 1.0)),
        ("V rows", ValueError, "V must have shape (6, m)", lambda: tiles.gaussian_matmat(Q, K, V[:5], 1.0)),
        ("V 1-D", ValueError, "V must have", lambda: tiles.gaussian_softmax_apply(Q, K, V[:, 0], 1.0)),
        ("V dtype", TypeError, "V has dtype", lambda: tiles.gaussian_matmat(Q, K, V.double(), 1.0)),
        ("beta 0", ValueError, "beta=0.0", lambda: tiles.gaussian_matmat(Q, K, V, 0.0)),
        ("beta nan", ValueError, "beta=nan", lambda: tiles.gaussian_rowsum(Q, K, math.nan)),
        ("beta bool", TypeError, "beta must be a real number", lambda: tiles.gaussian_matmat_sym(K, V, True)),
        ("beta tensor", TypeError, "beta must be a real number", lambda: tiles.gaussian_matmat(Q, K, V, torch.tensor(1.0))),
        ("row_scale", ValueError, "row_scale has shape (6,)", lambda: tiles.gaussian_matmat(Q, K, V, 1.0, row_scale=ok)),
        ("col_scale", ValueError, "col_scale has shape (5,)", lambda: tiles.gaussian_rowsum(Q, K, 1.0, col_scale=ok[:5])),
        ("scale dtype", TypeError, "scale has dtype", lambda: tiles.gaussian_matmat_sym(K, V, 1.0, scale=ok.double())),
        ("one sigma", ValueError, "sigma_q and sigma_k", lambda: tiles.gaussian_matmat(Q, K, V, 1.0, sigma_k=ok)),
        ("sigma shape", ValueError, "sigma_q has shape (6,)", lambda: tiles.gaussian_rowsum(Q, K, 1.0, sigma_q=ok, sigma_k=ok)),
        ("sigma sym", ValueError, "sigma has shape (5,)", lambda: tiles.gaussian_matmat_sym(K, V, 1.0, sigma=ok[:5])),
        ("log_bias", ValueError, "log_bias has shape (5,)", lambda: tiles.gaussian_softmax_apply(Q, K, V, 1.0, log_bias=ok[:5])),
        ("k 0", ValueError, "k=0", lambda: tiles.knn(Q, K, 0)),
        ("k > N", ValueError, "k=7", lambda: tiles.knn(Q, K, 7)),
        ("k > N-1", ValueError, "k=6", lambda: tiles.knn(K, K, 6, exclude_self=True)),
        ("k > 64", ValueError, "k=65", lambda: tiles.knn(points(70, 2, torch.float32), points(70, 2, torch.float32), 65)),
        ("k float", TypeError, "k must be an int", lambda: tiles.knn(Q, K, 2.0)),
        ("k bool", TypeError, "k must be an int", lambda: tiles.knn(Q, K, True)),
        ("exclude_self", ValueError, "exclude_self=True needs", lambda: tiles.knn(Q, K, 2, exclude_self=True)),
        ("exclude flag", TypeError, "exclude_self must be a bool", lambda: tiles.knn(Q, K, 2, exclude_self=1)),
        ("eps 2-D", ValueError, "eps must be 1-D", lambda: tiles.bgh_sums(K, eps[None])),
        ("eps many", ValueError, "eps must be 1-D with 1 to 64", lambda: tiles.bgh_sums(K, torch.ones(65, device=DEVICE))),
        ("eps <= 0", ValueError, "eps must be finite and > 0, got -1.0", lambda: tiles.bgh_sums(K, torch.tensor([1.0, -1.0], device=DEVICE))),
        ("eps inf", ValueError, "eps must be finite", lambda: tiles.bgh_sums(K, torch.tensor([math.inf], device=DEVICE))),
        ("eps int", TypeError, "eps has dtype", lambda: tiles.bgh_sums(K, torch.tensor([1], device=DEVICE))),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())), ids=[c[0] for c in _bad_calls()])
def test_bad_input(case, backend):
    _, error, message, call = _bad_calls()[case]
    with pytest.raises(error, match=re.escape(message)):
        call()
