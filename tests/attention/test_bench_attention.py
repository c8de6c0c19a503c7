"""The attention benchmark module through the harness on CPU at tiny shapes: cases, reference,
records (timings on CPU mean nothing and are not asserted on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashmarkov.bench import attention, main, registry
from flashmarkov.bench.registry import Case


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.OPS, "attention", "flashmarkov.bench.attention")


def test_harness_runs_every_layout(tmp_path: Path) -> None:
    argv = [
        "attention", "--device", "cpu", "--shapes", "1x4x40x16", "--dtypes", "float32", "--warmup", "1", "--rep", "1",
        "--impls", "flashmarkov", "--out", str(tmp_path),
    ]
    assert main(argv) == 0
    records = [r for r in json.loads((tmp_path / "attention.json").read_text()) if r["metric"] == "fraction_of_floor"]
    ours = {(r["layout"], r["mode"]) for r in records if r["impl"] == "flashmarkov"}
    assert ours == {(layout, mode) for layout in attention.LAYOUTS for mode in ("fwd", "fwdbwd")}
    assert all(r["status"] == "ok" for r in records if r["impl"] == "flashmarkov")
    varlen = [r for r in records if r["layout"] == "varlen-causal"]
    assert varlen and all(r["impl"] == "flashmarkov" and r["shape"] == [1, 4, 100, 16] for r in varlen)


def test_flops_convention() -> None:
    full = Case("attention", "full", "fwd", "bfloat16", (2, 16, 8192, 128), 8192)
    assert attention.flops(full) == 4 * 2 * 16 * 8192**2 * 128
    causal_bwd = Case("attention", "causal", "fwdbwd", "bfloat16", (2, 16, 8192, 128), 8192)
    assert attention.flops(causal_bwd) == attention.flops(full) / 2 * 3.5
    assert attention.tflops(full, 1.0) == pytest.approx(attention.flops(full) / 1e9)


def test_chunked_reference_matches_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's chunked float64 reference (one key/value head per chunk here) equals the
    reference on whole tensors: o and every gradient, GQA, several sequences."""
    import torch

    from flashmarkov.attention import flash_attention_ref

    monkeypatch.setattr(attention, "REFERENCE_SCORES", 1)
    case = Case("attention", "gqa-causal", "fwdbwd", "float32", (2, 8, 24, 16), 24)
    inputs = attention.make_inputs(case, torch.device("cpu"), 0)
    got = attention.reference(case, inputs)
    leaves = [x.double().requires_grad_() for x in (inputs.q, inputs.k, inputs.v)]
    o = flash_attention_ref(*leaves, causal=True)
    expected = (o, *torch.autograd.grad(o, leaves, inputs.do.double()))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e.detach(), rtol=1e-12, atol=1e-12)
