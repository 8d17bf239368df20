"""Straggler analysis: simulated step traces with known answers, Horovod's ready ticks, and real horovodrun runs with
one rank slowed from the outside (a CPU quota on its cgroup) or none."""
import json
import random
import re
import subprocess

import pytest

from cgroups import CpuGroup, cgroups_usable, launch_in_groups
from conftest import horovodrun, python_module
from hvd_mlp import results, steptrace
from hvd_mlp.timeline import stragglers
from test_timeline import ORIGIN, horovod_text

US = 1_000.0  # a millisecond in microseconds


def simulate(compute_ms: list, steps=40, offsets=None, error_us=50.0, transfer_ms=1.0, seed=0, start=ORIGIN):
    """Every rank's trace, as training writes them: all start each step together (the previous allreduce released
    them), hand over after their compute (+-10% noise), get the result once the last handed over plus the
    transfer, step the optimizer for 0.5 ms; each rank's clock is off by offsets[r]."""
    rng, size = random.Random(seed), len(compute_ms)
    offsets = offsets or [0.0] * size
    rows, t = [[] for _ in range(size)], float(start)
    for step in range(steps):
        handover = [t + c * US * rng.uniform(0.9, 1.1) for c in compute_ms]
        synced = max(handover) + transfer_ms * US
        for r in range(size):
            rows[r].append([step] + [v + offsets[r] for v in (t, handover[r], synced, synced + 0.5 * US)])
        t = synced + 0.6 * US
    return [{"format": steptrace.FORMAT, "epoch": 1, "rank": r, "size": size, "host": f"node{r + 1}",
             "clock": {"offset_us": offsets[r], "error_us": error_us if r else 0.0, "measured_unix_us": start},
             "fields": list(steptrace.FIELDS), "steps": rows[r]} for r in range(size)]


def test_a_rank_three_times_slower_is_named_with_high_confidence():
    ranks, s = stragglers.analyse(simulate([3.0, 9.0, 3.0]), epoch_steps=80)
    assert (s.rank, s.host, s.confidence, s.cause) == (1, "node2", "high", "compute")
    assert "rank 1 computes slower" in s.cause_text
    assert ranks[1].last_ready_share == 1.0 and ranks[0].last_ready_share == 0.0
    assert ranks[1].lag_ms == pytest.approx(6.0, abs=0.8) and ranks[1].lag_p95_ms >= ranks[1].lag_ms
    # the others wait ~6 ms a step for it, scaled from 40 traced steps to the epoch's 80
    assert s.cost_s == pytest.approx(2 * 80 * 6.0 / 1e3, rel=0.15)
    assert ranks[0].peer_wait_s == pytest.approx(ranks[0].wait_s - 80 * 1.0 / 1e3, rel=0.05)
    assert ranks[1].compute_s == pytest.approx(80 * 9.5 / 1e3, rel=0.05)  # 9 ms + 0.5 ms optimizer, 80 steps
    assert s.transfer_wait_s == pytest.approx(80 * 1.0 / 1e3, rel=0.05)
    text = stragglers.straggler_text(results.Epoch(**_epoch(ranks=ranks, straggler=s)))
    assert text.startswith(" | straggler rank 1 (node2, high confidence): last in 100% of steps")


def test_clock_offsets_are_taken_out():
    """Rank 1 is slow; rank 0's clock reads 2 s ahead of the truth: without the offset rank 0 would look last."""
    ranks, s = stragglers.analyse(simulate([3.0, 9.0], offsets=[0.0, -2e6]), epoch_steps=40)
    assert s.rank == 1 and ranks[1].clock_offset_us == -2e6 and s.confidence == "high"


def test_equal_ranks_are_not_named():
    for seed in range(10):
        _, s = stragglers.analyse(simulate([4.0, 4.0], seed=seed), epoch_steps=40)
        assert s.confidence != "high", seed


