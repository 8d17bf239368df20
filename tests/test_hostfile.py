"""Hostfile checks: each mistake named with its line, and the launcher refusing before horovodrun runs."""
import os
import subprocess
import sys

import pytest

from hvd_mlp.errors import UserError
from hvd_mlp.hostfile import parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_comments_and_blank_lines_are_fine():
    assert parse("# cluster\n\nnode1 slots=2  # first\n\nnode2 slots=4\n") == [("node1", 2), ("node2", 4)]


@pytest.mark.parametrize("text, message", [
    ("node1\n", "hostfile:1: expected '<host> slots=<N>', got 'node1'"),
    ("node1 slots=2\nnode2 slot=2\n", "hostfile:2: expected '<host> slots=<N>', got 'node2 slot=2'"),
    ("node1 slots=two\n", "hostfile:1: slots must be a whole number, got 'two'"),
    ("# c\nnode1 slots=0\n", "hostfile:2: slots must be > 0, got 0"),
    ("node1 slots=-3\n", "hostfile:1: slots must be > 0, got -3"),
    ("node1 slots=1\n\nnode1 slots=2\n", "hostfile:3: host node1 is listed again (first on line 1)"),
    ("node/1 slots=1\n", "hostfile:1: 'node/1' is not a host name or address"),
    ("# nothing\n\n", "hostfile: no hosts"),
])
def test_mistakes_are_named_with_their_line(text, message):
    with pytest.raises(UserError) as err:
        parse(text)
    assert str(err.value) == message


def check(*args):
    return subprocess.run([sys.executable, "-m", "hvd_mlp.hostfile", "check", *map(str, args)],
                          capture_output=True, text=True)


def test_check_counts_slots_against_np(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("a slots=2\nb slots=1\n")
    assert check(f, "--np", 3).returncode == 0
    proc = check(f, "--np", 4)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hvd_mlp.hostfile: error: {f}: 3 slots in all, fewer than -np 4"


def test_launcher_refuses_a_bad_hostfile_in_one_line(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("node1 slots=2\nnode2 slots=x\n")
    venv = os.path.dirname(os.path.dirname(sys.executable))
    proc = subprocess.run([os.path.join(REPO, "scripts", "launch.sh"), "-np", "2", "--hostfile", str(f), "--",
                           "--epochs", "1"], capture_output=True, text=True, env={**os.environ, "HVD_MLP_VENV": venv})
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hvd_mlp.hostfile: error: {f}:2: slots must be a whole number, got 'x'"


@pytest.mark.parametrize("args, message", [
    (["check", "{f}", "--np", "-5"], "argument --np: must be >= 0, got -5"),
    (["check", "{f}", "--np", "two"], "argument --np: expected a whole number >= 0, got 'two'"),
    (["clean", "{f}", "{d}/missing/out"], "argument out: cannot write {d}/missing/out: No such file or directory"),
    (["clean", "{f}", "{d}"], "argument out: {d} is a directory, not a file"),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    f = tmp_path / "hosts"
    f.write_text("a slots=2\n")
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.hostfile", *(a.format(f=f, d=tmp_path) for a in args)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "hvd_mlp.hostfile: error: " + message.format(d=tmp_path)


def test_clean_writes_what_horovodrun_reads(tmp_path):
    f, out = tmp_path / "hosts", tmp_path / "clean"
    f.write_text("# cluster\n\na slots=2  # first\nb slots=1\n")
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.hostfile", "clean", str(f), str(out), "--np", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "a slots=2\nb slots=1\n"


def test_help_says_what_each_argument_is():
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.hostfile", "clean", "--help"], capture_output=True, text=True)
    assert "file        the hostfile:" in proc.stdout and "out         the clean hostfile" in proc.stdout
