"""What users see under horovodrun: whole lines, each with the launcher's tag at its start and nowhere else.

mpirun --tag-output (horovodrun's MPI launcher) tags every piece it reads from a rank; print() under
PYTHONUNBUFFERED (set in many images, and by horovodrun's Gloo launcher) writes a line and its newline apart.
"""
import re

from conftest import horovodrun, python_module

TAG = re.compile(r"\[\d+(,\d+)?\]<std(out|err)>:")
UNBUFFERED = {"PYTHONUNBUFFERED": "1"}


def assert_whole_lines(stdout: str):
    assert "\0" not in stdout
    lines = stdout.splitlines()
    assert lines
    for line in lines:
        assert TAG.match(line) and not TAG.search(line, 1), repr(line)  # one tag, at the start


def test_commbench_prints_whole_lines(tmp_path):
    proc = horovodrun(2, "mpi", python_module("hvd_mlp.commbench", "--sizes", "4096", "--repeats", "3"),
                      env=UNBUFFERED)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_whole_lines(proc.stdout)  # the library version line carried Open MPI's NUL byte


def test_training_prints_whole_lines(tmp_path, controller):
    proc = horovodrun(2, controller, python_module(
        "hvd_mlp.train", "--dataset", "synthetic", "--synthetic-size", "2000", "--epochs", "1", "--log-every", "5",
        "--output-dir", tmp_path / "run"), env=UNBUFFERED)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_whole_lines(proc.stdout)
    assert re.search(r"^\[1?,?0\]<stdout>:epoch 1/1 \| ", proc.stdout, re.M)
