"""Training across real hosts: network namespaces with their own addresses, hostnames and sshd, joined by a bridge.

horovodrun runs on node1 and reaches every node over ssh through scripts/launch.sh and a hostfile of addresses;
mpirun does the same without horovodrun.
"""
import sys
import time

import pytest

from conftest import REPO, SMALL_RUN, check_two_host_run, launcher_env
from netns import Cluster, namespaces_usable

WHY_NOT = namespaces_usable()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "namespaces usable")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(2, tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.mark.parametrize("controller", ["mpi", "gloo"])
def test_training_across_two_hosts(cluster, controller, tmp_path):
    out = tmp_path / "run"
    proc = cluster.run_on(0, [
        f"{REPO}/scripts/launch.sh", "-np", "2", "--hostfile", cluster.hostfile(), f"--{controller}",
        "--nic", "hvd0", "--start-timeout", "60", "--", *SMALL_RUN, "--epochs", "2", "--output-dir", out],
        timeout=300, env=launcher_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "+ " in proc.stderr and "horovodrun -np 2 --hostfile" in proc.stderr  # the launcher shows its command
    check_two_host_run(out, controller)


def test_mpirun_without_horovodrun_across_two_hosts(cluster, tmp_path):
    """Open MPI's own launcher, as docs/multinode.md writes it: orted on node2 over ssh, rank/size from MPI."""
    out = tmp_path / "run"
    proc = cluster.run_on(0, [
        "mpirun", "-np", "2", "-H", "node1:1,node2:1", "--allow-run-as-root", "-bind-to", "none", "-map-by", "slot",
        "-x", "PATH", "-x", "PYTHONPATH", "-mca", "pml", "ob1", "-mca", "btl", "^openib",
        "-mca", "btl_tcp_if_include", "hvd0", "-mca", "oob_tcp_if_include", "hvd0",
        sys.executable, "-m", "hvd_mlp.train", *SMALL_RUN, "--epochs", "2", "--output-dir", out],
        timeout=300, env=launcher_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_two_host_run(out)
    assert proc.stdout.count("hvd_mlp: 2 ranks") == 1 and proc.stdout.count("epoch 2/2 |") == 1  # rank 0 alone prints


def test_unreachable_host_fails_clearly_within_the_start_timeout(cluster, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{cluster.addresses[0]} slots=1\n10.199.77.9 slots=1\n")  # .9: no such node on the bridge
    started = time.time()
    proc = cluster.run_on(0, [f"{REPO}/scripts/launch.sh", "-np", "2", "--hostfile", hosts, "--gloo",
                              "--start-timeout", "20", "--", "--dataset", "synthetic", "--epochs", "1"],
                          timeout=120, env=launcher_env())
    elapsed = time.time() - started
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "launch.sh: error: cannot reach 10.199.77.9 over ssh within 20 s: " \
        "ssh: connect to host 10.199.77.9 port 22: No route to host"
    assert "Traceback" not in proc.stderr
    assert elapsed < 20 + 10
