"""Timeline analyser: hand-made files with each imperfection, and timelines from real horovodrun runs."""
import json
import re
import subprocess

import pytest

from conftest import horovodrun, python_module
from hvd_mlp.timeline import analysis, tracefile
from hvd_mlp.generate import write_timeline
from hvd_mlp.model import default_sizes, parameter_count_of

ORIGIN = 1_700_000_000_000_000


def meta(pid, name):
    return [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}]


def fused_step(t, pids=(1, 2)):
    """Two tensors negotiated, then allreduced together (same activity times: fusion)."""
    ev = []
    for pid in pids:
        ev += [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": t, "pid": pid},
               {"ph": "X", "name": "0", "ts": t + 1, "pid": pid, "dur": 0}, {"ph": "E", "ts": t + 10, "pid": pid}]
    for pid in pids:
        ev.append({"ph": "B", "name": "ALLREDUCE", "ts": t + 10, "pid": pid})
        for name, a, b in (("QUEUE", 10, 12), ("MEMCPY_IN_FUSION_BUFFER", 12, 20), ("MPI_ALLREDUCE", 20, 90),
                           ("MEMCPY_OUT_FUSION_BUFFER", 90, 100)):
            ev += [{"ph": "B", "name": name, "ts": t + a, "pid": pid}, {"ph": "E", "ts": t + b, "pid": pid}]
    for pid in pids:
        ev.append({"ph": "E", "ts": t + 100, "pid": pid, "args": {"dtype": "float32", "shape": "[10, 25]"}})
    return ev


def horovod_text(events):
    """Events as Horovod writes them: metadata lines end with a newline, other events chained with ','."""
    head = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"start_time_since_epoch_in_micros": ORIGIN}}]
    return "[\n" + "".join(json.dumps(e) + ",\n" for e in head + meta(1, "allreduce.w") + meta(2, "allreduce.b")) \
        + ",".join(json.dumps(e) for e in events) + "]"


@pytest.fixture
def two_steps(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(horovod_text(fused_step(1000) + fused_step(2000)))
    return path


def test_union_not_sum_for_fused_tensors(two_steps):
    report = analysis.summarize(str(two_steps))
    t = report["total"]
    assert (t["negotiate_us"], t["op_us"], t["collective_us"], t["memcpy_us"], t["queue_us"]) == (20, 180, 140, 36, 4)
    assert t["comm_us"] == 200  # negotiation then op, back to back
    assert (t["allreduce_ops"], t["allreduce_bytes"]) == (4, 4 * 250 * 4)
    assert report["warnings"] == []
    assert {x["name"] for x in report["tensors"]} == {"allreduce.w", "allreduce.b"}


def test_transfers_one_per_fused_step(two_steps, tmp_path):
    """Per transfer: the fused tensors' collective spans as one (us, bytes of both tensors), step by step."""
    assert analysis.transfers(str(two_steps)) == [(70, 2 * 250 * 4), (70, 2 * 250 * 4)]
    # spans a few us apart (as Horovod writes them for the tensors of one fused op) still make one transfer
    skewed = fused_step(1000)
    skewed[skewed.index({"ph": "B", "name": "MPI_ALLREDUCE", "ts": 1020, "pid": 2})]["ts"] = 1023
    path = tmp_path / "skewed.json"
    path.write_text(horovod_text(skewed))
    assert analysis.transfers(str(path)) == [(70, 2000)]


def test_epoch_clipping(two_steps):
    epochs = [{"epoch": 1, "start_unix_us": ORIGIN + 0, "end_unix_us": ORIGIN + 1050, "comm_wait_s": 0.00001},
              {"epoch": 2, "start_unix_us": ORIGIN + 1050, "end_unix_us": ORIGIN + 3000}]
    e1, e2 = analysis.summarize(str(two_steps), epochs)["epochs"]
    assert (e1["comm_us"], e2["comm_us"]) == (50, 150)  # step 1 is cut at 1050 (50 us in epoch 1)
    assert (e1["allreduce_ops"], e2["allreduce_ops"]) == (0, 4)  # an op belongs to the epoch where it ends
    assert e1["exposed_s"] == pytest.approx(0.00001) and e1["overlapped_s"] == pytest.approx(0.00004)
    assert e2["comm_share"] == pytest.approx(150 / 1950)


@pytest.mark.parametrize("cut, warning", [
    (lambda text: text[:-1], "the closing ']' is missing"),
    (lambda text: text[:-1] + ",", "the closing ']' is missing"),
    (lambda text: text[:-30], "ends mid-event"),
])
def test_damaged_end_is_read_as_far_as_it_goes(tmp_path, cut, warning):
    path = tmp_path / "t.json"
    path.write_text(cut(horovod_text(fused_step(1000) + fused_step(2000))))
    report = analysis.summarize(str(path))
    assert any(warning in w for w in report["warnings"]), report["warnings"]
    assert report["total"]["collective_us"] == 140  # both transfers were complete before the damage


def test_open_spans_closed_at_last_moment(tmp_path):
    path = tmp_path / "t.json"
    events = fused_step(1000) + [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": 1500, "pid": 1},
                                 {"ph": "B", "name": "ALLREDUCE", "ts": 1600, "pid": 2}]
    path.write_text(horovod_text(events))
    report = analysis.summarize(str(path))
    assert "2 span(s) still open at the end were closed there" in report["warnings"]
    assert report["total"]["comm_us"] == 100 + 100  # 1000-1100, then 1500-1600 open until the last ts


def test_dynamic_file_orphans_dropped(tmp_path):
    path = tmp_path / "t.json"
    orphans = [{"ph": "E", "ts": 900, "pid": 1}, {"ph": "X", "name": "1", "ts": 901, "pid": 2, "dur": 0},
               {"ph": "E", "ts": 902, "pid": 2}]
    path.write_text(horovod_text(orphans + fused_step(1000)))
    report = analysis.summarize(str(path))
    assert any("2 span end(s) without a start" in w for w in report["warnings"])
    assert report["total"]["op_us"] == 90


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"traceEvents": []}', "is not a Horovod timeline"),
    ("[1, 2, 3]", "is not a Horovod timeline"),
    ('[\n{"name": "process_name", "ph": "M", "pid": 0, "args": {}}]', "no spans"),
])
def test_not_a_timeline_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    proc = subprocess.run(python_module("hvd_mlp.timeline", "summarize", path), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hvd_mlp.timeline: error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def cli(*args):
    return subprocess.run(python_module("hvd_mlp.timeline", *args), capture_output=True, text=True)


def one_error_line(proc, message, prog="hvd_mlp.timeline"):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"{prog}: error:") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("bad", [{"ph": "B"}, {"ph": "B", "ts": "1500", "pid": 1, "name": "ALLREDUCE"},
                                 {"ph": "E", "ts": 1500}, {"ph": "B", "ts": 1500, "pid": [1], "name": "X"},
                                 {"ph": "B", "ts": 1500, "pid": 1, "name": 7}, {"ph": "M", "args": "x"},
                                 {"ph": "E", "ts": 1500, "pid": 1, "args": {"shape": "[a, b]"}}, 42, "text"])
