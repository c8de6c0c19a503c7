"""The diffusion benchmark module end to end on CPU at tiny shapes (registered for the test only):
cases, records, the float64 check and the exp-unit floor. CPU timings are never asserted on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashmarkov.bench import diffusion, main, registry


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.OPS, "diffusion", "flashmarkov.bench.diffusion")


def test_bench_records(registered, tmp_path: Path):
    argv = ["diffusion", "--device", "cpu", "--shapes", "300x3x16,200x16x5", "--warmup", "1", "--rep", "1"]
    assert main([*argv, "--impls", "flashmarkov,torch", "--out", str(tmp_path)]) == 0
    records = json.loads((tmp_path / "diffusion.json").read_text())
    results = [r for r in records if r["metric"] == "fraction_of_floor"]
    assert {(tuple(r["shape"]), r["impl"]) for r in results} == {
        (shape, impl) for shape in ((300, 3, 16), (200, 16, 5)) for impl in ("flashmarkov", "flashmarkov.sym", "torch.chunked")
    }
    for r in results:
        assert r["status"] == "ok" and r["rel_err"] <= diffusion.TOLERANCE
        n = r["shape"][0]
        assert r["floor_ms"] == pytest.approx(n * n / (diffusion.DEFAULT_SMS * diffusion.EXP_PER_SM_PER_S) * 1e3)
        assert r["value"] == pytest.approx(r["floor_ms"] / r["median_ms"])


def test_cases(registered):
    from flashmarkov.bench.options import parse_args

    _, args = parse_args(["diffusion"])
    cases = diffusion.cases(args)
    assert [c.shape for c in cases] == list(diffusion.DEFAULT_SHAPES)
    assert all(c.dtype == "float32" and c.mode == "fwd" for c in cases)
    _, args = parse_args(["diffusion", "--dtypes", "bfloat16"])
    assert diffusion.cases(args) == []
