"""The benchmark harness end to end on CPU at a tiny shape: records, Markdown, plot, guard, cases.

CPU timings are meaningless (and never asserted on): these tests check what gets written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from flashmarkov.bench import main, report, scan
from flashmarkov.bench.options import parse_args
from flashmarkov.bench.registry import Impl, Skip

KEYS = {"op", "case", "shape", "dtype", "impl", "median_ms", "metric", "value"}
PROVENANCE = {"gpu", "torch", "triton", "commit", "date"}
IMPLS = ("flashmarkov", "torch.logspace")
TINY = ["--device", "cpu", "--shapes", "2x8x64", "--warmup", "1", "--rep", "1"]


def _run(tmp_path: Path, *options: str) -> list[dict]:
    assert main(["scan", *TINY, "--out", str(tmp_path), *options]) == 0
    records = json.loads((tmp_path / "scan.json").read_text())
    assert isinstance(records, list)
    return records


def test_records_markdown_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = _run(tmp_path, "--impls", ",".join(IMPLS))
    for record in records:
        assert record.keys() >= KEYS | PROVENANCE
        assert record["torch"] == torch.__version__
        assert all(isinstance(record[key], str) and record[key] for key in PROVENANCE)
        assert "not a benchmark" in record["timer"]

    (copy,) = [r for r in records if r["metric"] == "copy_GBps"]
    assert copy["impl"] == "torch.copy_"
    assert copy["value"] == pytest.approx(2 * copy["shape"][0] / (copy["median_ms"] * 1e6))

    results = [r for r in records if r["metric"] == "fraction_of_floor"]
    assert len(results) + 1 == len(records)
    expected = {
        (layout, mode, dtype, impl)
        for layout in ("bdt", "btd")
        for mode in ("fwd", "fwdbwd")
        for dtype in ("float32", "bfloat16")
        for impl in IMPLS
    }
    assert {(r["layout"], r["mode"], r["dtype"], r["impl"]) for r in results} == expected
    by_key = {(r["case"], r["dtype"], r["impl"]): r for r in results}
    for r in results:
        assert r["status"] == "ok"
        assert r["shape"] == ([2, 8, 64] if r["layout"] == "bdt" else [2, 64, 8])
        assert r["x"] == 64
        assert r["rel_err"] <= scan.TOLERANCE[r["dtype"]]
        streams = 3 if r["mode"] == "fwd" else 8
        itemsize = 4 if r["dtype"] == "float32" else 2
        assert r["floor_ms"] == pytest.approx(streams * 2 * 8 * 64 * itemsize / (copy["value"] * 1e6))
        assert r["value"] == pytest.approx(r["floor_ms"] / r["median_ms"])
        peer = by_key[(r["case"], r["dtype"], "torch.logspace")]
        assert r["ratio_to_best_peer"] == pytest.approx(peer["median_ms"] / r["median_ms"])

    table = (tmp_path / "scan.md").read_text()
    for title in ("scan bdt fwd", "scan bdt fwdbwd", "scan btd fwd", "scan btd fwdbwd"):
        assert f"## {title}\n" in table
    assert "| shape | dtype | floor ms | flashmarkov | torch.logspace | flashmarkov vs best peer |" in table
    assert (tmp_path / "scan.png").read_bytes().startswith(b"\x89PNG")

    assert "rows merged from" not in table
    merged = [dict(r, commit="abc1234", date="2026-01-02T00:00:00") if r["metric"] != "copy_GBps" else r for r in records]
    assert "rows merged from commit abc1234 (2026-01-02)" in report.markdown(merged, "scan").splitlines()[2]

    out = capsys.readouterr().out
    summary = out[out.index("wrote ") :].splitlines()[1:]
    rows = [line for line in summary if "torch.logspace" in line]
    assert len(rows) == 8 and all("2x8x64" in row or "2x64x8" in row for row in rows)
    assert "copy bandwidth" in summary[-1] or "copy bandwidth" in summary[-2]


def test_guard_marks_wrong_output_and_skips_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def wrong(case: scan.Case, inputs: scan.ScanInputs) -> scan.Prepared:
        return scan._prepared(case, inputs, lambda gates, tokens: tokens * gates)

    def absent(case: scan.Case, inputs: scan.ScanInputs) -> scan.Prepared:
        raise Skip("not installed here")

    extra = (Impl("wrong-peer", "torch", wrong), Impl("absent-peer", "torch", absent))
    original = scan.OP.impls
    monkeypatch.setattr(scan, "OP", dataclasses.replace(scan.OP, impls=lambda args: (*original(args), *extra)))
    options = ("--impls", "flashmarkov,wrong-peer,absent-peer", "--modes", "fwd", "--layouts", "bdt")
    records = _run(tmp_path, *options, "--dtypes", "float32")

    results = {r["impl"]: r for r in records if r["metric"] == "fraction_of_floor"}
    assert set(results) == {"flashmarkov", "wrong-peer"}
    wrong_record = results["wrong-peer"]
    assert wrong_record["status"] == "wrong"
    assert wrong_record["median_ms"] is None and wrong_record["value"] is None
    assert wrong_record["rel_err"] > scan.TOLERANCE["float32"]
    assert results["flashmarkov"]["ratio_to_best_peer"] is None
    assert "absent-peer: not installed here" in capsys.readouterr().out
    assert "wrong (" in (tmp_path / "scan.md").read_text()


@pytest.mark.parametrize("layout", ["bdt", "btd"])
def test_reference_in_channel_slices(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (2, 5, 33) if layout == "bdt" else (2, 33, 5)
    case = scan.Case("scan", layout, "fwdbwd", "float32", shape, 33)
    inputs = scan.make_inputs(case, torch.device("cpu"), 0)
    whole = scan.reference(case, inputs)
    monkeypatch.setattr(scan, "REFERENCE_CHUNK", 2 * 2 * 33)
    sliced = scan.reference(case, inputs)
    assert len(whole) == len(sliced) == 3
    for expected, actual in zip(whole, sliced, strict=True):
        assert actual.dtype == torch.float64 and actual.shape == shape
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_cases() -> None:
    def cases(*options: str) -> list[scan.Case]:
        op, args = parse_args(["scan", *options])
        return op.cases(args)

    default = cases()
    assert len(default) == 4 * 2 * 2 * 2
    assert {c.shape for c in default if c.layout == "btd"} == {(b, t, d) for b, d, t in scan.DEFAULT_SHAPES}
    (quick,) = cases("--quick", "--layouts", "btd", "--modes", "fwd", "--dtypes", "bfloat16")
    assert (quick.shape, quick.x, quick.dtype) == ((2, 4096, 256), 4096, "bfloat16")
    swept = cases("--sweep")
    assert len(swept) == len(default) + 10 * 2 * 2 * 2
    assert {c.x for c in swept if c.sweep} == {2**k for k in range(10, 21)}
    assert all(c.sweep for c in swept if c.shape == (2, 256, 65536))
    with pytest.raises(SystemExit):
        cases("--dtypes", "float8")


def test_slow_peer_skipped_after_first_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--slow-peer: a peer past the limit on one case is skipped on the later ones (said once);
    flashmarkov never is. Here every timing is past a limit of 1e-9 of the floor."""
    records = _run(tmp_path, "--impls", ",".join(IMPLS), "--slow-peer", "1e-9", "--modes", "fwd", "--dtypes", "float32")
    results = [r for r in records if r["metric"] == "fraction_of_floor"]
    assert [r["impl"] for r in results].count("flashmarkov") == 2  # both layouts
    (peer,) = [r for r in results if r["impl"] == "torch.logspace"]
    assert peer["status"] == "ok"
    out = capsys.readouterr().out
    assert out.count("skip   torch.logspace: took") == 1 and "(--slow-peer 1e-09)" in out


def test_repeats(tmp_path: Path) -> None:
    """--repeats N: each timed record keeps its N timings (``repeat_ms``) and their median as
    ``median_ms``; without it no ``repeat_ms``; N < 1 is refused."""
    import statistics

    records = _run(tmp_path, "--impls", "flashmarkov", "--modes", "fwd", "--dtypes", "float32", "--repeats", "3")
    results = [r for r in records if r["metric"] == "fraction_of_floor"]
    assert len(results) == 2
    for r in results:
        assert len(r["repeat_ms"]) == 3
        assert r["median_ms"] == statistics.median(r["repeat_ms"])
        assert r["value"] == pytest.approx(r["floor_ms"] / r["median_ms"])
    single = _run(tmp_path / "one", "--impls", "flashmarkov", "--modes", "fwd", "--dtypes", "float32")
    assert not any("repeat_ms" in r for r in single)
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit):
            parse_args(["scan", *TINY, "--repeats", bad])