def test_a_burst_in_one_quarter_is_not_persistent():
    traces = simulate([4.0, 4.0], steps=40, seed=3)
    for row in traces[1]["steps"][:10]:  # rank 1 was held up in the first quarter only
        row[2] += 8 * US
        row[3] += 8 * US
        row[4] += 8 * US
    _, s = stragglers.analyse(traces, epoch_steps=40)
    assert s.confidence != "high"


def test_high_needs_a_lateness_of_a_whole_step_of_the_others_beyond_the_clock_error():
    """12 ms against 4: 8 ms late, twice the others' step of 4.5 ms. Named, unless the clock error exceeds that."""
    assert stragglers.analyse(simulate([4.0, 12.0], error_us=50), epoch_steps=40)[1].confidence == "high"
    assert stragglers.analyse(simulate([4.0, 12.0], error_us=9 * US), epoch_steps=40)[1].confidence == "low"
    assert stragglers.analyse(simulate([4.0, 6.0]), epoch_steps=40)[1].confidence == "low"  # 1.5x: named, unsure


def test_slow_transfer_for_everyone():
    _, s = stragglers.analyse(simulate([3.0, 3.0], transfer_ms=6.0, seed=1), epoch_steps=40)
    assert s.confidence != "high" and s.cause == "transfer" and "no slow peer" in s.cause_text


def test_one_rank_or_no_common_step_gives_nothing():
    assert stragglers.analyse(simulate([3.0]), 10) == ([], None)
    traces = simulate([3.0, 3.0])
    traces[1]["steps"] = [[row[0] + 100] + row[1:] for row in traces[1]["steps"]]
    assert stragglers.analyse(traces, 10) == ([], None)


def test_horovods_ready_ticks_decide_the_order_where_present(tmp_path):
    """Rank 1's clock is 3 ms behind but its trace claims no offset, so the traces make rank 0 last in every step;
    Horovod's ticks (rank 0's clock) say rank 1 was last in steps 0 and 1: they win where they hold every rank."""
    traces = simulate([4.0, 4.0], steps=4, offsets=[0.0, -3 * US])
    traces[1]["clock"]["offset_us"] = 0.0
    rank0 = steptrace.on_rank0_clock(traces[0])
    events = []
    for step in (0, 1):
        start, handover, synced, _ = (v - ORIGIN for v in rank0[step])
        events += [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": start + 100, "pid": 1},
                   {"ph": "X", "name": "0", "ts": handover - 50, "pid": 1, "dur": 0},
                   {"ph": "X", "name": "1", "ts": handover + 400, "pid": 1, "dur": 0},
                   {"ph": "E", "ts": handover + 500, "pid": 1}]
    path = tmp_path / "timeline-epoch1.json"
    path.write_text(horovod_text(events))
    ticks = stragglers.ready_ticks(str(path))
    assert len(ticks) == 2 and set(ticks[0][1]) == {0, 1}
    ranks, s = stragglers.analyse(traces, epoch_steps=4, ticks=ticks)
    assert s.tick_steps == 2 and s.steps == 4
    assert ranks[1].last_ready_share == 0.5  # steps 0, 1 by the ticks; 2, 3 by the misaligned traces
    assert ranks[1].lag_ms == pytest.approx((0.45 + 0.45 + 0 + 0) / 4, abs=0.01)


def test_binomial_tail_and_percentile():
    assert stragglers.binomial_tail(4, 4, 0.5) == pytest.approx(1 / 16)
    assert stragglers.binomial_tail(4, 0, 0.5) == pytest.approx(1.0)
    assert stragglers.percentile([1, 2, 3, 4, 5], 50) == 3 and stragglers.percentile([0, 10], 95) == 9.5


def _epoch(**kw):
    base = dict(epoch=1, start_unix_us=0, end_unix_us=1, epoch_time_s=1.0, samples=1, samples_per_s=1.0,
                train_loss=0.1, train_acc=0.9, val_loss=0.1, val_acc=0.9, lr=1e-3, comm_wait_s=0.1, compute_s=0.5,
                other_s=0.4, steps=80, world_size=3)
    return {**base, **kw}


