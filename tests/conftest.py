"""Shared helpers: launching the real horovodrun from the test's own virtual environment."""
import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
HOROVODRUN = os.path.join(BIN, "horovodrun")


def horovodrun(np_: int, controller: str, command: list, timeout: int = 240, env=None, cwd=None):
    """Run `horovodrun -np N --gloo|--mpi COMMAND` on localhost; returns the CompletedProcess (text)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HOROVOD_")}  # no stray timeline etc.
    full_env = {**inherited, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **(env or {})}
    cmd = [HOROVODRUN, "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}", *command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


def rank_pid(out_dir, rank: int):
    """The pid of training rank `rank` whose command line names out_dir (Gloo sets HOROVOD_RANK, mpirun
    OMPI_COMM_WORLD_RANK), or None."""
    wanted = {f"HOROVOD_RANK={rank}", f"OMPI_COMM_WORLD_RANK={rank}"}
    for pid in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            env = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if cmdline.startswith(sys.executable) and "hvd_mlp.train" in cmdline and str(out_dir) in cmdline \
                and wanted & set(env):
            return int(pid)
    return None


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
