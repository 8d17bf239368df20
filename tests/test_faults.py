"""Faults: a rank killed in a normal run ends the job fast, and --resume auto finishes it (writes: test_storage)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, HOROVODRUN, rank_pid

from hvd_mlp import storage


@pytest.mark.parametrize("controller", ["mpi", "gloo"])
def test_killed_rank_ends_the_job_and_resume_continues(tmp_path, controller):
    out, log = tmp_path / "run", tmp_path / "log"
    args = [sys.executable, "-m", "hvd_mlp.train", "--dataset", "synthetic", "--synthetic-size", "20000",
            "--epochs", "6", "--log-every", "0", "--output-dir", str(out)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HOROVOD_")}, "PATH": f"{BIN}:{os.environ['PATH']}"}
    with open(log, "w") as fh:
        job = subprocess.Popen([HOROVODRUN, "-np", "2", "-H", "localhost:2", f"--{controller}", *args],
                               stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while "epoch 2/6" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        victim = rank_pid(out, 1)
        assert victim, log.read_text()[-2000:]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        code = job.wait(timeout=90)
        elapsed = time.time() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
    assert code != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end after the kill"
    ckpt = storage.read_checkpoint(str(out / "checkpoint.pt"))  # intact (written atomically)
    assert ckpt["epoch"] >= 2 and [e["epoch"] for e in ckpt["history"]] == list(range(1, ckpt["epoch"] + 1))
    # the launchers may print their own tracebacks; none may run through hvd_mlp's code
    assert not re.search(r'File "[^"]*/hvd_mlp/\w+\.py"', log.read_text()), log.read_text()[-3000:]

    resumed = subprocess.run([HOROVODRUN, "-np", "2", "-H", "localhost:2", f"--{controller}", *args,
                              "--resume", "auto"], capture_output=True, text=True, env=env, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch {ckpt['epoch']}" in resumed.stdout
    res = json.loads((out / "results.json").read_text())
    assert [e["epoch"] for e in res["epochs"]] == [1, 2, 3, 4, 5, 6]  # lost at most the epochs since the checkpoint