# ------------------------------------------------------------------------------------- real horovodrun runs
WHY_NOT = cgroups_usable()
needs_cgroups = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "cgroups usable")
TRAIN = ["--dataset", "synthetic", "--epochs", "3", "--log-every", "0", "--checkpoint-every", "0"]


def train_in_groups(tmp_path, controller, mode, groups):
    out = tmp_path / "run"
    wrapper = launch_in_groups(tmp_path, groups)
    proc = horovodrun(2, controller, [wrapper, *python_module("hvd_mlp.train", *TRAIN, "--timeline-mode", mode,
                                                              "--output-dir", out)], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out, json.loads((out / "results.json").read_text())


@needs_cgroups
@pytest.mark.parametrize("controller, mode", [("mpi", "window"), ("gloo", "full")])
def test_a_rank_slowed_from_outside_is_named(tmp_path, controller, mode):
    """Rank 1 may use 20% of one CPU (its cgroup's quota): it computes ~4x slower, and the analysis must say so.
    Both ranks get a large CPU weight, so other sessions on the machine do not decide the outcome."""
    with CpuGroup("fast", weight=16) as fast, CpuGroup("slow", weight=16, quota=0.2) as slow:
        proc, out, res = train_in_groups(tmp_path, controller, mode, {0: fast, 1: slow})
    for e in res["epochs"][1:]:  # after the warm-up epoch
        s, (r0, r1) = e["straggler"], e["ranks"]
        whole = json.dumps({"epoch": e["epoch"], "straggler": s, "ranks": e["ranks"]})  # a str: pytest shows it whole
        assert (s["rank"], s["confidence"], s["cause"]) == (1, "high", "compute"), whole
        assert r1["compute_s"] > 2 * r0["compute_s"] and r1["last_ready_share"] > 0.9, whole
        assert 0 < s["cost_s"] <= r0["wait_s"] and r0["peer_wait_s"] > r1["peer_wait_s"]
        assert s["host"] == res["world"]["hosts"][1] and s["steps"] == (e["steps"] if mode == "full" else 40)
    assert len(re.findall(r"straggler rank 1 \(\S+, high confidence\)", proc.stdout)) >= 2  # rank 0's epoch lines
    assert sorted(p.name for p in out.glob("steps-*")) == sorted(
        f"steps-epoch{e}-rank{r}-{res['world']['hosts'][r]}.json" for e in (1, 2, 3) for r in (0, 1))
    # summarize RUN_DIR computes the same figures from the files
    cli = subprocess.run(python_module("hvd_mlp.timeline", "summarize", out, "--json"), capture_output=True,
                         text=True)
    assert cli.returncode == 0, cli.stderr
    for mine, trained in zip(json.loads(cli.stdout), res["epochs"]):
        assert mine["straggler"]["rank"] == trained["straggler"]["rank"]
        assert mine["ranks"][1]["compute_s"] == pytest.approx(trained["ranks"][1]["compute_s"])
        if mode == "window":  # the training read the same window file: the very same figures
            assert mine["straggler"] == pytest.approx(trained["straggler"])
    if mode == "full":  # the first steps of the run miss Horovod's response cache: their ready ticks are used
        assert json.loads(cli.stdout)[0]["straggler"]["tick_steps"] > 0
    text = subprocess.run(python_module("hvd_mlp.timeline", "summarize", out), capture_output=True, text=True)
    assert re.search(r"epoch 3 \| comm .* \| straggler rank 1 .*rank 1 computes slower", text.stdout), \
        text.stdout[-2000:]
    assert re.search(r"epoch 3 per rank \(.*straggler rank 1: high confidence", text.stdout)


@needs_cgroups
@pytest.mark.parametrize("controller, mode", [("mpi", "full"), ("gloo", "window")])
def test_no_rank_is_named_without_load(tmp_path, controller, mode):
    with CpuGroup("both", weight=16) as both:
        _, _, res = train_in_groups(tmp_path, controller, mode, {0: both, 1: both})
    for e in res["epochs"]:
        assert e["straggler"]["confidence"] != "high", e["straggler"]
        assert len(e["ranks"]) == 2
