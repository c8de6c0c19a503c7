"""Top eigenpairs of a symmetric operator given only as a block product ``V -> M V``.

``block_eigsh`` is LOBPCG (Knyazev 2001) in the robust form of Hetmaniuk & Lehoucq (2006) and
Duersch et al. (2018): the search space [X, W, P] (Ritz vectors, residuals, previous directions)
is kept orthonormal explicitly, so the Rayleigh–Ritz step is a standard float64 ``eigh`` of a
(≤ 3b) × (≤ 3b) matrix. X and P are orthonormal combinations of the previous basis (P from
Ritz coefficients orthogonal to X's, Hetmaniuk–Lehoucq); only W, the one block multiplied
afresh each iteration, is projected (two passes) and orthonormalised (SVQB with rank dropping).
M X and M P are updated by the same O(1) combinations as X and P, so product errors are never
amplified (projecting P instead shrinks it to the residual's size and divides M P's errors by it).

Precision scheme. Vectors, Gram matrices and the Rayleigh–Ritz problem are float64 throughout.
The products run in a sequence of *stages*, cheapest first: each stage is a product callable and a
residual floor. The solver stays in a stage until the wanted residuals reach max(tol, floor) or
stop improving, then recomputes M X with the next stage's product, drops P and goes on. The last
stage decides convergence: its residuals ‖M u − λ u‖ are recomputed from a fresh product before
the solver returns. ``DiffusionMap`` uses float32 products then float64 products for float64
data on the CPU or when tol < 1e-5 (below what float32 products reach reliably), and float32
products only (float32 at the end) otherwise, e.g. on the GPU at tol 1e-5. At a product's noise
floor the implicitly updated residuals keep falling while fresh ones do not; the solver then
gives up after ``VERIFY_PATIENCE`` failed verifications (``converged=False``).

A known eigenvector (the trivial u_0 ∝ d^½ of a diffusion operator) is deflated exactly: every
block is projected onto its orthogonal complement, so it is never recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
MatMat = Callable[[Tensor], Tensor]

_DROP = 1e-12  # relative Gram eigenvalue below which SVQB drops a direction as dependent


@dataclass(frozen=True)
class Stage:
    """One precision stage: ``matmat`` maps a float64 (n, m) block to M·block (any float dtype);
    the solver leaves the stage once the wanted residuals are below ``floor`` (0: never early)."""

    matmat: MatMat
    floor: float = 0.0
    name: str = "float64"


@dataclass
class EigResult:
    """``eigenvalues`` (k,) descending, ``eigenvectors`` (n, k) orthonormal (float64), their
    residuals ‖M u − λ u‖ from a fresh product of the last stage, and the work done."""

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    iterations: int
    products: int
    converged: bool


def _project(V: Tensor, bases: Sequence[Tensor]) -> list[Tensor]:
    """Two passes of V ← V − Q (Qᵀ V) for every orthonormal Q in ``bases``; returns the total
    coefficient of each basis so that the same update can be applied to M V."""
    coeffs = [V.new_zeros(Q.shape[1], V.shape[1]) for Q in bases]
    for _ in range(2):
        for i, Q in enumerate(bases):
            c = Q.T @ V
            V.addmm_(Q, c, alpha=-1.0)
            coeffs[i] += c
    return coeffs


def _small_eigh(H: Tensor) -> tuple[Tensor, Tensor]:
    """Ascending eigenpairs of a small symmetric float64 matrix, solved on the CPU (LAPACK is
    much faster than a GPU launch at these sizes) and returned on H's device."""
    theta, Z = torch.linalg.eigh(((H + H.T) / 2).cpu())
    return theta.to(H.device), Z.to(H.device)


