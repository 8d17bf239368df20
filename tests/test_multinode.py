"""Training across real hosts: network namespaces with their own addresses, hostnames and sshd, joined by a bridge.

horovodrun runs on node1 and reaches every node over ssh through scripts/launch.sh and a hostfile of addresses.
"""
import json
import time

import pytest

from netns import REPO, Cluster, launcher_env, namespaces_usable

WHY_NOT = namespaces_usable()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "namespaces usable")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(2, tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.mark.parametrize("controller", ["mpi", "gloo"])
def test_training_across_two_hosts(cluster, controller, tmp_path):
    out = tmp_path / "run"
    proc = cluster.train(controller, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "+ " in proc.stderr and "horovodrun -np 2 --hostfile" in proc.stderr  # the launcher shows its command
    res = json.loads((out / "results.json").read_text())
    assert res["world"]["hosts"] == ["node1", "node2"]  # rank 0 on node1, rank 1 on node2
    assert res["world"]["controller"] == controller
    assert [e["epoch"] for e in res["epochs"]] == [1, 2]
    assert res["world"]["param_digests"][0] == res["world"]["param_digests"][1]
    assert (out / "timeline-epoch2.json").stat().st_size > 0  # rank 0 recorded the timeline
    assert res["epochs"][1]["comm"]["allreduce_ops"] > 0


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
