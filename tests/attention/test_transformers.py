"""``attn_implementation="flashmarkov"`` in a Hugging Face model: a tiny random Llama (GQA,
causal, 2 layers, hidden 64) on a padded batch gives the logits and gradients of "sdpa", and so
does Mistral (the same with a sliding window). Checked with transformers 5.23.0; skipped only
where transformers is not installed."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import flashmarkov.integrations.transformers as integration  # noqa: E402  (registers "flashmarkov")

from ..conftest import DEVICE, rel_err  # noqa: E402

# Left padding, right padding and a full row in one batch.
LENGTHS = [(0, 12), (0, 7), (5, 12)]  # (first real token, end) per row of 12 positions


def _model(sliding_window: int | None):
    """Llama, or Mistral (Llama with a sliding window) when ``sliding_window`` is given."""
    kw = dict(
        vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    if sliding_window is None:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(sliding_window=sliding_window, **kw))
    return model.to(DEVICE, torch.float32)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the integration's calls of the dense and the packed entry points."""
    counts = {"dense": 0, "varlen": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(integration, "flash_attention", counted("dense", integration.flash_attention))
    monkeypatch.setattr(integration, "flash_attention_varlen", counted("varlen", integration.flash_attention_varlen))
    return counts


def _run(model, implementation: str, ids, mask, weights):
    model.set_attn_implementation(implementation)
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    (logits[real] * weights).sum().backward()
    return logits[real].detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("sliding_window", [None, 4])
def test_padded_batch_matches_sdpa(sliding_window, calls):
    model = _model(sliding_window)
    ids = torch.randint(0, 101, (len(LENGTHS), 12), device=DEVICE)
    mask = torch.zeros(len(LENGTHS), 12, dtype=torch.long, device=DEVICE)
    for row, (start, end) in enumerate(LENGTHS):
        mask[row, start:end] = 1
    weights = torch.randn(int(mask.sum()), 101, device=DEVICE)
    logits_ref, grads_ref = _run(model, "sdpa", ids, mask, weights)
    logits, grads = _run(model, "flashmarkov", ids, mask, weights)
    assert calls == {"dense": 0, "varlen": 2}
    assert rel_err(logits, logits_ref) < 1e-5
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-4, name


def test_unpadded_batch_uses_dense_path(calls):
    """No padding: transformers passes no mask and the dense causal kernel runs."""
    model = _model(None)
    ids = torch.randint(0, 101, (2, 9), device=DEVICE)
    mask = torch.ones(2, 9, dtype=torch.long, device=DEVICE)
    weights = torch.randn(18, 101, device=DEVICE)
    logits_ref, _ = _run(model, "sdpa", ids, mask, weights)
    logits, _ = _run(model, "flashmarkov", ids, mask, weights)
    assert calls == {"dense": 2, "varlen": 0}
    assert rel_err(logits, logits_ref) < 1e-5


def test_flash_attn_compatible_functions():
    """The flash_attn-style functions handed to transformers' FlashAttention loader."""
    from transformers import modeling_flash_attention_utils as fa_utils

    fns = fa_utils._lazy_imports(integration.NAME)
    assert fns[0] is integration.flash_attn_func and fns[1] is integration.flash_attn_varlen_func
    q, k, v = (torch.randn(2, 5, 2, 8, device=DEVICE) for _ in range(3))
    o = integration.flash_attn_func(q, k, v, causal=True, window_size=(2, 0))
    cu = torch.tensor([0, 5, 10], dtype=torch.int32, device=DEVICE)
    flat = [x.reshape(10, 2, 8) for x in (q, k, v)]
    o_var = integration.flash_attn_varlen_func(*flat, cu, cu, 5, 5, causal=True, window_size=(2, 0))
    assert rel_err(o_var, o.reshape(10, 2, 8)) < 1e-6
    with pytest.raises(ValueError, match="dropout"):
        integration.flash_attn_func(q, k, v, dropout_p=0.1)


@pytest.mark.gpu
def test_bf16_padded_batch_on_gpu():
    """bfloat16 on the GPU kernels: logits and gradients as close to the float32 model as
    "sdpa" in bfloat16 is (at most twice its error, the attention tests' rule)."""
    model = _model(None)
    ids = torch.randint(0, 101, (len(LENGTHS), 12), device=DEVICE)
    mask = torch.zeros(len(LENGTHS), 12, dtype=torch.long, device=DEVICE)
    for row, (start, end) in enumerate(LENGTHS):
        mask[row, start:end] = 1
    weights = torch.randn(int(mask.sum()), 101, device=DEVICE)
    logits_ref, grads_ref = _run(model, "sdpa", ids, mask, weights)
    model = model.to(torch.bfloat16)
    weights = weights.to(torch.bfloat16)
    logits_sdpa, grads_sdpa = _run(model, "sdpa", ids, mask, weights)
    logits, grads = _run(model, "flashmarkov", ids, mask, weights)
    assert rel_err(logits, logits_ref) <= 2 * rel_err(logits_sdpa, logits_ref) + 1e-4
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) <= 2 * rel_err(grads_sdpa[name], grads_ref[name]) + 1e-4, name


@pytest.mark.parametrize("how", ["position_ids", "cu_seq_lens"])
def test_packed_documents_match_separate_runs(how, calls):
    """Padding-free packing: documents of 7, 1 and 5 tokens in one row give each document's
    logits and the summed gradients of running the documents one by one with "sdpa"."""
    model = _model(None)
    lengths = [7, 1, 5]
    docs = [torch.randint(0, 101, (1, n), device=DEVICE) for n in lengths]
    weights = [torch.randn(n, 101, device=DEVICE) for n in lengths]
    model.set_attn_implementation("sdpa")
    model.zero_grad()
    expected = []
    for ids, w in zip(docs, weights, strict=True):
        logits = model(input_ids=ids).logits[0]
        (logits * w).sum().backward()
        expected.append(logits.detach())
    grads_ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.set_attn_implementation("flashmarkov")
    model.zero_grad()
    position_ids = torch.cat([torch.arange(n, device=DEVICE) for n in lengths])[None]
    extra = {}
    if how == "cu_seq_lens":
        cu = torch.tensor([0, 7, 8, 13], dtype=torch.int32, device=DEVICE)
        extra = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=7, max_length_k=7)
    logits = model(input_ids=torch.cat(docs, 1), position_ids=position_ids, **extra).logits[0]
    (logits * torch.cat(weights)).sum().backward()
    assert calls == {"dense": 0, "varlen": 2}
    assert rel_err(logits, torch.cat(expected)) < 1e-5
    for name, p in model.named_parameters():
        assert rel_err(p.grad, grads_ref[name]) < 1e-4, name
