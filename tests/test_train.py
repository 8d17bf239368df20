"""Training under the real horovodrun (MPI and Gloo), learning-rate schedule, resume continuity, bad input."""
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import horovodrun, python_module
from hvd_mlp import results
from hvd_mlp.train import learning_rate, world_line

QUICK = ["--dataset", "synthetic", "--synthetic-size", "4000", "--batch-size", "64", "--hidden", "128,64",
         "--log-every", "0"]


def run_train(tmp_path, np_, controller, *args, name="run"):
    out = tmp_path / name
    proc = horovodrun(np_, controller, python_module("hvd_mlp.train", *QUICK, "--output-dir", out, *args))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "results.json").read_text())


def test_two_ranks_train_and_agree(tmp_path, controller):
    proc, res = run_train(tmp_path, 2, controller, "--epochs", "3")
    assert res["world"]["size"] == 2 and res["world"]["controller"] == controller
    epochs = res["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    keys = {"epoch", "start_unix_us", "end_unix_us", "epoch_time_s", "samples", "samples_per_s", "train_loss",
            "train_acc", "val_loss", "val_acc", "lr", "comm_wait_s", "compute_s"}
    assert keys <= epochs[0].keys()
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["val_acc"] > 0.9
    assert epochs[0]["samples"] == 4000  # both shards, whole set (4000 divides by 2)
    digests = res["world"]["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # every rank ends with the same parameters
    # rank 0 prints, the other rank stays quiet: one line per epoch
    assert len(re.findall(r"epoch \d/3 \|", proc.stdout)) == 3


def test_four_ranks_on_two_cores(tmp_path):
    proc, res = run_train(tmp_path, 4, "gloo", "--epochs", "1", "--max-steps", "10")
    assert res["world"]["size"] == 4 and res["epochs"][0]["samples"] == 4 * 10 * 64


def test_mnist_sample_reaches_90_percent(tmp_path):
    _, res = run_train(tmp_path, 2, "mpi", "--dataset", "mnist-sample", "--epochs", "5", "--batch-size", "32",
                       "--hidden", "512,256,128")
    assert res["dataset"] == {"name": "mnist-sample", "train": 4000, "val": 1000}
    assert max(e["val_acc"] for e in res["epochs"]) >= 0.90


def test_resume_continues_exactly(tmp_path):
    """3 epochs straight == 2 epochs, then resume to 3: same final parameters, epochs 1..3 recorded once."""
    _, straight = run_train(tmp_path, 2, "gloo", "--epochs", "3", name="straight")
    run_train(tmp_path, 2, "gloo", "--epochs", "2", name="split")
    proc, resumed = run_train(tmp_path, 2, "gloo", "--epochs", "3", "--resume", tmp_path / "split" / "checkpoint.pt",
                              name="split")
    assert "resumed from" in proc.stdout
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert resumed["world"]["param_digests"] == straight["world"]["param_digests"]  # bit for bit
    assert resumed["epochs"][2]["train_loss"] == pytest.approx(straight["epochs"][2]["train_loss"], rel=1e-6)


@pytest.mark.parametrize("options", [["--adasum"], ["--fp16-allreduce", "--allreduce-groups", "0"]])
def test_documented_horovod_options_train(tmp_path, options):
    """Adasum refuses synchronize()/skip_synchronize(): the loop must let step() do it."""
    _, res = run_train(tmp_path, 2, "mpi", "--epochs", "2", *options)
    assert len(set(res["world"]["param_digests"])) == 1 and res["epochs"][-1]["val_acc"] > 0.8


def test_backward_passes_per_step_accumulates(tmp_path):
    """k passes per step: k micro-batches of --batch-size per optimizer step, one allreduce per step."""
    window = ["--epochs", "1", "--timeline-mode", "window", "--timeline-steps", "8"]
    _, one = run_train(tmp_path, 2, "mpi", *window, name="k1")
    proc, four = run_train(tmp_path, 2, "mpi", *window, "--backward-passes-per-step", "4", name="k4")
    e1, e4 = one["epochs"][0], four["epochs"][0]
    assert e1["samples"] == e4["samples"] == 4000
    assert e4["steps"] == -(-e1["steps"] // 4) == 8  # 32 micro-batches of 64 per rank -> 8 steps
    assert e4["comm"]["allreduce_ops"] == pytest.approx(e1["comm"]["allreduce_ops"] / 4, rel=0.1)
    assert "batch 64/rank x 2 x 4 passes" in proc.stdout


@pytest.fixture(scope="module")
def adam_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam") / "run"
    proc = horovodrun(2, "gloo", python_module("hvd_mlp.train", *QUICK, "--hidden", "64", "--epochs", "1",
                                               "--output-dir", out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "checkpoint.pt"


@pytest.mark.parametrize("args, message", [
    (["--hidden", "64", "--optimizer", "sgd"], "optimizer 'adam' -> 'sgd'"),  # hung forever before
    ([], "hidden [64] -> [128, 64]"),  # a 35-line traceback before
])
def test_resume_of_another_model_is_refused(tmp_path, adam_checkpoint, args, message):
    proc = horovodrun(2, "gloo", python_module("hvd_mlp.train", *QUICK, "--epochs", "2", "--resume",
                                               adam_checkpoint, "--output-dir", tmp_path / "new", *args), timeout=120)
    assert proc.returncode != 0
    assert f"hvd_mlp.train: error: checkpoint {adam_checkpoint} was written by another model" in proc.stderr
    assert message in proc.stderr and "hvd_mlp/" not in proc.stderr.split("error:", 1)[0]


def test_used_output_dir_is_refused_then_overwritten(tmp_path):
    out = tmp_path / "run"
    train = [sys.executable, "-m", "hvd_mlp.train", *QUICK, "--epochs", "1", "--max-steps", "2", "--output-dir",
             str(out)]
    assert subprocess.run(train, capture_output=True, timeout=120).returncode == 0
    before = (out / "results.json").read_bytes()
    again = subprocess.run([*train, "--hidden", "32"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds a run (results.json, checkpoint.pt)" in again.stderr
    assert (out / "results.json").read_bytes() == before  # nothing lost
    forced = subprocess.run([*train, "--hidden", "32", "--overwrite"], capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0 and json.loads((out / "results.json").read_text())["config"]["hidden"] == [32]


@pytest.mark.parametrize("args, message", [
    (["--hidden", "10000000000"], "the model 784-10000000000-10 needs"),
    (["--synthetic-size", "100000000000"], "--synthetic-size 100,000,000,000 needs"),
    (["--optimizer", "sgd", "--lr", "1e6"], "training diverged (lower --lr)"),
    (["--elastic"], "--elastic needs an elastic launch"),
    pytest.param(["--device", "cuda"], "--device cuda, but torch sees no CUDA device",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.train", *QUICK, "--epochs", "2", *args, "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith("hvd_mlp.train: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_fewer_samples_than_ranks_is_one_line(tmp_path):
    proc = horovodrun(2, "mpi", python_module("hvd_mlp.train", *QUICK, "--synthetic-size", "1", "--output-dir",
                                              tmp_path / "run"), timeout=120)
    assert proc.returncode != 0
    assert "hvd_mlp.train: error: the training set has 1 sample(s), fewer than the 2 ranks" in proc.stderr


def test_corrupt_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = horovodrun(2, "gloo", python_module("hvd_mlp.train", *QUICK, "--resume", bad,
                                               "--output-dir", tmp_path / "out"))
    assert proc.returncode != 0
    assert f"hvd_mlp.train: error: checkpoint {bad} is corrupt or unreadable" in proc.stderr + proc.stdout


def test_unwritable_output_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.train", *QUICK, "--output-dir", str(blocker / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"hvd_mlp.train: error: output directory {blocker / 'run'} is not writable")


def test_mnist_offline_without_files_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.train", "--dataset", "mnist", "--data-dir",
                           str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "no_proxy": "",
                                                                          "https_proxy": "http://127.0.0.1:9"})
    assert proc.returncode == 2
    assert "hvd_mlp.train: error: MNIST is not under" in proc.stderr and "Traceback" not in proc.stderr


def cfg(**kw):
    base = dict(lr=0.1, adasum=False, warmup_epochs=2.0, lr_step=0, lr_gamma=0.5)
    return SimpleNamespace(**{**base, **kw})


def test_learning_rate_warms_up_to_lr_times_size_then_steps():
    assert learning_rate(cfg(), 4, 0.0) == pytest.approx(0.1)
    assert learning_rate(cfg(), 4, 1.0) == pytest.approx(0.25)
    assert learning_rate(cfg(), 4, 2.0) == pytest.approx(0.4)
    assert learning_rate(cfg(lr_step=3), 4, 3.5) == pytest.approx(0.2)
    assert learning_rate(cfg(adasum=True), 4, 5.0) == pytest.approx(0.1)  # Adasum: no scaling by size


def test_truncated_mnist_file_is_one_line(tmp_path):
    from test_data import _fake_mnist
    raw = _fake_mnist(tmp_path / "data")
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.train", "--dataset", "mnist", "--data-dir",
                           str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hvd_mlp.train: error: MNIST file {path} is truncated or corrupt: 984 bytes of " \
                                  "data, header says 15680"


def test_world_line_tells_the_change():
    lost = results.WorldChange(epoch=3, samples_done=5248, size=1, hosts=["node1"], unix_us=0, previous_size=2,
                               lost_hosts=["node2"], step=48, rolled_back_steps=7)
    assert world_line(lost) == "world: 2 -> 1 ranks (lost host node2) at epoch 3, step 48; rolled back to the " \
                               "commit 7 steps earlier"
    grown = results.WorldChange(epoch=5, samples_done=0, size=4, hosts=["a", "b", "b", "c"], unix_us=0,
                                previous_size=2, lost_hosts=["x"], added_hosts=["b", "b", "c"], step=0)
    assert world_line(grown) == "world: 2 -> 4 ranks (lost host x; added hosts b, c) at epoch 5, step 0"


BIND = """import os, sys, threading
from hvd_mlp.train import bind_to_cores
os.sched_setaffinity(0, set(map(int, sys.argv[3].split(","))))
started = threading.Event()
t = threading.Thread(target=lambda: (started.set(), threading.Event().wait(5)), daemon=True)  # like Horovod's
t.start(); started.wait()
mine = bind_to_cores(*map(int, sys.argv[1:3]))
print(mine, sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(t.native_id)))"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
@pytest.mark.parametrize("local_rank, local_size, allowed, cores", [
    (1, 2, "0,1", [1]),  # its own core
    (0, 1, "0,1", [0, 1]),  # one rank: all of them
    (3, 4, "0,1", [1]),  # more ranks than cores: round robin
    (1, 2, "1", [1]),  # bound by the launcher already: stays there
])
def test_bind_to_cores_pins_every_thread_of_the_rank(local_rank, local_size, allowed, cores):
    proc = subprocess.run([sys.executable, "-c", BIND, str(local_rank), str(local_size), allowed],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == f"{cores} {cores} {cores}", proc.stderr[-2000:]
