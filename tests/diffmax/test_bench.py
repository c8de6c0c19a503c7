"""The diffmax benchmark module through the harness on CPU at its quick shapes (timings are
meaningless here and never asserted): cases, references, the dense baseline's check, records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flashmarkov.bench import diffmax, main, registry
from flashmarkov.bench.registry import Case


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.OPS, "diffmax", "flashmarkov.bench.diffmax")


def test_runs_and_records(registered, tmp_path: Path) -> None:
    argv = ["diffmax", "--device", "cpu", "--quick", "--dtypes", "bfloat16", "--layouts", "rows,attn-clustered",
            "--impls", "flashmarkov,torch.softmax", "--warmup", "1", "--rep", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    records = json.loads((tmp_path / "diffmax.json").read_text())
    results = {(r["layout"], r["mode"], r["impl"]): r for r in records if r.get("status")}
    for mode in ("fwd", "fwdbwd"):
        assert results[("rows", mode, "flashmarkov")]["status"] == "ok"
        assert results[("rows", mode, "torch.softmax.dense")]["status"] == "ok"
        assert results[("attn-clustered", mode, "flashmarkov.attention")]["status"] == "ok"


def test_cases_and_clustered_inputs_are_sparse() -> None:
    case = Case("diffmax", "attn-clustered", "fwd", "float32", (1, 2, 1024, 64), 1024)
    inputs = diffmax.make_inputs(case, torch.device("cpu"), 0)
    from flashmarkov.diffmax import diffmax_attention

    _, stats = diffmax_attention(inputs.q, inputs.k, inputs.v, 0.5, return_stats=True)
    assert stats["tile_skip_fraction"] >= 0.7
    assert diffmax.attention_flops(Case("diffmax", "attn-causal", "fwdbwd", "bfloat16", (1, 16, 4096, 64), 4096)) == 3.5 * 2 * 16 * 4096**2 * 64


def test_dense_baseline_check_rejects_a_wrong_output() -> None:
    case = Case("diffmax", "rows", "fwd", "float32", (1, 1, 4, 32), 32)
    inputs = diffmax.make_inputs(case, torch.device("cpu"), 0)
    check = diffmax._baseline_check(case, inputs, lambda: diffmax._softmax_rows(inputs.x, None))
    good = check((torch.softmax(inputs.x, -1),))
    assert torch.isfinite(good[0]).all()
    bad = check((torch.softmax(2 * inputs.x, -1),))
    assert torch.isnan(bad[0]).all()
