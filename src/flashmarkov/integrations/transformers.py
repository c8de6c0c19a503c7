"""``attn_implementation="flashmarkov"`` for Hugging Face transformers (checked with 5.23.0).

Importing this module registers ``flashmarkov_attention_forward`` with transformers'
``AttentionInterface`` and, for the masks, transformers' FlashAttention mask builder with its
``AttentionMaskInterface``: models then hand the attention function either no mask (every token
real: dense ``flash_attention`` with the module's causal flag) or the 2-D boolean padding mask
(B, kv_len), which is turned into packed sequences (``flash_attention_varlen``) and back, as
FlashAttention-2 does. Left and right padding are both exact; padded query rows get o = 0.

Supported: causal and bidirectional modules, GQA/MQA (no key/value repetition), ``scaling``,
``sliding_window`` (tokens seen = sliding_window, i.e. window (sliding_window - 1, ·)),
``softcap``, a key/value cache (queries are the last q_len positions of the mask), and
padding-free packed batches (one row of concatenated documents) given either by
FlashAttention's ``cu_seq_lens_q/k`` + ``max_length_q/k`` keyword arguments or by
``position_ids`` that restart at each document (as transformers' FlashAttention path does).
Not supported (ValueError): dropout > 0, ready-made 4-D masks, attention sinks (``s_aux``).

transformers 5.x treats every implementation whose name contains "flash" as a FlashAttention
package and, on ``attn_implementation="flashmarkov"``, tries to import one (from the Hub's
``kernels``). This module therefore also answers that import with FlashAttention-compatible
``flash_attn_func`` / ``flash_attn_varlen_func`` built on flashmarkov (a wrapper around
``transformers.modeling_flash_attention_utils._lazy_imports`` that only handles "flashmarkov").

    import flashmarkov.integrations.transformers  # noqa: F401  (registers "flashmarkov")
    model = AutoModelForCausalLM.from_config(config, attn_implementation="flashmarkov")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

from ..attention import flash_attention, flash_attention_varlen

Tensor = torch.Tensor

NAME = "flashmarkov"


def _packed(x: Tensor, index: Tensor) -> Tensor:
    """(B, H, S, D) -> (total, H, D): the rows of the flattened (B·S) axis listed in ``index``."""
    B, H, S, D = x.shape
    return x.transpose(1, 2).reshape(B * S, H, D).index_select(0, index)


def _offsets(mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """(flat indices of real tokens, int32 offsets, longest length) of a (B, S) boolean mask."""
    lengths = mask.sum(1, dtype=torch.int32)
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    return mask.flatten().nonzero().squeeze(1), cu, int(lengths.max().item())


def _packed_offsets(query: Tensor, key: Tensor, kwargs: dict) -> tuple[Tensor, Tensor, int, int] | None:
    """(cu_q, cu_k, max_q, max_k) of a padding-free packed batch, or None for an ordinary one.

    Explicit ``cu_seq_lens_q/k`` win; otherwise ``position_ids`` of a single row that restart at
    their minimum (a device sync per call, like transformers' own check)."""
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is not None and cu_k is not None:
        max_q, max_k = kwargs.get("max_length_q"), kwargs.get("max_length_k")
        max_q = int((cu_q[1:] - cu_q[:-1]).max()) if max_q is None else int(max_q)
        max_k = int((cu_k[1:] - cu_k[:-1]).max()) if max_k is None else int(max_k)
        return cu_q.to(torch.int32), cu_k.to(torch.int32), max_q, max_k
    pos = kwargs.get("position_ids")
    if pos is None or query.shape[0] != 1 or query.shape[2] != key.shape[2] or query.shape[2] == 1:
        return None
    pos = pos.reshape(-1)
    if pos.numel() != query.shape[2]:
        return None
    starts = (pos == pos.min()).nonzero().reshape(-1)
    if starts.numel() == 1:
        return None
    cu = torch.cat((starts, starts.new_tensor([pos.numel()]))).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return cu, cu, longest, longest


def flashmarkov_attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """transformers' attention-function contract: query (B, Hq, Sq, D), key and value
    (B, Hkv, Sk, D), ``attention_mask`` None or a (B, Sk) boolean padding mask; returns
    (attn_output (B, Sq, Hq, D), None)."""
    if dropout > 0:
        raise ValueError(f"flashmarkov attention has no dropout; got dropout={dropout} (set attention_dropout=0)")
    if kwargs.get("s_aux") is not None:
        raise ValueError("flashmarkov attention does not support attention sinks (s_aux)")
    causal = module.is_causal if is_causal is None else is_causal
    window = (-1, -1)
    if sliding_window is not None and sliding_window > 0:
        window = (sliding_window - 1, -1 if causal else sliding_window - 1)
    kw = dict(causal=bool(causal), softmax_scale=scaling, window=window, softcap=float(softcap or 0.0))
    B, hq, sq, d = query.shape
    if attention_mask is None:
        packed = _packed_offsets(query, key, kwargs)
        if packed is None:
            return flash_attention(query, key, value, **kw).transpose(1, 2), None
        rows = lambda x: x[0].transpose(0, 1)  # noqa: E731  (1, H, total, D) -> (total, H, D)
        o = flash_attention_varlen(rows(query), rows(key), rows(value), *packed, **kw)
        return o.view(B, sq, hq, d), None
    if attention_mask.dim() != 2 or attention_mask.dtype != torch.bool:
        raise ValueError(
            f"flashmarkov attention takes a (batch, kv_len) boolean padding mask or None, got a "
            f"{attention_mask.dim()}-D {attention_mask.dtype} mask (custom 4-D masks are not supported)"
        )
    kv_mask = attention_mask[:, -key.shape[2]:]
    q_mask = kv_mask[:, -sq:]
    q_index, cu_q, max_q = _offsets(q_mask)
    k_index, cu_k, max_k = _offsets(kv_mask)
    o = flash_attention_varlen(
        _packed(query, q_index), _packed(key, k_index), _packed(value, k_index), cu_q, cu_k, max_q, max_k, **kw
    )
    out = o.new_zeros(B * sq, hq, d).index_copy(0, q_index, o)
    return out.view(B, sq, hq, d), None


def _check_fa_options(dropout_p: float, return_attn_probs: bool) -> None:
    if dropout_p:
        raise ValueError(f"flashmarkov attention has no dropout; got dropout_p={dropout_p}")
    if return_attn_probs:
        raise ValueError("flashmarkov attention does not return attention probabilities")


def flash_attn_func(
    q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, softmax_scale: float | None = None,
    causal: bool = False, window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
    deterministic: bool = False, return_attn_probs: bool = False, **unsupported,
) -> Tensor:
    """flash_attn's ``flash_attn_func`` on flashmarkov: q (B, Sq, Hq, D), k and v (B, Sk, Hkv, D)."""
    _check_fa_options(dropout_p, return_attn_probs)
    return flash_attention(
        q, k, v, causal=causal, softmax_scale=softmax_scale, window=tuple(window_size), softcap=float(softcap or 0.0),
        deterministic=deterministic, layout="bshd",
    )


def flash_attn_varlen_func(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int,
    max_seqlen_k: int, dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, deterministic: bool = False,
    return_attn_probs: bool = False, **unsupported,
) -> Tensor:
    """flash_attn's ``flash_attn_varlen_func`` on flashmarkov (packed (total, H, D) tensors)."""
    _check_fa_options(dropout_p, return_attn_probs)
    return flash_attention_varlen(
        q, k, v, cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32), int(max_seqlen_q), int(max_seqlen_k),
        causal=causal, softmax_scale=softmax_scale, window=tuple(window_size), softcap=float(softcap or 0.0),
        deterministic=deterministic,
    )


def _answer_flash_imports() -> None:
    """Make transformers' FlashAttention loader return the functions above for "flashmarkov"."""
    from transformers import modeling_flash_attention_utils as fa_utils

    original = getattr(fa_utils, "_lazy_imports", None)
    if original is None or getattr(original, "_flashmarkov", False):
        return

    def lazy_imports(implementation, *args, **kwargs):
        if implementation == NAME:
            return flash_attn_func, flash_attn_varlen_func, None, fa_utils._pad_input, fa_utils._unpad_input
        return original(implementation, *args, **kwargs)

    lazy_imports._flashmarkov = True  # type: ignore[attr-defined]
    fa_utils._lazy_imports = lazy_imports


AttentionInterface.register(NAME, flashmarkov_attention_forward)
AttentionMaskInterface.register(NAME, flash_attention_mask)
_answer_flash_imports()
