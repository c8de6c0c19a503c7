"""α-diffmax in plain PyTorch: the test oracle and the path CPU tensors take.

    X' = (1 − α) z,   p_i = [X'_i − τ]_+ ^ (1/(1−α)),   τ such that Σ_i p_i = 1      (0 < α < 1)

τ is found by bisection in the bracket [max X' − 1, max X' − N^−(1−α)] (N = number of finite
entries), ``n_iter`` halvings keeping Σp(τ_lo) ≥ 1, then p(τ_lo), renormalised by its sum with
``ensure_sum_one`` (../math.md §3). Entries equal to −inf get exactly 0; a row without a finite
entry gives zeros. Half inputs are computed in float32, float64 in float64; the result has the
input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor
Alpha = float | Tensor | Callable[[], float | Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 data, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resolve_alpha(alpha: Alpha, X: Tensor, dim: int) -> Tensor:
    """α as a tensor of the compute dtype on X's device: a 0-d tensor for a float, or the given
    tensor (broadcastable to X with ``dim`` of size 1); a callable is called first."""
    if callable(alpha) and not isinstance(alpha, Tensor):
        alpha = alpha()
    acc = compute_dtype(X.dtype)
    if isinstance(alpha, Tensor):
        a = alpha.to(device=X.device, dtype=acc)
        return a.reshape((1,) * (X.dim() - a.dim()) + tuple(a.shape)) if a.dim() else a
    return torch.full((), float(alpha), dtype=acc, device=X.device)


def _alpha_rows(alpha: Tensor, X: Tensor, dim: int) -> Tensor:
    """α broadcast to X's shape with ``dim`` reduced to 1 (the per-row shape), keepdim layout."""
    if alpha.dim() == 0:
        return alpha
    return alpha.expand(*[1 if i == dim else s for i, s in enumerate(X.shape)])


