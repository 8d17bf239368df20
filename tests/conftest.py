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


def python_module(module: str, *args) -> list:
    return [sys.executable, "-m", module, *map(str, args)]


@pytest.fixture(params=["gloo", "mpi"])
def controller(request):
    return request.param
