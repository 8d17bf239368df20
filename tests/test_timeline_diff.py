"""timeline diff on real runs (MPI against Gloo, under the real horovodrun), the epoch slice of a real run, and
the report's step and series figures."""
import json
import shutil
import subprocess

import pytest

from conftest import horovodrun, python_module
from hvd_mlp import report
from hvd_mlp.model import default_sizes, parameter_count_of

RUN = ["--dataset", "synthetic", "--synthetic-size", "4000", "--epochs", "2", "--log-every", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training under MPI (full timeline) and Gloo (window mode)."""
    root = tmp_path_factory.mktemp("diff")
    for controller, mode in (("mpi", "full"), ("gloo", "window")):
        proc = horovodrun(2, controller, python_module("hvd_mlp.train", *RUN, "--timeline-mode", mode,
                                                       "--timeline-steps", "10", "--output-dir", root / controller))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "mpi", root / "gloo"


def timeline_cli(*args):
    return subprocess.run(python_module("hvd_mlp.timeline", *args), capture_output=True, text=True)


def test_diff_mpi_against_gloo(runs):
    mpi, gloo = runs
    proc = timeline_cli("diff", mpi, gloo, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    rows = {r["name"]: r for r in d["per_step"]}
    gradient_mb = parameter_count_of(default_sizes()) * 4 / 1e6
    assert rows["allreduce MB"]["a"] == pytest.approx(gradient_mb, rel=0.05)  # the same bytes per step ...
    assert rows["allreduce MB"]["ratio"] == pytest.approx(1, abs=0.05)
    assert rows["allreduce ops"]["a"] == pytest.approx(8, rel=0.05) == rows["allreduce ops"]["b"]
    assert rows["collective ms"]["a"] > 0 and rows["collective ms"]["b"] > 0  # ... moved by two transports
    assert [r["name"] for r in d["epochs"]] == [f"epoch {n} {k}" for n in (1, 2)
                                                for k in ("comm_share", "exposed_s", "bandwidth_MBps")]
    assert d["tensors"] and all(r["change"] == pytest.approx(r["b"] - r["a"]) for r in d["tensors"])
    text = timeline_cli("diff", mpi, gloo)
    assert text.returncode == 0 and "per step" in text.stdout and "B/A" in text.stdout


def test_diff_of_a_run_with_itself_changes_nothing(runs):
    d = json.loads(timeline_cli("diff", runs[1], runs[1], "--json").stdout)
    assert all(r["change"] == 0 for r in d["per_step"] + d["epochs"] + d["tensors"])


@pytest.mark.parametrize("args, message", [(["nothing-here", "{a}"], "cannot read nothing-here: No such file"),
                                           (["{a}", "{a}", "--top", "-1"], "must be >= 0")])
def test_bad_diff_is_one_line(runs, args, message):
    proc = timeline_cli("diff", *(a.format(a=runs[0]) for a in args))
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_epoch_slice_of_a_real_run_has_the_epochs_figures(runs, tmp_path):
    mpi = runs[0]
    out = tmp_path / "epoch2.json"
    proc = timeline_cli("slice", mpi / "timeline.json", out, "--epoch", "2", "--results", mpi)
    assert proc.returncode == 0, proc.stderr
    whole = json.loads((mpi / "results.json").read_text())["epochs"][1]["comm"]
    part = json.loads(timeline_cli("summarize", out, "--json").stdout)["total"]
    for key in ("comm_us", "op_us", "collective_us", "allreduce_bytes", "allreduce_ops"):
        assert part[key] == pytest.approx(whole[key]), key


def test_report_draws_steps_and_series(runs, tmp_path):
    written, _, _ = report.make_report([str(r) for r in runs], str(tmp_path))
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert {"steps.png", "mpi-series.png", "gloo-series.png"} <= set(names)


def test_a_window_file_of_a_run_missing_another_window(runs, tmp_path):
    """One window file lost from a copied run: the others are still analysed (it was a FileNotFoundError)."""
    copy = tmp_path / "copy"
    shutil.copytree(runs[1], copy)
    (copy / "timeline-epoch1.json").unlink()
    proc = timeline_cli("summarize", copy / "timeline-epoch2.json", "--results", copy, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [e["epoch"] for e in json.loads(proc.stdout)] == [2]
