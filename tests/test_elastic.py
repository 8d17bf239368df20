"""Elastic training under the real horovodrun: a worker is killed mid-epoch, the job shrinks, then grows back."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import BIN, HOROVODRUN, rank_pid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES, EPOCHS = 20000, 30


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def world_sizes(results_path):
    try:
        return [c["size"] for c in json.loads(results_path.read_text())["world_changes"]]
    except (OSError, ValueError, KeyError):
        return []


def test_worker_killed_mid_epoch_then_slot_added_back(tmp_path):
    hosts, out, log = tmp_path / "hosts", tmp_path / "run", tmp_path / "log"
    hosts.write_text("localhost slots=1\n127.0.0.1 slots=1\n")  # two host names, so the dead one's can be dropped
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOROVOD_")}
    env.update(PATH=f"{BIN}:{env['PATH']}", HVD_MLP_HOSTFILE=str(hosts))
    cmd = [HOROVODRUN, "-np", "2", "--min-np", "1", "--max-np", "2", "--host-discovery-script",
           os.path.join(REPO, "scripts", "discover_hosts.sh"), sys.executable, "-m", "hvd_mlp.train", "--elastic",
           "--dataset", "synthetic", "--synthetic-size", str(SAMPLES), "--epochs", str(EPOCHS), "--log-every", "0",
           "--commit-every", "10", "--checkpoint-every", "0",
           "--threads", "1", "--output-dir", str(out)]  # both "hosts" are this machine: 1 thread per rank
    with open(log, "w") as fh:
        job = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        victim = wait_for(lambda: rank_pid(out, 1) if "epoch 1/" in log.read_text() else None, 120,
                          "the first epoch of two ranks")
        os.kill(victim, signal.SIGKILL)  # mid-epoch 2 (epochs take ~1 s here)
        wait_for(lambda: "hvd_mlp: 1 ranks" in log.read_text(), 60, "the job to shrink to one rank")
        time.sleep(8)  # let the driver settle on the smaller world
        hosts.write_text("localhost slots=2\n")  # a slot comes back
        wait_for(lambda: world_sizes(out / "results.json")[-1:] == [2], 90, "the job to grow back to two")
        assert job.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
    res = json.loads((out / "results.json").read_text())
    assert [c["size"] for c in res["world_changes"]] == [2, 1, 2]
    assert [e["epoch"] for e in res["epochs"]] == list(range(1, EPOCHS + 1))  # every epoch, once
    for e in res["epochs"]:  # complete: what ran after the last change plus what was committed before it
        assert SAMPLES - 2 <= e["samples"] + e["resumed_at_samples"] <= SAMPLES, e
    assert any(e["resumed_at_samples"] > 0 for e in res["epochs"])  # at least one change came mid-epoch
    assert res["epochs"][-1]["world_size"] == 2 and res["epochs"][-1]["val_acc"] > 0.9