def _svqb(V: Tensor) -> Tensor:
    """The (m, r) transform T with V T orthonormal, dropping directions whose scaled Gram
    eigenvalue is below ``_DROP`` (r ≤ m; r = 0 when V is numerically zero)."""
    norms = V.norm(dim=0)
    keep = norms > 0
    D = torch.where(keep, 1.0 / torch.where(keep, norms, 1.0), 0.0)
    G = (V.T @ V) * D[:, None] * D[None, :]
    theta, Z = _small_eigh(G)
    good = theta > _DROP * max(theta.max().item(), 1e-300)
    return (D[:, None] * Z[:, good]) / theta[good].sqrt()[None, :]


def _combine(blocks: Sequence[Tensor], coeffs: Sequence[Tensor]) -> Tensor:
    """Σ_i blocks[i] @ coeffs[i], accumulated in place (no temporary blocks)."""
    out = blocks[0] @ coeffs[0]
    for B, c in zip(blocks[1:], coeffs[1:]):
        out.addmm_(B, c)
    return out


def _orthonormalise(V: Tensor, bases: Sequence[Tensor]) -> Tensor:
    """V projected away from ``bases`` and orthonormalised (dependent columns dropped)."""
    V = V.clone()
    _project(V, bases)
    V = V @ _svqb(V)
    _project(V, bases)
    return V @ _svqb(V)


def dense_eigsh(A: Tensor, k: int, *, deflate: Tensor | None = None) -> EigResult:
    """Top ``k`` eigenpairs of the dense symmetric ``A`` (float64 ``eigh``), excluding the unit
    vector ``deflate`` (pushed below the spectrum). Residuals are computed from ``A``."""
    A = (A.double() + A.double().T) / 2
    B = A
    if deflate is not None:
        u = deflate.to(A.device, torch.float64) / deflate.double().norm()
        Au = A @ u
        # (I − u uᵀ) A (I − u uᵀ) − c u uᵀ, with c above the spectrum: u drops to the bottom
        c = (u @ Au) - (A.abs().sum(1).max() + 1.0)
        B = A - torch.outer(u, Au) - torch.outer(Au, u) + c * torch.outer(u, u)
    evals, evecs = torch.linalg.eigh((B + B.T) / 2)
    lam, U = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    res = (A @ U - U * lam[None, :]).norm(dim=0)
    return EigResult(lam, U, res, iterations=0, products=0, converged=True)


VERIFY_PATIENCE = 3  # failed verifications in the last stage, none halving the residual, before giving up
BLOCK_MEMORY = 1.5e9  # bytes the default block width may spend on ~10 float64 (n, b) blocks