def diffmax_bisect_ref(
    X: Tensor,
    alpha: Alpha = 0.9,
    dim: int = -1,
    n_iter: int = 50,
    ensure_sum_one: bool = True,
    *,
    return_tau: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """α-diffmax of ``X`` along ``dim`` by ``n_iter`` bisection halvings.

    Args:
        X: float16/bfloat16/float32/float64 scores of any shape; −inf marks masked entries; a
            row with a NaN or +inf gives NaN (p and τ), as softmax propagates them.
        alpha: 0 < α < 1; a float, a tensor broadcastable to X with ``dim`` of size 1, or a
            zero-argument callable returning one.
        dim: the normalised axis.
        n_iter: bisection halvings (50 reach float64 resolution of a bracket of width ≤ 1).
        ensure_sum_one: divide p by its sum at the final τ.
        return_tau: also return τ (keepdim shape, compute dtype; −inf for rows with no finite entry).

    Returns:
        p with X's shape and dtype (and τ with ``return_tau``).
    """
    dim = dim % X.dim()
    acc = compute_dtype(X.dtype)
    if X.numel() == 0:
        tau = torch.full([1 if i == dim else s for i, s in enumerate(X.shape)], -torch.inf, dtype=acc, device=X.device)
        return (X.clone(), tau) if return_tau else X.clone()
    a = _alpha_rows(resolve_alpha(alpha, X, dim), X, dim)
    one_minus = 1.0 - a
    k = 1.0 / one_minus
    x = X.to(acc)
    finite = torch.isfinite(x)
    bad = (~finite & (x != -torch.inf)).any(dim=dim, keepdim=True)  # NaN or +inf: a NaN row
    # masked entries enter as 0 · (1 − α) and leave as −inf: no 0 · ∞ in a gradient of α
    xs = torch.where(finite, torch.where(finite, x, 0.0) * one_minus, -torch.inf)
    n = finite.sum(dim=dim, keepdim=True)
    m = xs.detach().amax(dim=dim, keepdim=True)
    empty = n == 0
    m = torch.where(empty | bad, torch.zeros_like(m), m)

    # the bisection runs on detached values (no graph of n_iter steps)
    xd, kd = xs.detach(), k.detach()
    tau_lo = m - 1.0
    tau_hi = m - n.clamp(min=1).to(acc) ** (-one_minus.detach())
    width = tau_hi - tau_lo
    for _ in range(n_iter):
        width = width / 2
        tau_mid = tau_lo + width
        f_mid = (torch.clamp(xd - tau_mid, min=0) ** kd).sum(dim=dim, keepdim=True) - 1.0
        tau_lo = torch.where(f_mid >= 0, tau_mid, tau_lo)
    if torch.is_grad_enabled() and xs.requires_grad:  # X or α requires a gradient
        tau_lo = _attach_tau(xs, tau_lo, k, dim)
        p = _power(xs - tau_lo, k)
    else:
        p = torch.clamp(xs - tau_lo, min=0) ** k
    if ensure_sum_one:
        total = p.sum(dim=dim, keepdim=True)
        p = p / torch.where(total > 0, total, torch.ones_like(total))
    p = torch.where(bad, torch.nan, p).to(X.dtype)
    if not return_tau:
        return p
    return p, torch.where(bad, torch.nan, torch.where(empty, torch.full_like(tau_lo, -torch.inf), tau_lo))


def _power(y: Tensor, k: Tensor) -> Tensor:
    """[y]_+^k, zero for y <= 0 (and −inf, NaN) with zero derivatives of every order there (a plain
    ``clamp(y, 0) ** k`` has an infinite derivative at 0 for exponents below 1 and an infinite second
    derivative below 2, and 0 · ∞ = NaN in the chain rule)."""
    positive = y > 0
    return torch.where(positive, torch.where(positive, y, 1.0) ** k, 0.0)


def _attach_tau(xs: Tensor, tau: Tensor, k: Tensor, dim: int) -> Tensor:
    """τ with its value unchanged and the derivatives (in xs and k) of the exact root of
    F(τ) = Σ [xs − τ]_+^k − 1: two Newton steps from the bisection's τ, minus themselves detached.
    A Newton step squares the distance to the root (F is smooth where no entry sits at the support's
    edge), so for inputs perturbed by δ two steps from the fixed τ land O(δ⁴) from the perturbed
    root: first and second derivatives are the root's. (With τ held constant, p = y^k / Σ y^k has
    the Jacobian diag(s) − p sᵀ instead of the exact diag(s) − s sᵀ / Σ s, s = p^α; ../math.md §3.)"""
    t = tau
    for _ in range(2):
        y = xs - t
        f = _power(y, k).sum(dim=dim, keepdim=True) - 1.0
        d = _power(y, k - 1.0).sum(dim=dim, keepdim=True)  # −F'(τ) / k
        ok = d > 0
        t = t + torch.where(ok, f / (k * torch.where(ok, d, 1.0)), 0.0)
    return tau + (t - t.detach())


def _phi(v: Tensor, terms: int) -> Tensor:
    """e^v − 1 − v for 0 ≤ v < 2 by its Taylor series v²/2 (1 + v/3 (1 + v/4 (… (1 + v/(terms+1))))):
    positive terms, a few ulps (12 terms for float32, 22 for float64)."""
    b = torch.ones_like(v)
    for j in range(terms + 1, 2, -1):
        b = 1.0 + b * v * (1.0 / j)
    return 0.5 * v * v * b


def diffmax_bisect_bwd_ref(
    p: Tensor, dp: Tensor, alpha: Alpha, dim: int = -1, *, need_alpha_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Gradients of a loss through p = α-diffmax(X) along ``dim``, from p alone (../math.md §3).

        s = p^α [p > 0],   dX = s ⊙ dp − s (Σ s dp) / Σ s
        dα = −[ Σ dp (q − s̃) / (1−α)² − Σ dp (q log q − s̃ H) / (1−α) ],  s̃ = q^α / Σ q^α, H = Σ q log q

    with q = p / Σp (= p for an exact p; the formula's derivative along Σp is ~1/(1−α)², so a
    float32 p, which misses Σp = 1 by ~1e-7, is renormalised first). dα is computed as in the
    row kernels (rows.py), without cancellation: v = −(1−α) log q, w = q (e^v − 1 − v),
    V = Σ q v, W = Σ w, dα = −Σ dp [q (1 + v) W − w (1 + V)] / ((1 + V + W)(1−α)²), an exact
    rewrite of the bracket for Σq = 1 (math.md's form subtracts O(1) terms to get O((1−α)²) ones).

    Returns dX (p's dtype) and dα per row (keepdim shape, compute dtype), or None without
    ``need_alpha_grad``. Rows whose p is all zero get zero gradients.
    """
    dim = dim % p.dim()
    acc = compute_dtype(p.dtype)
    a = _alpha_rows(resolve_alpha(alpha, p, dim), p, dim)
    y, g = p.to(acc), dp.to(acc)
    positive = (y > 0) | torch.isnan(y)  # a NaN row (NaN or +inf scores) gets NaN gradients, as in the kernels
    s = torch.where(positive, y.clamp(min=torch.finfo(acc).tiny) ** a, torch.zeros_like(y))
    s_sum = s.sum(dim=dim, keepdim=True)
    s_sum = torch.where(s_sum > 0, s_sum, torch.ones_like(s_sum))
    sg = (s * g).sum(dim=dim, keepdim=True)
    dX = (s * g - s * (sg / s_sum)).to(p.dtype)
    if not need_alpha_grad:
        return dX, None
    one_minus = 1.0 - a
    total = y.sum(dim=dim, keepdim=True)
    q = y / torch.where(total > 0, total, torch.ones_like(total))
    q_positive = q > 0
    log_q = torch.log(torch.where(q_positive, q, torch.ones_like(q)))
    v = -one_minus * log_q
    series = q * _phi(v, 22 if acc == torch.float64 else 12)
    w = torch.where(v < 2.0, series, torch.exp(a * log_q) - q * (1.0 + v))
    w = torch.where(q_positive, w, torch.zeros_like(w))
    V = (q * v).sum(dim=dim, keepdim=True)
    W = w.sum(dim=dim, keepdim=True)
    E = (g * (q * (1.0 + v) * W - w * (1.0 + V))).sum(dim=dim, keepdim=True) / (1.0 + V + W)
    return dX, -E / one_minus**2


def attention_visible(
    Sq: int, Sk: int, causal: bool, window: tuple[int, int], device: torch.device | str = "cpu"
) -> Tensor:
    """(Sq, Sk) bool: key j visible to query i (../math.md §2). causal: j ≤ i + (Sk − Sq); window
    (wl, wr), −1 unbounded: i + (Sk − Sq) − wl ≤ j ≤ i + (Sk − Sq) + wr."""
    i = torch.arange(Sq, device=device)[:, None] + (Sk - Sq)
    j = torch.arange(Sk, device=device)[None, :]
    visible = torch.ones(Sq, Sk, dtype=torch.bool, device=device)
    wl, wr = window
    if causal:
        visible &= j <= i
    if wl >= 0:
        visible &= j >= i - wl
    if wr >= 0:
        visible &= j <= i + wr
    return visible


def _attention_chunks(q: Tensor, k: Tensor, causal: bool, scale: float, window: tuple[int, int], block_m: int):
    """Yield (query slice, scores in the compute dtype with −inf where not visible, keys of each
    query head, the slice's visibility (rows, Sk)) over chunks of queries holding at most ~2^24
    scores, multiples of ``block_m``."""
    acc = compute_dtype(q.dtype)
    B, Hq, Sq, _ = q.shape
    Sk = k.shape[2]
    kk = k.to(acc).repeat_interleave(Hq // k.shape[1], dim=1)
    rows = max(block_m, (1 << 24) // max(1, B * Hq * Sk) // block_m * block_m)
    for i0 in range(0, Sq, rows):
        sl = slice(i0, min(Sq, i0 + rows))
        visible = attention_visible(Sq, Sk, causal, window, q.device)[sl]
        s = scale * (q[:, :, sl].to(acc) @ kk.transpose(-1, -2))
        yield sl, s.masked_fill(~visible, -torch.inf), kk, visible


def tile_states(p: Tensor, visible: Tensor, block_m: int, block_n: int) -> Tensor:
    """(B, H, ceil(Sq/BM), ceil(Sk/BN)) int8 from weights p (B, H, Sq, Sk) and visibility (Sq, Sk):
    0 = no visible entry, 1 = some nonzero weight, 2 = visible but all weights zero (skippable)."""
    B, H, Sq, Sk = p.shape
    nm, nn = -(-Sq // block_m), -(-Sk // block_n)
    pad = (0, nn * block_n - Sk, 0, nm * block_m - Sq)
    nz = torch.nn.functional.pad(p != 0, pad).view(B, H, nm, block_m, nn, block_n).any(5).any(3)
    vis = torch.nn.functional.pad(visible, pad).view(nm, block_m, nn, block_n).any(3).any(1)
    return torch.where(nz, 1, torch.where(vis, 2, 0)).to(torch.int8)


def diffmax_attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float = 0.5,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    n_iter: int | None = None,
    block: tuple[int, int] = (64, 64),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """O = diffmax_α(scale · Q Kᵀ + masks) V with explicit scores, a chunk of queries at a time.

    q: (B, Hq, Sq, D); k: (B, Hkv, Sk, D); v: (B, Hkv, Sk, Dv); Hkv divides Hq (query head h
    reads key/value head h // (Hq / Hkv)). Rows with no visible key give O = 0. ``n_iter``
    bisection halvings (default 50). Returns O (q's dtype); τ per row (B, Hq, Sq) in units of
    X' = (1 − α) · scale · q·k (compute dtype, −inf for rows with no visible key); 1 / Σ_j
    [X' − τ]_+^(1/(1−α)) per row (the normaliser, 0 for empty rows); and the tile states of
    ``block`` (see ``tile_states``), from which the fraction of skippable tiles follows.
    """
    B, Hq, Sq, D = q.shape
    scale = softmax_scale if softmax_scale is not None else D**-0.5
    acc = compute_dtype(q.dtype)
    vv = v.to(acc).repeat_interleave(Hq // k.shape[1], dim=1)
    out = torch.empty(B, Hq, Sq, v.shape[-1], dtype=acc, device=q.device)
    tau = torch.empty(B, Hq, Sq, dtype=acc, device=q.device)
    rnorm = torch.empty(B, Hq, Sq, dtype=acc, device=q.device)
    states = [torch.zeros(B, Hq, 0, -(-k.shape[2] // block[1]), dtype=torch.int8, device=q.device)]  # Sq = 0: no chunk
    for sl, s, _, visible in _attention_chunks(q, k, causal, scale, window, block[0]):
        p, t = diffmax_bisect_ref(s, alpha, -1, n_iter or 50, return_tau=True)
        out[:, :, sl] = p @ vv
        total = (torch.clamp((1.0 - alpha) * s - t, min=0) ** (1.0 / (1.0 - alpha))).sum(-1)
        tau[:, :, sl] = t.squeeze(-1)
        rnorm[:, :, sl] = torch.where(total > 0, 1.0 / total, torch.zeros_like(total))
        states.append(tile_states(p, visible, *block))
    return out.to(q.dtype), tau, rnorm, torch.cat(states, dim=2)


def diffmax_attention_bwd_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    do: Tensor,
    alpha: float = 0.5,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    n_iter: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of diffmax attention, chunked over queries (../math.md §3):
    dV = Pᵀ dO, dP = dO Vᵀ, dS = s ⊙ dP − s (Σ_j s dP) / Σ_j s with s = P^α [P > 0],
    dQ = scale dS K, dK = scale dSᵀ Q; key/value gradients summed over each GQA group."""
    B, Hq, Sq, D = q.shape
    Hkv = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else D**-0.5
    acc = compute_dtype(q.dtype)
    vv = v.to(acc).repeat_interleave(Hq // Hkv, dim=1)
    dq = torch.empty(B, Hq, Sq, D, dtype=acc, device=q.device)
    dk = torch.zeros(B, Hq, k.shape[2], D, dtype=acc, device=q.device)
    dv = torch.zeros(B, Hq, k.shape[2], v.shape[-1], dtype=acc, device=q.device)
    for sl, s, kk, _ in _attention_chunks(q, k, causal, scale, window, 64):
        p = diffmax_bisect_ref(s, alpha, -1, n_iter or 50)
        g = do[:, :, sl].to(acc)
        ds, _ = diffmax_bisect_bwd_ref(p, g @ vv.transpose(-1, -2), alpha, -1, need_alpha_grad=False)
        dq[:, :, sl] = scale * ds @ kk
        dk += scale * ds.transpose(-1, -2) @ q[:, :, sl].to(acc)
        dv += p.transpose(-1, -2) @ g
    dk = dk.view(B, Hkv, Hq // Hkv, *dk.shape[2:]).sum(2)
    dv = dv.view(B, Hkv, Hq // Hkv, *dv.shape[2:]).sum(2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
