"""bench efficiency: its arithmetic (efficiency, a step's parts adding up to the step, the median run, the spread),
its flags, and one small real run of the floor and np=2 under horovodrun."""
import subprocess

import pytest

from conftest import python_module
from hvd_mlp import bench, efficiency

EPOCH = {"steps": 100, "epoch_time_s": 0.5, "compute_s": 0.3, "comm_wait_s": 0.15, "other_s": 0.05,
         "comm": {"negotiate_us": 2000.0, "memcpy_us": 3000.0, "collective_us": 4000.0, "op_us": 9000.0}}


def test_a_step_splits_into_floor_inflation_wait_and_other():
    row = efficiency.step_breakdown(EPOCH, floor_compute_ms=2.5)
    assert row["step_ms"] == pytest.approx(5.0)
    assert row["inflation_ms"] == pytest.approx(0.5) and row["wait_ms"] == pytest.approx(1.5)
    assert sum(row[k] for k in efficiency.PARTS) == pytest.approx(row["step_ms"])
    assert (row["negotiate_ms"], row["memcpy_ms"], row["collective_ms"]) == pytest.approx((0.02, 0.03, 0.04))


def test_without_a_timeline_the_breakdown_has_the_timers_only():
    row = efficiency.step_breakdown({**EPOCH, "comm": None}, floor_compute_ms=3.0)
    assert not set(efficiency.TIMELINE) & set(row) and row["inflation_ms"] == pytest.approx(0.0)


def test_efficiency_is_against_n_single_ranks():
    assert efficiency.efficiency(24000, 2, 16000) == pytest.approx(0.75)
    assert efficiency.efficiency(16000, 1, 16000) == 1.0


def test_summary_takes_the_median_run_and_the_spread_of_all():
    rows = [{"batch": 32, "name": "np=2", "np": 2, "repeat": i, "samples_per_s": rate, "efficiency": eff,
             **efficiency.step_breakdown({**EPOCH, "epoch_time_s": t}, 2.5)}
            for i, (rate, eff, t) in enumerate([(20000, 0.80, 0.4), (10000, 0.50, 0.8), (16000, 0.70, 0.5)])]
    (line,) = efficiency.summarize(rows)
    assert line["samples_per_s"] == 16000 and line["step_ms"] == pytest.approx(5.0)  # the median run, whole
    assert line["efficiency"] == 0.70 and (line["efficiency_min"], line["efficiency_max"]) == (0.50, 0.80)
    assert line["spread"] == pytest.approx((20000 - 10000) / 16000)
    assert line["repeats"] == 3


def test_a_variant_is_environment_then_training_flags():
    assert efficiency.variant("bound: A=1 B=x=y --bind-cores --threads 1") == (
        "bound", {"A": "1", "B": "x=y"}, ["--bind-cores", "--threads", "1"])
    assert efficiency.variant("env only: OMP_WAIT_POLICY=PASSIVE") == ("env only", {"OMP_WAIT_POLICY": "PASSIVE"}, [])


@pytest.mark.parametrize("args, message", [
    (["--batches", "32,x"], "argument --batches: expected comma-separated whole numbers > 0, got '32,x'"),
    (["--batches", "32,0"], "argument --batches: must all be > 0, got 32,0"),
    (["--np", "-2"], "argument --np: must all be > 0, got -2"),
    (["--repeats", "0"], "argument --repeats: must be > 0, got 0"),
    (["--variant", "no colon"], "argument --variant: expected 'NAME: KEY=VALUE ... --train-flag ...', got 'no colon'"),
    (["--variant", "x:"], "argument --variant: expected 'NAME: KEY=VALUE ... --train-flag ...', got 'x:'"),
    (["--variant", "x: A"], "argument --variant: environment settings must be KEY=VALUE before any flag, got 'x: A'"),
    (["--variant", "np=1 horovod: A=1"],
     "argument --variant: 'np=1 horovod' names one of the benchmark's own rows: choose another"),
])
def test_bad_flags_are_one_line(args, message):
    proc = subprocess.run(python_module("hvd_mlp.bench", "efficiency", *args), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"hvd_mlp.bench: error: {message}"


def test_a_small_real_run(monkeypatch, capsys):
    """The floor, the floor through Horovod and np=2 under the real horovodrun: the printed table holds the runs'
    own figures."""
    epochs = []  # the steady epoch of each run, in order: floor, np=1 horovod, np=2

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        epochs.append(efficiency.steady_epoch(res))
        return res
    real = bench.run_training
    monkeypatch.setattr(bench, "run_training", spy)
    bench.main(["efficiency", "--batches", "16", "--np", "2", "--repeats", "1", "--samples", "800",
                "--timeline-steps", "5"])
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.split()[:2] == ["batch", "run"])
    floor, solo, np2 = (line.replace("|", " ").split() for line in out[header + 1:header + 4])
    assert floor[:2] == ["16", "floor"] and solo[:3] == ["16", "np=1", "horovod"] and np2[:2] == ["16", "np=2"]
    assert len(out) == header + 5
    del solo[2]  # the name's second word: now in the columns of the others
    assert [float(v.replace(",", "")) for v in (floor[2], solo[2], np2[2])] == pytest.approx(
        [e["samples_per_s"] for e in epochs], abs=0.5)
    assert float(np2[4].rstrip("%")) == pytest.approx(
        100 * epochs[2]["samples_per_s"] / (2 * epochs[0]["samples_per_s"]), abs=0.5)
    assert float(solo[4].rstrip("%")) == pytest.approx(100 * epochs[1]["samples_per_s"] / epochs[0]["samples_per_s"],
                                                       abs=0.5)
    assert float(solo[9]) > float(floor[9])  # its steps waited for Horovod's allreduce; the floor's for nothing
    step, floor_ms, inflation, wait, other, negotiate, copies, transfer = map(float, np2[6:14])
    assert step == pytest.approx(1e3 * epochs[2]["epoch_time_s"] / epochs[2]["steps"], abs=0.006)
    assert floor_ms == pytest.approx(1e3 * epochs[0]["compute_s"] / epochs[0]["steps"], abs=0.006)
    assert floor_ms + inflation + wait + other == pytest.approx(step, abs=0.02)
    assert transfer > 0 and copies >= 0 and negotiate >= 0  # np=2 recorded its allreduces
