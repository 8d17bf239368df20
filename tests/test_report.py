"""Report: PNG figures from a small real run, the scaling table, and one clear line without results."""
import json
import shutil
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
    assert names == sorted([f"np{n}-mpi-{kind}.png" for n in (1, 2) for kind in ("training", "time", "comm", "series", "ranks")
                            if n == 2 or kind in ("training", "time")] + ["scaling.png", "steps.png"])
    assert "no np1-mpi-comm.png: nothing was communicated (one rank)" in proc.stdout  # not empty axes
    for png in (tmp_path / "fig").iterdir():
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, png  # a real figure, not an empty canvas
    assert "speedup" in proc.stdout and "efficiency" in proc.stdout


def run_of(size, controller, rate, comm_share=None):
    epoch = {"comm": {"comm_share": comm_share}} if comm_share is not None else {}
    return {"name": f"np{size}-{controller}", "world": {"size": size, "controller": controller},
            "summary": {"samples_per_s": rate, "comm_wait_share": 0.25}, "epochs": [epoch, epoch]}


def test_scaling_rows_by_hand():
    rows = report.scaling_rows([run_of(2, "mpi", 1500.0, 0.2), run_of(1, "mpi", 1000.0, 0.0),
                                run_of(4, "mpi", 2000.0, 0.4), run_of(2, "gloo", 900.0)])
    assert [(r["np"], r["controller"], r["speedup"], r["efficiency"]) for r in rows] == [
        (2, "gloo", None, None),  # no one-rank Gloo run: nothing to measure a speedup against
        (1, "mpi", 1.0, 1.0), (2, "mpi", 1.5, 0.75), (4, "mpi", 2.0, 0.5)]
    assert [(r["comm_share"], r["comm_source"]) for r in rows] == [
        (0.25, "loop wait"), (0.0, "timeline"), (0.2, "timeline"), (0.4, "timeline")]


def test_scaling_rows(two_runs):
    rows = report.scaling_rows([report.load_run(str(d)) for d in two_runs])
    assert [(r["np"], r["controller"]) for r in rows] == [(1, "mpi"), (2, "mpi")]
    assert all(r["comm_source"] == "timeline" for r in rows)
    assert rows[0]["comm_share"] == 0 and 0 < rows[1]["comm_share"] < 1  # one rank has nothing to communicate


def test_directory_without_results_is_one_line(tmp_path):
    proc = subprocess.run(python_module("hvd_mlp.report", tmp_path, "--out", tmp_path / "fig"),
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hvd_mlp.report: error: {tmp_path} holds no results.json " \
                                  "(is it a hvd_mlp run directory?)"


@pytest.mark.parametrize("change, message", [
    (lambda r: {"epochs": []}, "results.json: 'config' is missing"),
    (lambda r: {**r, "epochs": [1, 2, 3]}, "epochs[0]: expected an object, got a number"),
    (lambda r: {k: v for k, v in r.items() if k != "world"}, "'world' is missing"),
    (lambda r: {**r, "epochs": [{**r["epochs"][0], "train_loss": "low"}]}, "train_loss must be a number"),
    (lambda r: {**r, "epochs": []}, "holds no finished epoch"),
])
def test_bad_results_is_one_line(two_runs, tmp_path, change, message):
    real = json.loads((two_runs[0] / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps(change(real)))
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.report", str(tmp_path), "--out", str(tmp_path / "f")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def report_cli(*args):
    return subprocess.run(python_module("hvd_mlp.report", *args), capture_output=True, text=True)


def test_two_runs_without_one_rank_and_of_the_same_name(two_runs, tmp_path):
    """No np=1 run: no speedup (a larger world's rate per rank is not one rank's); runs/a/x and runs/b/x both
    keep their figures."""
    for parent in ("a", "b"):
        shutil.copytree(two_runs[1], tmp_path / parent / "x")
    proc = report_cli(tmp_path / "a" / "x", tmp_path / "b" / "x", "--out", tmp_path / "fig")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("  2 ")]
    assert [r[3:5] for r in rows] == [["-", "-"], ["-", "-"]], proc.stdout
    names = {p.name for p in (tmp_path / "fig").iterdir()}
    assert {f"{run}-{kind}.png" for run in ("a-x", "b-x") for kind in ("training", "time", "comm")} < names
    assert report.scaling_rows([report.load_run(str(tmp_path / p / "x")) for p in "ab"])[0]["speedup"] is None


def test_same_run_twice_is_one_line(two_runs, tmp_path):
    proc = report_cli(two_runs[0], two_runs[0], "--out", tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hvd_mlp.report: error: {two_runs[0]} is given twice"


def captured(monkeypatch):
    """Keep the figure that would be saved, to look at what it shows."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig) or path)
    return figures


def test_scaling_figure_shows_every_value(monkeypatch):
    rows = [{"name": f"np{n}", "np": n, "controller": "mpi", "samples_per_s": 100 * s, "speedup": s,
             "efficiency": s / n, "comm_share": 0.1 * (n - 1), "comm_source": "loop wait"}
            for n, s in ((1, 1.0), (2, 9.66), (4, 13.2))]
    figures = captured(monkeypatch)
    report.plot_scaling(rows, "unused.png")
    (ax_rate, ax_speed), (ax_eff, ax_comm) = figures[0].axes[0:2], figures[0].axes[2:4]
    assert ax_eff.get_ylim()[1] > 483  # the sweep's 483% bar was clipped at 110%
    assert sorted(t.get_text() for t in ax_eff.texts) == ["100%", "330%", "483%"]  # each bar has its value
    for ax in (ax_rate, ax_speed):
        ideal = next(line for line in ax.lines if line.get_label().startswith("ideal"))
        assert ideal.get_zorder() > max(line.get_zorder() for line in ax.lines if line is not ideal)
    assert "synchronize" in ax_comm.get_title() and "timeline" not in ax_comm.get_title()


def test_time_figure_says_what_each_measure_is(two_runs, monkeypatch):
    figures = captured(monkeypatch)
    res = report.load_run(str(two_runs[0]))
    report.plot_time(res, "unused.png")
    ax = figures[0].axes[0]
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "synchronize()" in legend and "rank 0's timeline (window scaled)" in legend
    assert any("background cycle" in t.get_text() for t in ax.texts)  # why the wait can exceed the line
    assert ": 1 rank," in ax.get_title()


@pytest.mark.parametrize("out, message", [("file/fig", "cannot make directory"), ("file", "is a file"),
                                          ("", "expected a directory path")])
def test_out_that_cannot_be_written_is_one_line(two_runs, tmp_path, out, message):
    (tmp_path / "file").write_text("x")
    proc = report_cli(two_runs[0], "--out", tmp_path / out if out else "")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr


def test_out_in_a_read_only_directory_is_one_line(two_runs, read_only_dir):
    proc = report_cli(two_runs[0], "--out", read_only_dir / "fig")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"hvd_mlp.report: error: argument --out: cannot write {read_only_dir / 'fig'}: ")
    assert len(proc.stderr.strip().splitlines()) == 1
