"""The merged trace: Horovod's window files on one time base and one track per tensor, every rank's steps on rank 0's
clock, valid JSON by repair's rules; one clear line when the run has no step trace."""
import collections
import json
import subprocess

import pytest

from conftest import python_module
from hvd_mlp import results, steptrace
from hvd_mlp.timeline import merge
from test_results import epoch, record
from test_timeline_stragglers import simulate
from test_timeline import ORIGIN, fused_step, horovod_text


@pytest.fixture
def run_dir(tmp_path):
    """Two windowed epochs: Horovod's files (the second names its tensors in the other order and reduces only its
    pid 1, "allreduce.b" there), and two ranks' step
    traces with rank 1's clock 2 s ahead and three times slower compute."""
    run = tmp_path / "run"
    run.mkdir()
    epochs = []
    for n in (1, 2):
        window = results.TimelineWindow(file=str(run / f"timeline-epoch{n}.json"), steps=10)
        epochs.append(epoch(n, steps=10, timeline_window=window))
        for trace in simulate([3.0, 9.0], steps=10, offsets=[0.0, 2e6], start=ORIGIN + n * 1_000_000):
            trace["epoch"] = n
            steptrace.write(str(run), trace)
    results.write(str(run), record(epochs))
    (run / "timeline-epoch1.json").write_text(horovod_text(fused_step(1_000_100)))
    swapped = horovod_text(fused_step(2_000_100, pids=(1,))).replace('"allreduce.w"', '"X"').replace(
        '"allreduce.b"', '"allreduce.w"').replace('"X"', '"allreduce.b"')
    (run / "timeline-epoch2.json").write_text(swapped[:-1])  # and cut short: the closing ']' missing
    return run


def test_merged_trace(run_dir, tmp_path):
    out = tmp_path / "merged.json"
    counts = merge.merge(str(run_dir), str(out))
    events = json.loads(out.read_text())  # valid JSON, as Perfetto and Chrome need
    assert counts["ranks"] == 2 and counts["steps"] == 40 and counts["files"] == 2 and counts["events"] == len(events)
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"
             and "name" in e.get("args", {})}
    assert names[merge.RANK_PID + 1].startswith("rank 1 (node2) steps, on rank 0's clock +-50 us")
    assert sorted(n for n in names.values() if n.startswith("allreduce")) == ["allreduce.b", "allreduce.w"]
    by_name = {v: k for k, v in names.items()}
    # epoch 2's file named its pid 1 "allreduce.b": those events belong on the merged file's "allreduce.b" track
    ends = collections.Counter(e["pid"] for e in events if e["ph"] == "E" and e.get("args", {}).get("shape"))
    assert ends == {by_name["allreduce.b"]: 2, by_name["allreduce.w"]: 1}
    for pid in {e["pid"] for e in events if e["ph"] in "BE"}:
        phases = [e["ph"] for e in events if e["pid"] == pid and e["ph"] in "BE"]
        assert phases.count("B") == phases.count("E")
    slices = [e for e in events if e["ph"] == "X" and e["pid"] >= merge.RANK_PID]
    assert all(e["dur"] >= 0 for e in slices)
    assert collections.Counter(e["name"] for e in slices if e["pid"] == merge.RANK_PID) == {
        "forward+backward": 20, "synchronize (wait)": 20, "optimizer step": 20, "other": 18}
    # rank 1's clock is 2 s ahead: on rank 0's clock both ranks leave synchronize together, microseconds after ORIGIN
    synced = {(e["pid"], e["args"]["epoch"], e["args"]["step"]): e["ts"] + e["dur"] for e in slices
              if e["name"] == "synchronize (wait)"}
    for (pid, ep, step), t in synced.items():
        assert t == pytest.approx(synced[(merge.RANK_PID, ep, step)], abs=1)
        assert 1_000_000 < t < 3_000_000
    lasts = {e["pid"] for e in events if e["ph"] == "i" and e["name"] == "hand-over (last)"}
    assert lasts == {merge.RANK_PID + 1}  # the slow rank, every step
    assert "the closing ']' is missing" in counts["warnings"]


def test_merge_command_line(run_dir, tmp_path):
    for trace in run_dir.glob("steps-*-rank1-*"):
        trace.unlink()
    proc = subprocess.run(python_module("hvd_mlp.timeline", "merge", run_dir, tmp_path / "m.json"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'm.json'}: ") and "1 ranks, 20 traced steps" in proc.stdout
    assert "no step trace of rank(s) 1: each rank writes its own on its host" in proc.stderr


@pytest.mark.parametrize("setup, out, message", [
    (lambda run: [p.unlink() for p in run.glob("steps-*")], "m.json", "holds no step traces"),
    (lambda run: (run / "results.json").unlink(), "m.json", "holds no results.json"),
    (lambda run: None, "missing/m.json", "m.json: No such file or directory"),  # OUT's directory is not there
])
def test_merge_without_what_it_needs_is_one_line(run_dir, tmp_path, setup, out, message):
    setup(run_dir)
    proc = subprocess.run(python_module("hvd_mlp.timeline", "merge", run_dir, tmp_path / out),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("hvd_mlp.timeline: error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / out).exists()


def test_summarize_names_the_slow_rank_only_with_every_ranks_trace(run_dir):
    def summary():
        proc = subprocess.run(python_module("hvd_mlp.timeline", "summarize", run_dir, "--json"), capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert [(e["straggler"]["rank"], e["straggler"]["host"]) for e in summary()] == [(1, "node2")] * 2
    for trace in run_dir.glob("steps-epoch2-rank0-*"):
        trace.unlink()  # left on another host
    first, second = summary()
    assert first["straggler"]["rank"] == 1 and second["ranks"] == [] and "straggler" not in second
