"""``flashmarkov demo`` on the CPU: every operator runs and matches its float64 reference."""

from __future__ import annotations

import pytest

from flashmarkov import cli


def test_demo_runs_every_operator(capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the diffusion section writes its plot here
    assert cli.main(["demo", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for section in ("scan", "attn", "diffmax rows", "diffmax attention", "diffusion map"):
        assert section in out, f"demo printed no {section!r} section"
    assert "FAIL" not in out
    assert (tmp_path / "flashmarkov-diffusion-demo.png").exists()


def test_bad_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])
