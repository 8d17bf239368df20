"""Benchmarks: every flag checked before any run starts, a failed run named by its own error, and a sweep whose
figures stay in its run directory."""
import json
import os
import subprocess

import pytest

from conftest import horovodrun, python_module
from hvd_mlp import bench
from hvd_mlp.errors import UserError


@pytest.mark.parametrize("args, message", [
    (["recording", "--repeats", "0"], "argument --repeats: must be > 0, got 0"),
    (["recording", "--np", "-2"], "argument --np: must be > 0, got -2"),
    (["recording", "--batch-size", "x"], "argument --batch-size: expected a whole number > 0, got 'x'"),
    (["compare", "--repeats", "0"], "argument --repeats: must be > 0, got 0"),
    (["compare", "--rep", "1"], "unrecognized arguments: --rep 1"),  # no abbreviations in subcommands either
    (["timeline", "--size-mb", "-5"], "argument --size-mb: must be > 0, got -5"),
    (["timeline", "--size-mb", "nan"], "argument --size-mb: must be > 0, got nan"),
    (["timeline", "--file", "{d}/missing/t.json"], "argument --file: cannot write {d}/missing/t.json: No such file or "
                                                    "directory"),
    (["scaling", "--steps", "0"], "argument --steps: must be > 0, got 0"),
    (["scaling", "--runs", "{d}/file/runs"],
     "argument --runs: cannot make directory {d}/file/runs: {d}/file is a file"),
    (["scaling", "--out", "{d}/file"], "argument --out: {d}/file is a file, not a directory"),
])
def test_bad_flags_are_refused_before_any_run(tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run(python_module("hvd_mlp.bench", *(a.format(d=tmp_path) for a in args)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hvd_mlp.bench: error: {message.format(d=tmp_path)}"


def test_a_failed_run_is_named_by_its_own_error(tmp_path, controller):
    """Not by mpirun's 'Process name: [[14532,1],0] | Exit code: 2' box, nor horovodrun's traceback."""
    with pytest.raises(UserError) as err:
        bench.run_training(2, controller, ["--timeline-steps", "-5"], str(tmp_path / "run"))
    assert str(err.value) == "training failed: hvd_mlp.train: error: --timeline-steps must be > 0, got -5"


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "np2-mpi"
    proc = horovodrun(2, "mpi", python_module(
        "hvd_mlp.train", "--dataset", "synthetic", "--synthetic-size", "2000", "--epochs", "2", "--log-every", "0",
        "--timeline-mode", "window", "--timeline-steps", "5", "--output-dir", out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def test_scaling_writes_its_figures_into_the_sweep(tmp_path, monkeypatch, capsys, one_run):
    """The sweep's runs are stood in for by one real run's results (six real runs take minutes)."""
    def fake_run(np_, controller, train_args, out_dir):
        os.makedirs(out_dir)
        res = {**one_run, "world": {**one_run["world"], "size": np_, "controller": controller}}
        with open(os.path.join(out_dir, "results.json"), "w") as fh:
            json.dump(res, fh)
        return res
    monkeypatch.setattr(bench, "run_training", fake_run)
    monkeypatch.setattr(bench, "raw_mpi_allreduce_us", lambda np_, out_dir: 300.0)
    monkeypatch.chdir(tmp_path)  # a default that wrote into docs/figures would write here
    bench.main(["scaling", "--runs", str(tmp_path / "runs"), "--steps", "5"])
    (sweep,) = (tmp_path / "runs").iterdir()
    assert f"figures to {sweep}\n" in capsys.readouterr().out
    assert (sweep / "scaling.png").exists() and (sweep / "np2-gloo-comm.png").exists()
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize("args, message", [
    (["--data-dir", "{d}"], "no MNIST under {d} (torchvision's MNIST/raw/*-ubyte files)"),
    (["--data-dir", "{d}", "--np", "0"], "argument --np: must be > 0, got 0"),
    (["--data-d", "{d}"], "the following arguments are required: --data-dir"),  # no abbreviations
])
def test_baseline_refuses_in_one_line(tmp_path, args, message):
    """The yardstick bench compare runs: a missing dataset was a traceback from every spawned worker."""
    proc = subprocess.run(python_module("hvd_mlp.baseline", *(a.format(d=tmp_path) for a in args)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hvd_mlp.baseline: error: {message.format(d=tmp_path)}"
