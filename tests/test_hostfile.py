"""Hostfile checks: each mistake named with its line, and the launcher refusing before horovodrun runs."""
import os
import subprocess
import sys

import pytest

from hvd_mlp.errors import UserError
from hvd_mlp.hostfile import expand_nodelist, expand_tasks, from_slurm, parse

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


@pytest.mark.parametrize("nodelist, hosts", [
    ("node1", ["node1"]),
    ("node[1-3,5],gpu01", ["node1", "node2", "node3", "node5", "gpu01"]),
    ("node[01-03]", ["node01", "node02", "node03"]),  # the first number's width is kept
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[001-3]", ["n001", "n002", "n003"]),
    ("rack1-n[1-2],10.0.0.[7-8]", ["rack1-n1", "rack1-n2", "10.0.0.7", "10.0.0.8"]),
    ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),  # several brackets: the product, as Slurm expands it
    ("n[10-12,9]", ["n10", "n11", "n12", "n9"]),  # Slurm's order is kept
])
def test_slurm_nodelists_expand_as_scontrol_show_hostnames_does(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("tasks, counts", [("1", [1]), ("2(x3),1", [2, 2, 2, 1]), ("4,2(x2)", [4, 2, 2])])
def test_slurm_tasks_per_node_expand(tasks, counts):
    assert expand_tasks(tasks) == counts


@pytest.mark.parametrize("nodelist, tasks, message", [
    ("node[1-2", "1", "SLURM_JOB_NODELIST 'node[1-2': unbalanced brackets in 'node[1-2'"),
    ("node1-2]", "1", "SLURM_JOB_NODELIST 'node1-2]': unbalanced brackets in 'node1-2]'"),
    ("node[3-1]", "1", "SLURM_JOB_NODELIST 'node[3-1]': range 3-1 runs backwards"),
    ("n[a-b]", "1", "SLURM_JOB_NODELIST 'n[a-b]': '[a-b]' is not a list of numbers and ranges like 1-4"),
    ("n[]", "1", "SLURM_JOB_NODELIST 'n[]': '[]' is not a list of numbers and ranges like 1-4"),
    ("n1,,n2", "1(x2)", "SLURM_JOB_NODELIST 'n1,,n2': empty host name"),
    ("n[1,1]", "1(x2)", "SLURM_JOB_NODELIST 'n[1,1]': host n1 is listed twice"),
    ("n/1", "1", "SLURM_JOB_NODELIST 'n/1': 'n/1' is not a host name"),
    ("n[1-2]", "2(x3)", "SLURM_JOB_NODELIST 'n[1-2]' names 2 host(s) but SLURM_TASKS_PER_NODE '2(x3)' gives 3 count(s)"),
    ("n[1-2]", "0,1", "SLURM_TASKS_PER_NODE '0,1': expected counts like '2(x3),1' (each > 0), got '0'"),
    ("n[1-2]", "2(3)", "SLURM_TASKS_PER_NODE '2(3)': expected counts like '2(x3),1' (each > 0), got '2(3)'"),
    ("n[1-2]", "1(x0)", "SLURM_TASKS_PER_NODE '1(x0)': expected counts like '2(x3),1' (each > 0), got '1(x0)'"),
])
def test_malformed_slurm_values_are_named(nodelist, tasks, message):
    with pytest.raises(UserError) as err:
        from_slurm(nodelist, tasks)
    assert str(err.value) == message


def from_slurm_cli(*args, env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run([sys.executable, "-m", "hvd_mlp.hostfile", "from-slurm", *args], capture_output=True,
                          text=True, env={**base, **(env or {})})


def test_from_slurm_reads_slurms_variables_and_prints_both_formats():
    env = {"SLURM_JOB_NODELIST": "node[1-2],gpu01", "SLURM_TASKS_PER_NODE": "2(x2),4"}
    proc = from_slurm_cli(env=env)
    assert proc.returncode == 0 and proc.stdout == "node1:2,node2:2,gpu01:4\n"
    proc = from_slurm_cli("--hostfile", env=env)
    assert proc.returncode == 0 and proc.stdout == "node1 slots=2\nnode2 slots=2\ngpu01 slots=4\n"
    assert parse(proc.stdout) == [("node1", 2), ("node2", 2), ("gpu01", 4)]  # what `check` accepts
    proc = from_slurm_cli("--nodelist", "n[7-8]", "--tasks-per-node", "1(x2)", env=env)  # flags win
    assert proc.stdout == "n7:1,n8:1\n"


def test_from_slurm_outside_an_allocation_says_so_in_one_line():
    proc = from_slurm_cli()
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "hvd_mlp.hostfile: error: SLURM_JOB_NODELIST is not set: run this inside a Slurm " \
                          "allocation (sbatch, salloc) or pass --nodelist\n"
    proc = from_slurm_cli(env={"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "1(x2"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
