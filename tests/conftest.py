"""Shared helpers: launching the real horovodrun from the test's own virtual environment."""
import json
import os
import subprocess
import sys

import pytest

from hvd_mlp.netns import launcher_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
HOROVODRUN = os.path.join(BIN, "horovodrun")
# a small run across hosts: seconds on 2 cores, a timeline window in every epoch
SMALL_RUN = ["--dataset", "synthetic", "--synthetic-size", "4000", "--hidden", "128,64", "--log-every", "0",
             "--timeline-mode", "window", "--timeline-steps", "10"]


def horovodrun(np_: int, controller: str, command: list, timeout: int = 240, env=None, cwd=None):
    """Run `horovodrun -np N --gloo|--mpi COMMAND` on localhost; returns the CompletedProcess (text)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HOROVOD_")}  # no stray timeline etc.
    full_env = {**inherited, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **(env or {})}
    cmd = [HOROVODRUN, "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}", *command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


def train_across(cluster, controller: str, out, timeout: int = 300):
    """SMALL_RUN for 2 epochs across the cluster's nodes: scripts/launch.sh on node1 with the cluster's hostfile,
    as a user would launch it."""
    return cluster.run_on(0, [
        f"{REPO}/scripts/launch.sh", "-np", str(cluster.n), "--hostfile", cluster.hostfile(), f"--{controller}",
        "--nic", "hvd0", "--start-timeout", "60", "--", *SMALL_RUN, "--epochs", "2", "--output-dir", out],
        timeout=timeout, env=launcher_env())


def check_two_host_run(out, controller="mpi", epochs=2) -> dict:
    """results.json of a run across node1 and node2 (rank 0 on node1): both ranks ended with the same parameters,
    rank 0 recorded a timeline window and the communication of every epoch. Returns the results."""
    res = json.loads((out / "results.json").read_text())
    assert res["world"]["size"] == 2 and res["world"]["hosts"] == ["node1", "node2"]
    assert res["world"]["controller"] == controller
    assert [e["epoch"] for e in res["epochs"]] == list(range(1, epochs + 1))
    assert res["world"]["param_digests"][0] == res["world"]["param_digests"][1]
    assert (out / f"timeline-epoch{epochs}.json").stat().st_size > 0
    for e in res["epochs"]:
        assert e["comm"]["allreduce_ops"] > 0 and e["comm"]["allreduce_bytes"] > 0 and e["comm"]["comm_share"] > 0
    return res


def train_processes(out_dir) -> dict:
    """{pid: environment} of the training processes (not their launchers) whose command line names out_dir."""
    found = {}
    for pid in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            env = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if cmdline.startswith(sys.executable) and "hvd_mlp.train" in cmdline and str(out_dir) in cmdline:
            found[int(pid)] = set(env)
    return found


def rank_pid(out_dir, rank: int):
    """The pid of training rank `rank` whose command line names out_dir (Gloo sets HOROVOD_RANK, mpirun
    OMPI_COMM_WORLD_RANK), or None."""
    wanted = {f"HOROVOD_RANK={rank}", f"OMPI_COMM_WORLD_RANK={rank}"}
    return next((pid for pid, env in train_processes(out_dir).items() if wanted & env), None)


def python_module(module: str, *args) -> list:
    return [sys.executable, "-m", module, *map(str, args)]


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory that takes no new file, even for root (chattr +i: root ignores the mode bits)."""
    path = tmp_path / "read-only"
    path.mkdir()
    path.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        (path / "probe").touch()
        pytest.skip("cannot make a read-only directory on this file system")
    except OSError:
        pass
    yield path
    if immutable:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)


@pytest.fixture(params=["gloo", "mpi"])
def controller(request):
    return request.param
