"""``flashmarkov.diffmax``: α-diffmax, the sparse power-law normaliser (0 < α < 1), and fused
sparse attention with it.

    X' = (1 − α) z,   p_i = [X'_i − τ]_+ ^ (1/(1−α)),   τ such that Σ p_i = 1

α-diffmax equals (2 − α)-entmax; α → 1 approaches softmax, α → 0 sparsemax, and lower α gives
more exact zeros (../math.md §3). ``diffmax_bisect``, ``DiffmaxBisectModule``, ``HillMap``,
``TanhMap``, ``ExpMap`` and ``diffmax_bisect_monitored`` keep the diffmax package's names,
without its limits (any row length, float64 on the GPU). CUDA tensors run Triton kernels;
other tensors run the reference (``flashmarkov.diffmax.reference.diffmax_bisect_ref``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import _checks
from .maps import ALPHA_MAX, ALPHA_MIN, AlphaMap, ExpMap, HillMap, TanhMap
from .op import DiffmaxAttentionFunction, DiffmaxFunction, diffmax_attention_op, diffmax_op
from .reference import (
    Alpha,
    diffmax_attention_bwd_ref,
    diffmax_attention_ref,
    diffmax_bisect_bwd_ref,
    diffmax_bisect_ref,
)

Tensor = torch.Tensor

__all__ = [
    "diffmax_bisect",
    "diffmax_bisect_monitored",
    "DiffmaxBisectModule",
    "HillMap",
    "TanhMap",
    "ExpMap",
    "AlphaMap",
    "ALPHA_MIN",
    "ALPHA_MAX",
    "diffmax_attention",
    "diffmax_attention_ref",
    "diffmax_attention_bwd_ref",
    "diffmax_bisect_ref",
    "diffmax_bisect_bwd_ref",
]


def check_alpha(alpha: object, X: Tensor, dim: int) -> Tensor | float:
    """α as a float in (0, 1), or a float tensor on X's device (a CPU 0-d tensor is moved)
    broadcastable to X's shape with ``dim`` of size 1, with every value in (0, 1). A callable is
    called first. Tensor values are checked on the host (a sync on CUDA) except while compiling."""
    if callable(alpha) and not isinstance(alpha, Tensor):
        alpha = alpha()
    if isinstance(alpha, Tensor):
        a = _checks.check_tensor("alpha", alpha, min_ndim=0)
        keep = [1 if i == dim else s for i, s in enumerate(X.shape)]
        try:
            fits = a.dim() <= X.dim() and list(torch.broadcast_shapes(a.shape, keep)) == keep
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"alpha has shape {tuple(a.shape)}; it must broadcast to {tuple(keep)} (X's shape with dim={dim} of size 1)"
            )
        if a.device != X.device:
            if a.dim() or a.device.type != "cpu":
                raise ValueError(f"alpha is on {a.device} but X is on {X.device}; they must match")
            a = a.to(X.device)
        if not torch.compiler.is_compiling() and a.numel() and not bool(((a > 0) & (a < 1)).all()):
            raise ValueError(f"alpha must lie in (0, 1); got values in [{a.min().item()}, {a.max().item()}]")
        return a
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float, a tensor or a zero-argument callable, got {type(alpha).__name__}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    return float(alpha)


def check_n_iter(n_iter: object) -> int:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int):
        raise TypeError(f"n_iter must be an int, got {type(n_iter).__name__}")
    if n_iter < 1:
        raise ValueError(f"n_iter={n_iter} must be >= 1")
    return n_iter


def _diffmax(X: Tensor, alpha: Alpha, dim: int, n_iter: int, ensure_sum_one: bool) -> tuple[Tensor, Tensor, Tensor | float, int]:
    """Validated call of the op: (p, τ, α as checked, dim normalised)."""
    X = _checks.check_tensor("X", X)
    dim = _checks.check_dim("dim", dim, X.dim())
    n_iter = check_n_iter(n_iter)
    _checks.check_flag("ensure_sum_one", ensure_sum_one)
    a = check_alpha(alpha, X, dim)
    if isinstance(a, Tensor):
        acc = torch.float64 if X.dtype == torch.float64 else torch.float32
        a_t, a_value = a.to(acc).reshape((1,) * (X.dim() - a.dim()) + tuple(a.shape)), 0.0
    else:
        a_t, a_value = None, a
    args = (X, a_t, a_value, dim, n_iter, ensure_sum_one)
    if torch.compiler.is_compiling():
        p, tau = diffmax_op(*args)
    else:
        p, tau = DiffmaxFunction.apply(*args)
    return p, tau, a, dim


def diffmax_bisect(
    X: Tensor, alpha: Alpha = 0.9, dim: int = -1, n_iter: int = 50, ensure_sum_one: bool = True
) -> Tensor:
    """α-diffmax of ``X`` along ``dim``: a sparse probability distribution per row.

    Args:
        X: float16, bfloat16, float32 or float64 scores, any shape; −inf entries get exactly 0,
            and a row without a finite entry gives all zeros (never NaN).
        alpha: 0 < α < 1 (default 0.9): a float, a tensor broadcastable to X with ``dim`` of
            size 1 (per row, per head …; differentiable), or a zero-argument callable returning one.
        dim: the normalised axis; any length (no cap).
        n_iter: CPU reference: bisection halvings. Triton kernels: the cap on safeguarded
            Newton steps, which converge to working precision in a handful.
        ensure_sum_one: divide by the sum at the final τ, so each row sums to 1 to rounding.

    Returns:
        p with X's shape and dtype; half inputs are computed in float32 (also under autocast).
        Differentiable in X and α.
    """
    return _diffmax(X, alpha, dim, n_iter, ensure_sum_one)[0]


class DiffmaxBisectModule(nn.Module):
    """``diffmax_bisect`` as a module. With ``alpha_map`` (HillMap, TanhMap or ExpMap) α is
    learnable: α = alpha_map(exp(log_beta)) with the parameter ``log_beta`` initialised from
    ``alpha`` by the map's inverse (or from the map's ``beta0``)."""

    def __init__(self, alpha: float = 0.9, dim: int = -1, n_iter: int = 50, alpha_map: AlphaMap | None = None) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha={alpha!r} must be a float in (0, 1)")
        if alpha_map is not None and not isinstance(alpha_map, AlphaMap):
            raise TypeError(f"alpha_map must be a HillMap, TanhMap, ExpMap or None, got {type(alpha_map).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        self.dim = dim
        self.n_iter = check_n_iter(n_iter)
        self.alpha_map = alpha_map
        if alpha_map is None:
            self.alpha_value = float(alpha)
        else:
            self.log_beta = nn.Parameter(torch.tensor(alpha_map.initial_log_beta(alpha), dtype=torch.float32))

    @property
    def alpha(self) -> Tensor | float:
        """The current α: a 0-d tensor (differentiable in ``log_beta``) when learnable, else a float."""
        if self.alpha_map is None:
            return self.alpha_value
        return self.alpha_map.alpha(self.log_beta)

    def forward(self, X: Tensor) -> Tensor:
        return diffmax_bisect(X, self.alpha, self.dim, self.n_iter)

    def extra_repr(self) -> str:
        alpha = f"{float(self.alpha):.4g}"
        return f"alpha={alpha}, dim={self.dim}, n_iter={self.n_iter}, alpha_map={self.alpha_map}"


Sink = Callable[[dict[str, Any]], None]


def _swanlab_sink() -> Sink | None:
    """``swanlab.log`` when swanlab is installed and a run is initialised, else None."""
    try:
        import swanlab
    except ImportError:
        return None
    get_run = getattr(swanlab, "get_run", None)
    if get_run is None or get_run() is None:
        return None
    return swanlab.log


class _GradProbe(torch.autograd.Function):
    """Identity whose backward reports the norm of the gradient flowing through it."""

    @staticmethod
    def forward(ctx, x, report):
        ctx.report = report
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.report(grad)
        return grad, None


def diffmax_bisect_monitored(
    X: Tensor,
    alpha: Alpha,
    dim: int = -1,
    n_iter: int = 50,
    ensure_sum_one: bool = True,
    *,
    name_prefix: str = "diffmax",
    step: int | None = None,
    sink: Sink | None = None,
) -> Tensor:
    """``diffmax_bisect`` that also logs, per call, a dict of metrics to ``sink`` (a callable),
    or to swanlab when it is installed and initialised (never required; without either nothing
    is logged). Keys, under ``name_prefix``:

    - ``forward/sparsity`` (fraction of finite entries that are exactly 0), ``forward/support_min``,
      ``forward/support_mean``, ``forward/support_max`` (nonzeros per row);
    - ``alpha/mean``, ``alpha/min``, ``alpha/max``; ``convergence/tau_mean``, ``tau_min``, ``tau_max``
      (rows with a finite entry), ``convergence/sum_error_max`` (max |Σp − 1| over those rows);
    - in backward: ``backward/grad_output_norm`` (‖dL/dp‖) and ``backward/grad_input_norm`` (‖dL/dX‖).

    ``step`` is passed along as the dict's ``"step"`` (and to swanlab). Metrics cost host syncs.
    """
    if sink is not None and not callable(sink):
        raise TypeError(f"sink must be callable or None, got {type(sink).__name__}")
    log = sink if sink is not None else _swanlab_sink()
    if log is None:
        return diffmax_bisect(X, alpha, dim, n_iter, ensure_sum_one)

    def emit(metrics: dict[str, float]) -> None:
        record: dict[str, Any] = {f"{name_prefix}/{k}": v for k, v in metrics.items()}
        if sink is not None:
            if step is not None:
                record["step"] = step
            sink(record)
        else:
            log(record, step=step)

    def grad_report(key: str) -> Callable[[Tensor], None]:
        return lambda g: emit({key: float(g.detach().double().norm())})

    if isinstance(X, Tensor) and X.requires_grad:
        X = _GradProbe.apply(X, grad_report("backward/grad_input_norm"))
    p, tau, a, dim = _diffmax(X, alpha, dim, n_iter, ensure_sum_one)
    with torch.no_grad():
        finite = torch.isfinite(X.detach())
        rows = finite.any(dim=dim, keepdim=True)
        support = (p.detach() > 0).sum(dim=dim).double()
        nonempty = rows.squeeze(dim)
        sums = p.detach().double().sum(dim=dim)
        tau_rows = tau[rows]
        a_t = torch.as_tensor(a, dtype=torch.float64)
        metrics = {
            "forward/sparsity": 1.0 - float((p.detach() > 0).sum()) / max(1, int(finite.sum())),
            "forward/support_min": float(support[nonempty].min()) if nonempty.any() else 0.0,
            "forward/support_mean": float(support[nonempty].mean()) if nonempty.any() else 0.0,
            "forward/support_max": float(support.max()) if support.numel() else 0.0,
            "alpha/mean": float(a_t.mean()),
            "alpha/min": float(a_t.min()),
            "alpha/max": float(a_t.max()),
            "convergence/tau_mean": float(tau_rows.mean()) if tau_rows.numel() else math.nan,
            "convergence/tau_min": float(tau_rows.min()) if tau_rows.numel() else math.nan,
            "convergence/tau_max": float(tau_rows.max()) if tau_rows.numel() else math.nan,
            "convergence/sum_error_max": float((sums[nonempty] - 1).abs().max()) if nonempty.any() else 0.0,
        }
    emit(metrics)
    if p.requires_grad:
        p = _GradProbe.apply(p, grad_report("backward/grad_output_norm"))
    return p


def _check_window(window: object) -> tuple[int, int]:
    if (
        not isinstance(window, (tuple, list))
        or len(window) != 2
        or any(isinstance(w, bool) or not isinstance(w, int) or w < -1 for w in window)
    ):
        raise ValueError(f"window must be a pair of ints >= -1 (-1 = unbounded), got {window!r}")
    return int(window[0]), int(window[1])


def diffmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float = 0.5,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    n_iter: int | None = None,
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Any]]:
    """O = diffmax_α(scale · Q Kᵀ + masks) V, without forming the Sq × Sk score matrix.

    Args:
        q: (B, Hq, Sq, D); k: (B, Hkv, Sk, D); v: (B, Hkv, Sk, Dv); one float dtype and device.
            Hkv divides Hq: query head h reads key/value head h // (Hq / Hkv) (GQA/MQA).
        alpha: 0 < α < 1 (a float; 0.5 = 1.5-entmax). Lower α, sparser weights.
        causal: key j visible to query i iff j ≤ i + (Sk − Sq) (bottom-right aligned).
        softmax_scale: scale of the scores (default D^−1/2).
        window: (wl, wr) sliding window, −1 unbounded: i + (Sk−Sq) − wl ≤ j ≤ i + (Sk−Sq) + wr.
        n_iter: CPU reference: bisection halvings; Triton: cap on Newton passes over K (they
            stop at convergence, a few passes). Default 50.
        return_stats: also return a dict: ``tile_skip_fraction`` (of the visible query-tile ×
            key-tile pairs, those whose weights are all zero: the output pass and the backward
            skip them), ``tiles_skipped``, ``tiles_visible``, ``block`` (the tile sizes).

    Returns:
        O (B, Hq, Sq, Dv) in q's dtype (rows with no visible key give 0), differentiable in q,
        k and v (twice: a backward under ``create_graph=True`` runs the reference backward, O(Sq·Sk)
        memory per chunk of queries); with ``return_stats``, (O, stats).
    """
    q = _checks.check_tensor("q", q, min_ndim=4)
    k = _checks.check_tensor("k", k, min_ndim=4)
    v = _checks.check_tensor("v", v, min_ndim=4)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, S, D), got shape {tuple(t.shape)}")
    _checks.check_like("k", k, "q", q, shape=False)
    _checks.check_like("v", v, "q", q, shape=False)
    B, Hq, Sq, D = q.shape
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k has shape {tuple(k.shape)}; expected (B={B}, Hkv, Sk, D={D}) from q {tuple(q.shape)}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected {tuple(k.shape[:3])} + (Dv,) from k")
    if k.shape[1] == 0 or Hq % k.shape[1]:
        raise ValueError(f"the key/value heads Hkv={k.shape[1]} must divide the query heads Hq={Hq}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float, got {type(alpha).__name__}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    _checks.check_flag("causal", causal)
    _checks.check_flag("return_stats", return_stats)
    if softmax_scale is None:
        softmax_scale = D**-0.5 if D else 1.0
    elif isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)) or not softmax_scale > 0:
        raise ValueError(f"softmax_scale must be a number > 0 or None, got {softmax_scale!r}")
    wl, wr = _check_window(window)
    n_iter = 50 if n_iter is None else check_n_iter(n_iter)
    args = (q, k, v, float(alpha), causal, float(softmax_scale), wl, wr, n_iter)
    if torch.compiler.is_compiling():
        o, _, _, states = diffmax_attention_op(*args)
    else:
        o, _, _, states = DiffmaxAttentionFunction.apply(*args)
    if not return_stats:
        return o
    from .attention import pick_config

    cfg = pick_config(D, q.element_size())
    skipped, visible = int((states == 2).sum()), int((states != 0).sum())
    stats = {
        "tile_skip_fraction": skipped / visible if visible else 0.0,
        "tiles_skipped": skipped,
        "tiles_visible": visible,
        "block": (cfg.block_m, cfg.block_n),
    }
    return o, stats