def default_block(k: int, n: int) -> int:
    """Block width for ``k`` wanted pairs of an n × n operator: 2k (at least k + 4) rounded up to
    a multiple of 8 — a product's cost hardly depends on its width, while guard vectors widen
    the convergence gap (swiss roll, k = 10: 37 iterations at b = 16, 28 at 24, 24 at 32) —
    narrowed towards k + 4 when ~10 float64 blocks would exceed ``BLOCK_MEMORY``. (Not rounded
    up to the product's padded width: at b = 32 the knn-bandwidth swiss roll, N = 200 000,
    k = 10, stalled at residual 1.2e-3 after 71 iterations on an H100, where b = 24 reaches
    9.8e-6 in 183; benchmarks/results/diffusion_e2e.json.)"""
    least = 8 * math.ceil((k + 4) / 8)
    cap = 8 * int(BLOCK_MEMORY / (10 * 8 * n) // 8)
    return max(least, min(8 * math.ceil(max(k + 4, 2 * k) / 8), cap))


class _Progress:
    """A rich progress bar over residual decades (from the first residual down to ``tol``)."""

    def __init__(self, enabled: bool, tol: float) -> None:
        self.bar = None
        self.tol = tol
        self.start: float | None = None
        if not enabled:
            return
        try:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:  # rich is a dependency of the cli extra only
            self.bar = "print"
            return
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task("eigensolver", total=1.0)

    def update(self, it: int, stage: str, res: float, n_conv: int, k: int) -> None:
        if self.bar is None:
            return
        if self.start is None:
            self.start = max(res, self.tol * 10)
        span = math.log(self.start / self.tol)
        done = min(1.0, max(0.0, math.log(self.start / max(res, 1e-300)) / span))
        text = f"eigensolver it {it:4d} [{stage}] max residual {res:.2e} converged {n_conv}/{k}"
        if self.bar == "print":
            if it % 10 == 0:
                print(text, flush=True)
        else:
            self.bar.update(self.task, completed=done, description=text)

    def close(self) -> None:
        if self.bar is not None and self.bar != "print":
            self.bar.stop()


def block_eigsh(
    stages: MatMat | Sequence[Stage],
    n: int,
    k: int,
    *,
    tol: float = 1e-6,
    deflate: Tensor | None = None,
    block: int | None = None,
    maxiter: int = 1000,
    X0: Tensor | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    patience: int = 25,
    verbose: bool = False,
) -> EigResult:
    """The ``k`` largest eigenpairs of a symmetric n × n operator M, to ‖M u − λ u‖ ≤ ``tol``.

    Args:
        stages: the product ``V -> M V`` (one callable) or a list of ``Stage``s, cheapest first
            (module docstring: the precision scheme). Blocks are passed as float64 (n, m).
        n, k: the operator's size and the number of wanted pairs (1 ≤ k ≤ n, minus 1 with ``deflate``).
        tol: residual tolerance; M is assumed normalised (‖M‖ ≈ 1), so it is absolute.
        deflate: a known eigenvector (n,) of M; products are projected onto its orthogonal
            complement, where the result lies.
        block: block width (default ``default_block(k, n)``).
        maxiter: iterations over all stages.
        X0: (n, ≥ k) starting vectors (random normal otherwise).
        patience: iterations without halving the worst wanted residual before a stage is left
            (or, in the last stage, the solver gives up and reports ``converged=False``; it
            also gives up after ``VERIFY_PATIENCE`` fresh-product verifications in a row that
            fail without halving the best verified residual: the product's noise floor).
        verbose: show a progress bar.

    Returns:
        ``EigResult`` with float64 tensors on ``device``.
    """
    if callable(stages):
        stages = [Stage(stages)]
    stages = list(stages)
    device = torch.device(device)
    b = block or default_block(k, n)
    avail = n - (deflate is not None)
    if k < 1 or k > avail:
        raise ValueError(f"k={k}: need 1 <= k <= {avail} (n={n}{' minus the deflated vector' if deflate is not None else ''})")
    b = min(max(b, k), avail)
    bases: list[Tensor] = []
    if deflate is not None:
        u0 = deflate.to(device, torch.float64).reshape(n, 1)
        bases = [u0 / u0.norm()]
    if 3 * b + 1 > avail:
        # too small for a three-block search space: the dense matrix is cheap at this size
        eye = torch.eye(n, dtype=torch.float64, device=device)
        A = torch.cat([stages[-1].matmat(eye[:, i : i + 256]).double() for i in range(0, n, 256)], 1)
        return dense_eigsh(A, k, deflate=None if deflate is None else bases[0][:, 0])

    gen = torch.Generator(device="cpu").manual_seed(seed)
    X = torch.randn(n, b, generator=gen, dtype=torch.float64).to(device)
    if X0 is not None:
        m = min(X0.shape[1], b)
        X[:, :m] = X0[:, :m].to(device, torch.float64)
    X = _orthonormalise(X, bases)
    if X.shape[1] < b:
        raise ValueError("the starting block is rank deficient")

    def product(si: int, V: Tensor) -> Tensor:
        out = stages[si].matmat(V).to(torch.float64)
        if bases:  # u0 is an eigenvector: the complement is invariant, keep products in it
            out.addmm_(bases[0], bases[0].T @ out, alpha=-1.0)
        return out

    def rayleigh_ritz(X: Tensor, AX: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        theta, C = _small_eigh(X.T @ AX)
        C = C.flip(1)
        return theta.flip(0), X @ C, AX @ C

    progress = _Progress(verbose, tol)
    si = 0
    products = 1
    lam, X, AX = rayleigh_ritz(X, product(si, X))
    P = AP = None
    best, since = math.inf, 0
    best_fresh, fails = math.inf, 0
    converged = False
    it = 0
    try:
        while it < maxiter:
            it += 1
            R = AX - X * lam[None, :]
            res = R.norm(dim=0)
            wanted = res[:k].max().item()
            n_conv = int((res[:k] <= tol).sum())
            progress.update(it, stages[si].name, wanted, n_conv, k)
            last = si == len(stages) - 1
            if wanted < 0.5 * best:
                best, since = wanted, 0
            else:
                since += 1
            stalled = since >= patience
            if wanted <= max(tol, stages[si].floor) or stalled:
                # verify (or move to the next stage) with a fresh product of the next stage
                si_next = si if last else si + 1
                AX = product(si_next, X)
                products += 1
                lam, X, AX = rayleigh_ritz(X, AX)
                res = (AX - X * lam[None, :]).norm(dim=0)
                fresh = res[:k].max().item()
                if last and fresh > tol and not stalled:
                    # the updated residuals sit below the product's noise floor while the fresh
                    # ones do not: a verification that does not halve the best verified residual
                    # counts as a stall (else this would loop to maxiter at the floor)
                    fails = 0 if fresh < 0.5 * best_fresh else fails + 1
                    best_fresh = min(best_fresh, fresh)
                    stalled = fails >= VERIFY_PATIENCE
                if (last and stalled) or (fresh <= tol and si_next == len(stages) - 1):
                    converged = fresh <= tol  # verified by a fresh product of the last stage
                    break
                si, P, AP = si_next, None, None
                best, since = fresh, 0
                continue
            active = res > tol
            # W, the only block multiplied afresh, is made orthogonal to X and P (not the other
            # way round): projecting the old P against W would shrink it to the size of the
            # correction (~ the residual) and its implicitly updated A·P with it, so renormalising
            # would amplify A·P's rounding by 1 / residual — with float32 products (errors ~1e-7,
            # or ~1e-4 before the tiles' accumulation fix) the residuals then climb instead of fall
            W = _orthonormalise(R[:, active], bases + [X] + ([] if P is None else [P]))
            if W.shape[1] == 0:
                continue
            AW = product(si, W)
            products += 1
            del R
            blocks, ablocks = [X, W], [AX, AW]
            if P is not None:
                blocks.append(P)
                ablocks.append(AP)
            # Rayleigh–Ritz on the orthonormal S = [X, W, P] without concatenating it (memory)
            H = torch.cat([torch.cat([Bi.T @ ABj for ABj in ablocks], 1) for Bi in blocks], 0)
            theta, C = _small_eigh(H)
            theta, C = theta.flip(0)[:b], C.flip(1)[:, :b]
            # P = S·C_P with C_P orthonormal and orthogonal to C in coefficient space (Hetmaniuk &
            # Lehoucq 2006): S orthonormal makes P orthonormal and orthogonal to the new X for
            # free, and A·P = A S·C_P has O(1) coefficients — product errors are not amplified
            C_P = C[:, res > tol].clone()
            C_P[: X.shape[1]] = 0.0
            _project(C_P, [C])
            C_P = C_P @ _svqb(C_P)
            parts = list(torch.split(torch.cat([C, C_P], 1), [B.shape[1] for B in blocks], 0))
            XP = _combine(blocks, parts)
            AXP = _combine(ablocks, parts)
            X, P = XP[:, :b], (XP[:, b:] if C_P.shape[1] else None)
            AX, AP = AXP[:, :b], (AXP[:, b:] if C_P.shape[1] else None)
            lam = theta
            del blocks, ablocks, W, AW, XP, AXP
    finally:
        progress.close()
    return EigResult(lam[:k], X[:, :k], res[:k], iterations=it, products=products, converged=converged)
