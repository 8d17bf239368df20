"""timeline slice and summarize --series: a stretch of a file equals the same stretch of the whole; edge cases."""
import json
import subprocess

import pytest

from conftest import python_module
from hvd_mlp.generate import STEP_EVERY_US, STEP_OP_US, write_timeline
from hvd_mlp.timeline import analysis
from hvd_mlp.timeline.slice import slice_timeline
from hvd_mlp.timeline.tracefile import TimelineError
from test_timeline import ORIGIN, fused_step, horovod_text

KEYS = [f"{c}_us" for c in analysis.CLASSES] + ["allreduce_bytes", "allreduce_ops"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "t.json"
    steps = write_timeline(str(path), size_mb=3, start_unix_us=ORIGIN)
    return path, steps


@pytest.mark.parametrize("start_s, end_s", [(0.0513, 0.1337), (0.0, 0.02), (0.30009, 0.3)])
def test_slice_equals_the_same_stretch_of_the_whole(big, tmp_path, start_s, end_s):
    path, steps = big
    end_s = end_s if end_s > start_s else steps * STEP_EVERY_US / 1e6  # the last case: to the file's end
    out = tmp_path / "s.json"
    counts = slice_timeline(str(path), str(out), start_s, end_s)
    assert counts["opened"] > 0 or start_s == 0  # cuts inside steps reopen their spans
    whole = analysis.summarize(str(path), [{"epoch": 1, "start_unix_us": ORIGIN + start_s * 1e6,
                                            "end_unix_us": ORIGIN + end_s * 1e6}])["epochs"][0]
    part = analysis.summarize(str(out))
    assert part["warnings"] == []
    for key in KEYS:
        assert part["total"][key] == pytest.approx(whole[key]), key
    events = json.loads(out.read_text())  # valid JSON, balanced spans, times left as they were
    assert sum(e["ph"] == "B" for e in events) == sum(e["ph"] == "E" for e in events)
    assert min(e["ts"] for e in events if "ts" in e) >= start_s * 1e6


def test_slice_inside_open_spans_keeps_their_names_and_nesting(tmp_path):
    src, out = tmp_path / "t.json", tmp_path / "s.json"
    src.write_text(horovod_text(fused_step(1000) + fused_step(2000)))
    counts = slice_timeline(str(src), str(out), 1050e-6, 2015e-6)  # inside step 1's transfer .. step 2's ALLREDUCE
    events = json.loads(out.read_text())
    # tensor 1's op and transfer were open at 1050 (the file holds tensor 2's events after tensor 1's: they come in
    # late, written from 1050)
    reopened = [e for e in events if e["ph"] == "B" and e["ts"] == 1050 and e["pid"] == 1]
    assert [e["name"] for e in reopened] == ["ALLREDUCE", "MPI_ALLREDUCE"] and counts["opened"] == 2
    assert counts["closed"] == 4  # step 2's ALLREDUCE and its copy into the fusion buffer, both tensors, at 2015
    assert {e["name"] for e in events if e["ph"] == "M"} == {"process_name"}  # the start record and names kept
    total = analysis.summarize(str(out))["total"]
    assert total["collective_us"] == 40 and total["allreduce_ops"] == 2  # step 1's transfer from 1050 to 1090


@pytest.mark.parametrize("args, message", [
    (["--from", "0.5", "--to", "0.6"], "is empty (its events end at 0.002 s)"),  # beyond the end
    (["--from", "0.0015", "--to", "0.0016"], "is empty"),  # between two steps: no event inside
    (["--from", "2", "--to", "1"], "is empty"),
    (["--to", "-1"], "argument --to: invalid seconds value"),
    ([], "say which stretch"),
    (["--epoch", "1"], "--epoch needs --results"),
])
def test_bad_slice_is_one_line(tmp_path, args, message):
    src = tmp_path / "t.json"
    src.write_text(horovod_text(fused_step(1000) + fused_step(2000)))
    proc = subprocess.run(python_module("hvd_mlp.timeline", "slice", src, tmp_path / "s.json", *args),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.json").exists()


def test_slice_needs_the_start_record_for_an_epoch(tmp_path):
    src = tmp_path / "t.json"
    src.write_text("[" + ",".join(json.dumps(e) for e in fused_step(1000)) + "]")
    with pytest.raises(TimelineError, match="no start-time record"):
        slice_timeline(str(src), str(tmp_path / "s.json"), wall_us=(ORIGIN, ORIGIN + 5000))


def test_series_buckets_add_up(big):
    path, steps = big
    report = analysis.summarize(str(path), bucket_s=0.01)
    series = report["series"]
    assert sum(r["allreduce_bytes"] for r in series) == report["total"]["allreduce_bytes"]
    assert sum(r["comm_share"] * 10_000 for r in series) == pytest.approx(report["total"]["comm_us"])
    # every whole bucket holds 5 steps, each with 80 us of negotiation and the op, back to back
    share = (80 + 5 + STEP_OP_US - 5) / STEP_EVERY_US
    assert [round(r["comm_share"], 3) for r in series[1:-1]] == [round(share, 3)] * (len(series) - 2)


def test_series_on_the_command_line(big):
    proc = subprocess.run(python_module("hvd_mlp.timeline", "summarize", big[0], "--series", "0.05"),
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "communication over time, 0.05 s buckets:" in proc.stdout
    tiny = subprocess.run(python_module("hvd_mlp.timeline", "summarize", big[0], "--series", "0.001"),
                          capture_output=True, text=True)
    assert tiny.returncode == 2 and "--series buckets must be >= 0.01 s" in tiny.stderr
