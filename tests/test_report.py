"""Report: PNG figures from a small real run, the scaling table, and one clear line without results."""
import json
import subprocess
import sys

import pytest

from conftest import horovodrun, python_module
from hvd_mlp import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """np=1 and np=2 (MPI) with the timeline window on: a small real sweep."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for np_ in (1, 2):
        out = root / f"np{np_}-mpi"
        proc = horovodrun(np_, "mpi", python_module(
            "hvd_mlp.train", "--dataset", "synthetic", "--synthetic-size", "4000", "--epochs", "3", "--log-every",
            "0", "--timeline-mode", "window", "--timeline-steps", "10", "--output-dir", out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        dirs.append(out)
    return dirs


def test_report_writes_valid_pngs(two_runs, tmp_path):
    proc = subprocess.run(python_module("hvd_mlp.report", *two_runs, "--out", tmp_path / "fig"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == sorted([f"np{n}-mpi-{kind}.png" for n in (1, 2) for kind in ("training", "time", "comm")]
                           + ["np2-mpi-ranks.png", "scaling.png"])  # one rank has no per-rank figure
    for png in (tmp_path / "fig").iterdir():
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, png  # a real figure, not an empty canvas
    assert "speedup" in proc.stdout and "efficiency" in proc.stdout


def test_scaling_rows(two_runs):
    rows = report.scaling_rows([report.load_run(str(d)) for d in two_runs])
    assert [(r["np"], r["controller"]) for r in rows] == [(1, "mpi"), (2, "mpi")]
    assert rows[0]["speedup"] == pytest.approx(1.0) and rows[0]["efficiency"] == pytest.approx(1.0)
    assert rows[1]["efficiency"] == pytest.approx(rows[1]["speedup"] / 2)
    assert all(r["comm_source"] == "timeline" for r in rows)
    assert rows[0]["comm_share"] == 0 and 0 < rows[1]["comm_share"] < 1  # one rank has nothing to communicate


def test_directory_without_results_is_one_line(tmp_path):
    proc = subprocess.run(python_module("hvd_mlp.report", tmp_path, "--out", tmp_path / "fig"),
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hvd_mlp.report: error: {tmp_path} holds no results.json " \
                                  "(is it a hvd_mlp run directory?)"


def test_results_without_epochs_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"epochs": []}))
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.report", str(tmp_path), "--out", str(tmp_path / "f")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no finished epoch" in proc.stderr
