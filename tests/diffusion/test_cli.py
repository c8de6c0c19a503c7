"""``flashmarkov embed`` (embed_main) on .npy and .csv files and built-in data sets, with the
coordinates file and the plot, and the diffusion demo."""

from __future__ import annotations

import numpy as np
import pytest

from flashmarkov.diffusion import DiffusionMap
from flashmarkov.diffusion.cli import dataset, demo_diffusion, embed_main


def test_embed_npy_and_csv(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((150, 3))
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="a,b,c", comments="")
    expect = DiffusionMap(n_components=3, bandwidth=0.5).fit_transform(X)
    for name in ("x.npy", "x.csv"):
        out = tmp_path / f"{name}.coords.npy"
        rc = embed_main([str(tmp_path / name), "--out", str(out), "--n-components", "3", "--bandwidth", "0.5", "--device", "cpu"])
        assert rc == 0
        got = np.load(out)
        assert got.shape == (150, 3)
        assert np.abs(got - expect).max() < 1e-10
    assert "eigenvalues: 1.000000" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["swiss-roll", "circle"])
def test_embed_builtin_with_plot(tmp_path, name):
    png = tmp_path / "e.png"
    rc = embed_main([name, "--n", "300", "--plot", str(png), "--bandwidth", "knn", "--out", str(tmp_path / "c.npy")])
    assert rc == 0 and png.stat().st_size > 10_000
    assert np.load(tmp_path / "c.npy").shape == (300, 2)


def test_datasets():
    for name in ("swiss-roll", "circle", "sphere", "torus"):
        X, colour, _ = dataset(name, 50)
        assert X.shape[0] == 50 and colour.shape == (50,) and np.isfinite(X).all()


def test_embed_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        embed_main([str(tmp_path / "missing.npy")])
    np.save(tmp_path / "bad.npy", np.full((10, 2), np.nan))
    with pytest.raises(SystemExit, match="NaN"):
        embed_main([str(tmp_path / "bad.npy")])
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(SystemExit, match=".npy or .csv"):
        embed_main([str(tmp_path / "x.txt")])
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(SystemExit, match="cannot read it as numbers"):  # not a numpy traceback
        embed_main([str(tmp_path / "ragged.csv")])
    (tmp_path / "words.csv").write_text("a,b\nc,d\n")
    with pytest.raises(SystemExit, match="cannot read it as numbers"):
        embed_main([str(tmp_path / "words.csv")])


def test_demo_diffusion(tmp_path):
    report = demo_diffusion("cpu", str(tmp_path / "demo.png"))
    assert "swiss roll N=1000" in report and (tmp_path / "demo.png").exists()
    rho = float(report.split("roll parameter: ")[1].split()[0])
    assert rho > 0.95
