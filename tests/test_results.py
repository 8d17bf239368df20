"""The run record: a round trip through results.json, and the reader's one line for each kind of bad file."""
import json

import pytest

from hvd_mlp import results
from hvd_mlp.errors import UserError


def epoch(n, **kw):
    base = dict(epoch=n, start_unix_us=1000 * n, end_unix_us=1000 * n + 900, epoch_time_s=2.0, samples=1000,
                samples_per_s=500.0, train_loss=0.5, train_acc=0.8, val_loss=0.4, val_acc=0.85 + n / 100, lr=1e-3,
                comm_wait_s=0.5, compute_s=1.2, other_s=0.3, steps=10, world_size=2)
    return results.Epoch(**{**base, **kw})


def record(epochs):
    world = results.World(size=2, local_size=2, hosts=["a", "a"], controller="mpi", horovod_version="0.28.1",
                          torch_version="2.14.1", device="cpu")
    return results.RunRecord(config={"epochs": 3}, parameters=10, dataset=results.DatasetInfo("synthetic", 100, 20),
                             world=world, epochs=epochs)


def test_round_trip_and_summary(tmp_path):
    run = record([epoch(1, epoch_time_s=9.0), epoch(2), epoch(3, samples=3000)])
    run.epochs[1].comm = results.Comm(comm_us=1.0, op_us=1.0, negotiate_us=0.0, collective_us=1.0, memcpy_us=0.0,
                                      queue_us=0.0, allreduce_bytes=8.0, allreduce_ops=2, epoch_time_s=2.0,
                                      comm_share=0.5, bandwidth_MBps=8.0)
    results.write(str(tmp_path), run)
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["schema_version"] == results.SCHEMA_VERSION and "name" not in raw and "comm" not in raw["epochs"][0]
    back = results.read(str(tmp_path))
    assert back.epochs == run.epochs and back.world == run.world and back.name == tmp_path.name
    # steady state: the warm-up epoch (9 s) is left out: (1000 + 3000) samples in 4 s
    assert back.summary.samples_per_s == 1000.0 and back.summary.train_time_s == 13.0
    assert back.summary.best_val_acc == pytest.approx(0.88)


def test_files_before_the_schema_version_read_as_version_1(tmp_path):
    raw = results.to_dict(record([epoch(1)]))
    del raw["schema_version"]
    raw["epochs"][0]["comm"] = {"error": "old files kept errors here"} | {k: 0 for k in (
        "comm_us", "op_us", "negotiate_us", "collective_us", "memcpy_us", "queue_us", "allreduce_bytes",
        "allreduce_ops", "epoch_time_s", "comm_share", "bandwidth_MBps")}
    (tmp_path / "results.json").write_text(json.dumps(raw))
    assert results.read(str(tmp_path / "results.json")).schema_version == 1


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(epochs=[1, 2, 3]), "epochs[0]: expected an object, got a number"),
    (lambda r: r.pop("world"), "'world' is missing"),
    (lambda r: r["epochs"][0].update(train_loss="low"), 'epochs[0]: train_loss must be a number, got a string "low"'),
    (lambda r: r["epochs"][0].update(samples=True), "epochs[0]: samples must be int, got a boolean"),
    (lambda r: r["world"].update(hosts="a,b"), "world: hosts must be a list, got a string"),
    (lambda r: r.update(schema_version=99), "has schema version 99; this hvd_mlp reads up to"),
])
def test_bad_record_is_named(tmp_path, change, message):
    raw = results.to_dict(record([epoch(1)]))
    change(raw)
    (tmp_path / "results.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        results.read(str(tmp_path))


@pytest.mark.parametrize("content, message", [
    (None, "holds no results.json"), ("{", "is unreadable"), ("[]", "expected an object, got a list"),
])
def test_unreadable_file_is_named(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(UserError, match=message):
        results.read(str(tmp_path))


def test_read_finished_needs_an_epoch(tmp_path):
    results.write(str(tmp_path), record([]))
    with pytest.raises(UserError, match="holds no finished epoch"):
        results.read_finished(str(tmp_path))
    assert results.steady([]) == [] and results.steady([1]) == [1] and results.steady([1, 2, 3]) == [2, 3]


def test_world_changes_of_older_files_read_with_the_new_fields_empty(tmp_path):
    raw = results.to_dict(record([epoch(1)]))
    raw["world_changes"] = [{"epoch": 1, "samples_done": 0, "size": 2, "hosts": ["a", "b"], "unix_us": 5},
                            {"epoch": 2, "samples_done": 640, "size": 1, "hosts": ["a"], "unix_us": 9}]
    (tmp_path / "results.json").write_text(json.dumps(raw))
    change = results.read(str(tmp_path)).world_changes[1]
    assert (change.size, change.previous_size, change.lost_hosts, change.step, change.rolled_back_steps) == \
        (1, 0, [], 0, 0)