def test_malformed_event_is_skipped_with_a_count(tmp_path, bad):
    path = tmp_path / "t.json"
    path.write_text(horovod_text(fused_step(1000) + [bad] + fused_step(2000)))
    report = analysis.summarize(str(path))
    assert "1 malformed event(s) skipped" in report["warnings"]
    assert report["total"]["collective_us"] == 140  # everything around it is read


def test_damaged_event_mid_file_does_not_end_the_reading(tmp_path):
    path = tmp_path / "t.json"
    text = horovod_text(fused_step(1000) + fused_step(2000))
    cut = text.index('{"ph": "B", "name": "ALLREDUCE", "ts": 2010')
    path.write_text(text[:cut] + '{"ph": "X", "ts": NaN},{"ph": "E", "ts": 1e400, "pid": 1},{"ph": "B", "na},'
                    + text[cut:])
    report = analysis.summarize(str(path))
    assert "3 malformed event(s) skipped" in report["warnings"]
    assert report["total"]["collective_us"] == 140


@pytest.mark.parametrize("content", ['[{"ph":"B"}]', '[{"ph": "B", "ts": "5", "pid": 1, "name": "A"}]'])
def test_no_usable_event_is_one_error(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    one_error_line(cli("summarize", path), "is not a Horovod timeline")
    one_error_line(cli("repair", path, tmp_path / "fixed.json"), "is not a Horovod timeline")
    assert not (tmp_path / "fixed.json").exists()


def test_repair_skips_malformed_events(tmp_path):
    src, dst = tmp_path / "t.json", tmp_path / "fixed.json"
    src.write_text(horovod_text(fused_step(1000) + [{"ph": "B", "ts": "1500", "pid": 1, "name": "X"}]))
    proc = cli("repair", src, dst)
    assert proc.returncode == 0 and "1 malformed event(s) skipped" in proc.stderr, proc.stderr
    assert all(isinstance(e.get("ts", 0), int) for e in json.loads(dst.read_text()))


@pytest.mark.parametrize("out, message", [(".", "is a directory"), ("missing/fixed.json", "No such file"),
                                          ("t.json/fixed.json", "Not a directory"), ("", "expected a file path")])
def test_repair_output_that_cannot_be_written_is_one_line(two_steps, out, message):
    proc = cli("repair", two_steps, two_steps.parent / out if out else "")
    one_error_line(proc, message)


def test_empty_results_path_is_not_silently_ignored(two_steps):
    one_error_line(cli("summarize", two_steps, "--results", ""), "the run's path is empty")


@pytest.mark.parametrize("command, text", [("summarize", "a Horovod timeline file"), ("repair", "the damaged timeline")])
def test_help_says_what_each_positional_is(command, text):
    assert text in cli(command, "--help").stdout


@pytest.mark.parametrize("top", ["-3", "x", "1.5"])
def test_top_must_be_a_count(two_steps, top):
    one_error_line(cli("summarize", two_steps, "--top", top), "--top")


def test_repair_writes_valid_json(tmp_path):
    src, dst = tmp_path / "cut.json", tmp_path / "fixed.json"
    events = [{"ph": "E", "ts": 900, "pid": 1}] + fused_step(1000) + \
        [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": 1500, "pid": 1}]
    src.write_text(horovod_text(events)[:-1] + ',{"ph": "B", "na')
    proc = subprocess.run(python_module("hvd_mlp.timeline", "repair", src, dst), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 orphan ends dropped, 1 open spans closed" in proc.stdout
    fixed = json.loads(dst.read_text())  # valid JSON, as Perfetto and Chrome need
    phases = [e["ph"] for e in fixed if e["ph"] in "BE"]
    assert phases.count("B") == phases.count("E")
    assert analysis.summarize(str(dst))["total"]["op_us"] == 90


def test_large_file_streams_in_chunks(tmp_path, monkeypatch):
    """A file many chunks long gives the same figures as the sum of its steps (chunk boundaries are safe)."""
    monkeypatch.setattr(tracefile, "CHUNK", 4096)
    monkeypatch.setattr(analysis, "FLUSH_EVERY", 1000)  # many folds of the unions, as in a GB file
    path = tmp_path / "big.json"
    steps = write_timeline(str(path), size_mb=2)
    report = analysis.summarize(str(path))
    assert report["warnings"] == []
    assert report["total"]["allreduce_ops"] == steps * 8
    assert report["total"]["collective_us"] == pytest.approx(steps * 1180)
    assert report["total"]["op_us"] == pytest.approx(steps * 1405)


# ------------------------------------------------------------------------------------- real horovodrun timelines
@pytest.mark.parametrize("mode", ["full", "window"])
def test_timeline_of_a_real_run(tmp_path, controller, mode):
    out = tmp_path / "run"
    proc = horovodrun(2, controller, python_module(
        "hvd_mlp.train", "--dataset", "synthetic", "--synthetic-size", "4000", "--epochs", "2", "--log-every", "0",
        "--timeline-mode", mode, "--timeline-steps", "10", "--output-dir", out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    for epoch in res["epochs"]:
        comm = epoch["comm"]
        assert comm["allreduce_ops"] == pytest.approx(epoch["steps"] * 8, rel=0.15)  # 8 gradient tensors a step
        assert comm["allreduce_bytes"] == pytest.approx(epoch["steps"] * parameter_count_of(default_sizes()) * 4, rel=0.15)
        assert 0 < comm["collective_us"] <= comm["op_us"] <= comm["comm_us"]
        assert 0 < comm["comm_share"] < 1
    assert len(re.findall(r"comm \d+\.\d% of epoch", proc.stdout)) == 2
    # summarize on the run directory, whatever the mode, agrees with the training's own lines
    cli = subprocess.run(python_module("hvd_mlp.timeline", "summarize", out, "--json"), capture_output=True,
                         text=True)
    assert cli.returncode == 0, cli.stderr
    summary = json.loads(cli.stdout)
    assert [e["epoch"] for e in summary] == [1, 2]
    for mine, trained in zip(summary, res["epochs"]):
        assert mine["comm"] == pytest.approx(trained["comm"])
        assert mine["comm"]["exposed_s"] <= trained["comm_wait_s"] + 1e-9  # scaled like the training's wait
    text = subprocess.run(python_module("hvd_mlp.timeline", "summarize", out), capture_output=True, text=True)
    # Open MPI tags each chunk a rank writes ("[1,0]<stdout>:"), and a print's text and newline can be two chunks
    untagged = re.sub(r"\[[\d,]+\]<std(?:out|err)>:", "", proc.stdout)
    for line in re.findall(r"comm \d+\.\d% of epoch.*", untagged):
        assert line in text.stdout
    # a window file with its run: that epoch alone, scaled as the training did (not an all-zero epoch 1)
    timeline_file = out / ("timeline.json" if mode == "full" else "timeline-epoch2.json")
    one = json.loads(subprocess.run(python_module("hvd_mlp.timeline", "summarize", timeline_file, "--results",
                                                  out / "results.json", "--json"), capture_output=True,
                                    text=True).stdout)
    assert [e["epoch"] for e in one] == ([1, 2] if mode == "full" else [2])
    assert one[-1]["comm"] == pytest.approx(res["epochs"][1]["comm"])
    # the file alone: totals and tensors. One allreduce group (the default): Horovod names them
    # grouped_allreduce.<first tensor>_<k>of<n>
    whole = json.loads(subprocess.run(python_module("hvd_mlp.timeline", "summarize", timeline_file, "--json"),
                                      capture_output=True, text=True).stdout)
    assert whole["total"]["allreduce_bytes"] > 0
    assert sum(t["name"].startswith("grouped_allreduce.") for t in whole["tensors"]) == 8


def test_user_timeline_filename_is_honoured(tmp_path):
    out, user_file = tmp_path / "run", tmp_path / "mine.json"
    proc = horovodrun(2, "gloo", ["--timeline-filename", str(user_file), *python_module(
        "hvd_mlp.train", "--dataset", "synthetic", "--synthetic-size", "2000", "--epochs", "1", "--log-every", "0",
        "--output-dir", out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert user_file.stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["epochs"][0]["comm"]["allreduce_ops"] > 0
