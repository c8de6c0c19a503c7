"""``flashmarkov.attention``: exact softmax attention without forming the score matrix.

``flash_attention`` (dense batches, layouts "bhsd" and "bshd") and ``flash_attention_varlen``
(packed sequences with int32 offsets) run FlashAttention-2-style Triton kernels on CUDA tensors
(float16, bfloat16, float32 with float32-accurate tf32x3 dot products, IEEE above D = 128) and the PyTorch reference
(``flash_attention_ref``, ``flash_attention_varlen_ref``) on other devices and for float64.
Features: causal masking aligned bottom-right when Sq != Sk, sliding windows, softcapping,
GQA/MQA, head dims 1..256, any lengths; forward and backward (dq, dk, dv, and lse's gradient);
second derivatives (``create_graph=True``) through the reference backward (O(Sq·Sk) memory).
The backward has no atomics: gradients are bitwise repeatable whatever ``deterministic`` says.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from .. import _checks
from . import op
from .op import AttentionFunction, attention_op
from .reference import flash_attention_ref, flash_attention_varlen_ref

Tensor = torch.Tensor

__all__ = ["flash_attention", "flash_attention_varlen", "flash_attention_ref", "flash_attention_varlen_ref"]

MAX_HEAD_DIM = 256
LAYOUTS = ("bhsd", "bshd")


def _check_options(
    causal: object, softmax_scale: object, window: object, softcap: object, return_lse: object,
    deterministic: object, head_dim: int,
) -> tuple[float, int, int, float]:
    """(scale, wl, wr, softcap) from validated keyword options."""
    if (
        (causal is True or causal is False) and (return_lse is True or return_lse is False)
        and (deterministic is True or deterministic is False)
        and type(window) is tuple and len(window) == 2 and type(window[0]) is int and type(window[1]) is int
        and window[0] >= -1 and window[1] >= -1 and type(softcap) is float and 0.0 <= softcap < math.inf
    ):  # the common case, checked without the calls below (the same conditions)
        if softmax_scale is None:
            return 1.0 / math.sqrt(head_dim), window[0], window[1], softcap
        if type(softmax_scale) is float and -math.inf < softmax_scale < math.inf:
            return softmax_scale, window[0], window[1], softcap
    _checks.check_flag("causal", causal)
    _checks.check_flag("return_lse", return_lse)
    _checks.check_flag("deterministic", deterministic)
    if softmax_scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    elif isinstance(softmax_scale, bool) or not isinstance(softmax_scale, Real):
        raise TypeError(f"softmax_scale must be a real number or None, got {type(softmax_scale).__name__}")
    elif not math.isfinite(softmax_scale):
        raise ValueError(f"softmax_scale={softmax_scale} must be finite")
    else:
        scale = float(softmax_scale)
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError(f"window must be a pair (left, right) of ints, got {window!r}")
    for side, w in zip(("left", "right"), window, strict=True):
        if isinstance(w, bool) or not isinstance(w, int):
            raise TypeError(f"window {side} must be an int, got {type(w).__name__} ({window!r})")
        if w < -1:
            raise ValueError(f"window={tuple(window)}: each side must be >= 0, or -1 for unbounded")
    if isinstance(softcap, bool) or not isinstance(softcap, Real):
        raise TypeError(f"softcap must be a real number, got {type(softcap).__name__}")
    if not (math.isfinite(softcap) and softcap >= 0):
        raise ValueError(f"softcap={softcap} must be finite and >= 0 (0 turns it off)")
    return scale, int(window[0]), int(window[1]), float(softcap)


def _check_qkv(q: object, k: object, v: object, ndim: int, shapes: str) -> tuple[Tensor, Tensor, Tensor]:
    """Tensors of ``ndim`` dims, same dtype and device, v shaped like k, equal head dims <= 256."""
    if isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor):  # all checks at once
        dtype, device, d = q.dtype, q.device, q.shape[-1] if q.dim() else 0
        if (
            dtype in _checks.FLOAT_DTYPES and k.dtype == dtype and v.dtype == dtype
            and q.dim() == ndim and k.dim() == ndim and v.dim() == ndim and k.device == device and v.device == device
            and v.shape == k.shape and k.shape[-1] == d and 1 <= d <= MAX_HEAD_DIM
        ):
            return q, k, v
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.check_tensor(name, x, min_ndim=ndim)
        if x.dim() != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions {shapes}, got shape {tuple(x.shape)}")
    _checks.check_like("k", k, "q", q, shape=False)
    _checks.check_like("v", v, "k", k)
    d = q.shape[-1]
    if k.shape[-1] != d:
        raise ValueError(f"head dims differ: q has D={d}, k has D={k.shape[-1]}")
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D={d} is not supported; allowed 1..{MAX_HEAD_DIM}")
    return q, k, v


def _check_heads(hq: int, hkv: int) -> None:
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"the key/value head count Hkv={hkv} must divide the query head count Hq={hq} (GQA/MQA)")


def _apply(args: tuple) -> tuple[Tensor, Tensor]:
    """The custom op under torch.compile; in eager mode the autograd.Function when a gradient
    may be asked for, else the forward itself (no graph to record: ~5 µs less host time)."""
    if torch.compiler.is_compiling():
        return attention_op(*args)
    if torch.is_grad_enabled() and (args[0].requires_grad or args[1].requires_grad or args[2].requires_grad):
        return AttentionFunction.apply(*args)
    return op.attention_fwd(*args)


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    return_lse: bool = False,
    deterministic: bool = False,
    layout: str = "bhsd",
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax attention ``softmax(scale · q kᵀ + masks) v``, forward and backward.

    Args:
        q: (B, Hq, Sq, D) with layout "bhsd", (B, Sq, Hq, D) with "bshd"; float16, bfloat16,
            float32 or float64; D in 1..256 (any value, powers of two are fastest).
        k, v: (B, Hkv, Sk, D) / (B, Sk, Hkv, D), same dtype and device; Hkv divides Hq (GQA/MQA:
            query head h reads key/value head h // (Hq / Hkv)). Sq, Sk >= 0, any values
            (no key: o = 0 and lse = -inf, as for a row that sees none).
        causal: key j is visible to query i iff j <= i + Sk - Sq (bottom-right aligned).
        softmax_scale: defaults to 1 / sqrt(D).
        window: (left, right); key j visible iff i + Sk - Sq - left <= j <= i + Sk - Sq + right,
            -1 for an unbounded side (combined with ``causal``: right is 0).
        softcap: c > 0 replaces each score s by c · tanh(s / c) before masking.
        return_lse: also return lse = log Σ_j exp(s_ij), (B, Hq, Sq), float32 (float64 for
            float64 input); differentiable.
        deterministic: accepted for API parity; the backward is always deterministic.
        layout: "bhsd" or "bshd"; strided inputs are read in place (no copies), o has q's layout.

    Returns:
        o, shaped and typed like q, or (o, lse). A query row that sees no key gets o = 0 and
        lse = -inf (never NaN) and zero gradients.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: {LAYOUTS}")
    shapes = "(B, H, S, D)" if layout == "bhsd" else "(B, S, H, D)"
    q, k, v = _check_qkv(q, k, v, 4, shapes)
    qc, kc, vc = (q, k, v) if layout == "bhsd" else (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if kc.shape[0] != qc.shape[0]:
        raise ValueError(f"batch sizes differ: q has B={qc.shape[0]}, k has B={kc.shape[0]}")
    _check_heads(qc.shape[1], kc.shape[1])
    scale, wl, wr, cap = _check_options(causal, softmax_scale, window, softcap, return_lse, deterministic, q.shape[-1])
    o, lse = _apply((qc, kc, vc, None, None, qc.shape[2], kc.shape[2], causal, scale, wl, wr, cap))
    if layout == "bshd":
        o = o.transpose(1, 2)
    return (o, lse) if return_lse else o


def _check_seqlens(name: str, cu: object, total: int, device: torch.device, max_name: str, max_len: object) -> Tensor:
    """int32 offsets 0..total, non-decreasing, no sequence longer than ``max_len``."""
    cu = _checks.check_offsets(name, cu, total, device)
    if isinstance(max_len, bool) or not isinstance(max_len, int):
        raise TypeError(f"{max_name} must be an int, got {type(max_len).__name__}")
    if max_len < 0:
        raise ValueError(f"{max_name}={max_len} must be >= 0")
    if not torch.compiler.is_compiling():
        longest = int((cu[1:] - cu[:-1]).max().item())
        if longest > max_len:
            raise ValueError(f"{max_name}={max_len} is smaller than the longest sequence in {name} ({longest})")
    return cu


def flash_attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    return_lse: bool = False,
    deterministic: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax attention over N packed sequences, each with its own lengths and alignment.

    Args:
        q: (total_q, Hq, D); k, v: (total_k, Hkv, D) (dtypes, head rules as ``flash_attention``).
        cu_seqlens_q, cu_seqlens_k: int32 (N + 1,) offsets from 0 to total_q / total_k,
            non-decreasing (empty sequences allowed), on q's device.
        max_seqlen_q, max_seqlen_k: at least the longest query / key sequence (they size the
            launch grid).
        causal, softmax_scale, window, softcap, return_lse, deterministic: as in ``flash_attention``,
            per sequence (causal aligned to each sequence's bottom-right corner).

    Returns:
        o (total_q, Hq, D) like q, or (o, lse) with lse (Hq, total_q).
    """
    q, k, v = _check_qkv(q, k, v, 3, "(total, H, D)")
    _check_heads(q.shape[1], k.shape[1])
    cu_q = _check_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], q.device, "max_seqlen_q", max_seqlen_q)
    cu_k = _check_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], k.device, "max_seqlen_k", max_seqlen_k)
    if cu_q.shape != cu_k.shape:
        raise ValueError(
            f"cu_seqlens_q has {cu_q.shape[0] - 1} sequences but cu_seqlens_k has {cu_k.shape[0] - 1}; they must match"
        )
    scale, wl, wr, cap = _check_options(causal, softmax_scale, window, softcap, return_lse, deterministic, q.shape[-1])
    o, lse = _apply((q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, causal, scale, wl, wr, cap))
    return (o, lse) if return_lse else o


def demo_attention(device: torch.device | str) -> str:
    """A few lines for ``flashmarkov demo``: causal GQA attention with a sliding window, forward
    and backward, checked against the float64 reference."""
    from .demo import demo_lines

    return "\n".join(demo_lines(torch.device(device)))
