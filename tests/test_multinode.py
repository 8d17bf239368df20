"""Training across real hosts: network namespaces with their own addresses, hostnames and sshd, joined by a bridge.

horovodrun runs on node1 and reaches every node over ssh through scripts/launch.sh and a hostfile of addresses;
mpirun does the same without horovodrun; elastic, horovodrun runs there itself with a host discovery script, and
node2 is lost whole and comes back.
"""
import os
import sys
import time

import pytest

from conftest import REPO, SMALL_RUN, check_two_host_run, launcher_env, train_across
from hvd_mlp import elastic_bench, results
from hvd_mlp.netns import Cluster, namespaces_usable

WHY_NOT = namespaces_usable()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "namespaces usable")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(2, tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.mark.parametrize("controller", ["mpi", "gloo"])
def test_training_across_two_hosts(cluster, controller, tmp_path):
    out = tmp_path / "run"
    proc = train_across(cluster, controller, out)
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


def test_elastic_host_lost_and_back_across_two_hosts(cluster, tmp_path):
    """Gloo elastic by host name: node2 is lost whole (every process killed, sshd included) and leaves the discovery
    -> the job goes on on node1; node2 is back (sshd again, listed again) -> the job grows onto it again."""
    hosts, out, log = tmp_path / "hosts", tmp_path / "run", tmp_path / "log"

    def listed(*names):  # atomically: the discovery script must never read a half-written file
        (tmp_path / "hosts.tmp").write_text("".join(f"{n} slots=1\n" for n in names))
        os.replace(tmp_path / "hosts.tmp", hosts)
    listed("node1", "node2")
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_"))}
    env.update(PATH=f"{venv}/bin:{env['PATH']}", HVD_MLP_HOSTFILE=str(hosts))
    cmd = [f"{venv}/bin/horovodrun", "-np", "2", "--min-np", "1", "--max-np", "2", "--network-interfaces", "hvd0",
           "--host-discovery-script", elastic_bench.observed_discovery(str(tmp_path)), sys.executable, "-m", "hvd_mlp.train",
           "--elastic", "--dataset", "synthetic", "--synthetic-size", elastic_bench.SAMPLES, "--epochs", "12",
           "--log-every", "0", "--commit-every", "10", "--threads", "1", "--output-dir", out]

    def wait_until(predicate, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline and job.poll() is None:
            if predicate():
                return True
            time.sleep(0.2)
        return predicate()

    def wait_for(text, timeout):
        return wait_until(lambda: text in log.read_text(), timeout)

    with open(log, "w") as fh:
        job = cluster.start_on(0, cmd, fh, env=env)
    try:
        assert wait_for("epoch 1/", 120), log.read_text()[-3000:]
        time.sleep(0.4)  # mid-epoch 2
        cluster.lose(1)
        listed("node1")
        assert wait_for("world: 2 -> 1 ranks (lost host node2) at epoch 2", 60), log.read_text()[-3000:]
        answers = len(elastic_bench.discovered(str(tmp_path)))
        assert wait_until(lambda: any("node2" not in a for a in elastic_bench.discovered(str(tmp_path))[answers:]))
        time.sleep(1)  # horovodrun has seen node2 gone (it must, to take it back)
        cluster.bring_back(1)
        listed("node1", "node2")
        back = time.time()
        assert wait_for("world: 1 -> 2 ranks (added host node2)", 60), log.read_text()[-3000:]
        grow_s = time.time() - back
        assert job.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
    record = results.read(str(out))
    assert [c.size for c in record.world_changes] == [2, 1, 2], record.world_changes
    assert record.world_changes[1].lost_hosts == ["node2"] and record.world_changes[2].added_hosts == ["node2"]
    assert sorted(record.world.hosts) == ["node1", "node2"]
    # every epoch once and complete, identical parameters, the printed world lines = world_changes
    problems = elastic_bench.check_record(record, log.read_text(), 12)
    assert not problems, problems
    print(f"grew back onto node2 {grow_s:.1f} s after it returned")
