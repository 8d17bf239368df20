"""Under a real scheduler: scripts/slurm/train.sbatch on a two-node Slurm cluster (tests/slurmcluster.py).

Each job is submitted with sbatch on node1, from its test's own directory (--chdir), so that slurm-<id>.out and
runs/slurm-<id>/ land there as they would in a user's checkout; the test then polls scontrol until the job has
left the queue.
"""
import json
import os
import subprocess
import time

import pytest

from conftest import REPO, SMALL_RUN, check_two_host_run, launcher_env, train_processes
from hvd_mlp import storage
from slurmcluster import SlurmCluster, slurm_usable

SBATCH = os.path.join(REPO, "scripts", "slurm", "train.sbatch")
WHY_NOT = slurm_usable()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    with SlurmCluster(2, tmp_path_factory.mktemp("slurm")) as c:
        yield c


def submit(cluster, workdir, *args) -> str:
    """sbatch ARGS on node1, the job's directory workdir, one CPU per task (the ranks share this machine's cores);
    the job id."""
    proc = cluster.slurm(0, "sbatch", "--parsable", f"--chdir={workdir}", "--cpus-per-task=1", *args,
                         env=launcher_env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def finished(cluster, workdir, job: str, timeout=180) -> tuple:
    """(final state, the job's output) once job has left the queue."""
    state = cluster.wait_for_job(job, timeout)
    return state, (workdir / f"slurm-{job}.out").read_text()


def epochs_done(run) -> int:
    results = run / "results.json"  # rewritten atomically after every epoch
    return len(json.loads(results.read_text())["epochs"]) if results.exists() else 0


@pytest.mark.parametrize("launcher, command", [
    ("srun", "+ srun --mpi=pmix --kill-on-bad-exit=1 "),
    ("mpirun", "+ mpirun --bind-to none --map-by slot -np 2 --allow-run-as-root "),
    ("horovodrun", "-np 2 -H node1:1,node2:1 "),  # the host list that hvd_mlp.hostfile made of Slurm's variables
], ids=["srun", "mpirun", "horovodrun"])
def test_sbatch_trains_across_two_nodes(cluster, tmp_path, launcher, command):
    job = submit(cluster, tmp_path, SBATCH, "--launcher", launcher, "--", *SMALL_RUN, "--epochs", "2")
    state, log = finished(cluster, tmp_path, job)
    assert state == "COMPLETED", log[-3000:]
    assert command in log.splitlines()[0]
    res = check_two_host_run(tmp_path / "runs" / f"slurm-{job}")  # the run directory named after the job
    assert res["config"]["threads"] == 1  # --cpus-per-task
    assert log.count("hvd_mlp: 2 ranks") == 1 and log.count("epoch 2/2 |") == 1  # rank 0 alone prints
    assert log.count("% of epoch: allreduce") == 2  # each epoch's communication, from the timeline window


def test_scancel_ends_every_rank_and_resume_auto_finishes_the_run(cluster, tmp_path):
    run = tmp_path / "run"
    train = [SBATCH, "--", *SMALL_RUN, "--epochs", "40", "--output-dir", run]
    job = submit(cluster, tmp_path, *train)
    deadline = time.time() + 120
    while epochs_done(run) < 2 and cluster.job_state(job) in ("PENDING", "RUNNING") and time.time() < deadline:
        time.sleep(0.2)
    ranks = train_processes(run)
    namespaces = {os.readlink(f"/proc/{pid}/ns/net") for pid in ranks}
    assert len(ranks) == 2 and len(namespaces) == 2, (tmp_path / f"slurm-{job}.out").read_text()  # one per node

    assert cluster.slurm(0, "scancel", job).returncode == 0
    cancelled = time.time()
    while train_processes(run) and time.time() < cancelled + 90:
        time.sleep(0.2)
    elapsed = time.time() - cancelled
    assert not train_processes(run) and elapsed < 60, f"ranks still running {elapsed:.0f} s after scancel"
    state, log = finished(cluster, tmp_path, job, timeout=60)
    assert state == "CANCELLED" and f"JOB {job} ON node1 CANCELLED" in log
    ckpt = storage.read_checkpoint(str(run / "checkpoint.pt"))  # intact: written atomically
    assert 2 <= ckpt["epoch"] < 40 and [e["epoch"] for e in ckpt["history"]] == list(range(1, ckpt["epoch"] + 1))

    job = submit(cluster, tmp_path, *train, "--resume", "auto")
    state, log = finished(cluster, tmp_path, job)
    assert state == "COMPLETED", log[-3000:]
    assert f"resumed from {run}/checkpoint.pt after epoch {ckpt['epoch']}" in log
    check_two_host_run(run, epochs=40)


def test_from_slurm_reads_a_real_allocation(cluster, tmp_path):
    from_slurm = "python -m hvd_mlp.hostfile from-slurm"
    job = submit(cluster, tmp_path, "--nodes=2", "--ntasks-per-node=2",
                 "--wrap", f"{from_slurm} && {from_slurm} --hostfile")
    state, log = finished(cluster, tmp_path, job, timeout=60)
    assert state == "COMPLETED", log
    assert log == "node1:2,node2:2\nnode1 slots=2\nnode2 slots=2\n"  # from node[1-2] and 2(x2)


@pytest.mark.parametrize("args, line", [
    (["--launcher", "torchrun"], "train.sbatch: error: --launcher must be srun, mpirun or horovodrun, got 'torchrun'"),
    (["--", "--epochs", "0"], "hvd_mlp.train: error: --epochs must be > 0, got 0"),  # checked before any rank starts
], ids=["script", "train"])
def test_a_mistake_fails_the_job_in_one_line(cluster, tmp_path, args, line):
    job = submit(cluster, tmp_path, SBATCH, *args)
    state, log = finished(cluster, tmp_path, job, timeout=120)
    assert state == "FAILED"
    assert "ExitCode=2:0" in cluster.slurm(0, "scontrol", "show", "job", job).stdout
    assert log == line + "\n"


def test_the_job_script_outside_slurm_says_how_to_submit_it():
    proc = subprocess.run(["bash", SBATCH, "--launcher", "srun"], capture_output=True, text=True,
                          env=launcher_env())
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "train.sbatch: error: not inside a Slurm job: submit it with sbatch " \
                          "scripts/slurm/train.sbatch\n"
