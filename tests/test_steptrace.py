"""Step traces: the clock offset and its error bound from timed rounds, and the per-rank file written and read."""
import json
import random

import pytest

from hvd_mlp import steptrace
from hvd_mlp.errors import UserError


def rounds(true_offset, delays):
    """Timed rounds of one collective as both clocks read them: rank 0 enters at t, rank r at t + skew (true time);
    the collective completes at the later entry plus a one-way delay, seen by each rank after its own delay."""
    zero, other, t = [], [], 1_000_000.0
    for skew, d0, dr in delays:
        enter0, enter_r = t, t + skew
        done = max(enter0, enter_r)
        zero.append((enter0, done + d0))
        other.append((enter_r + true_offset, done + dr + true_offset))
        t += 1000
    return zero, other


def test_offset_within_its_bound_even_with_asymmetric_delays():
    rng = random.Random(1)
    for true in (0.0, 2_000_000.0, -37_000.0):
        delays = [(rng.uniform(-300, 300), rng.uniform(5, 200), rng.uniform(5, 800)) for _ in range(8)]
        offset, error = steptrace.offset_interval(*rounds(true, delays))
        assert abs(offset - true) <= error + 1e-6
        widest = max((d0 + dr) / 2 + abs(skew) for skew, d0, dr in delays)
        assert error < widest  # the intersection is tighter than the worst single round


def test_one_round_is_ntp():
    """One round: NTP's offset ((t1 - t0) + (t2 - t3)) / 2; the bound is the mean of both ranks' times inside."""
    offset, error = steptrace.offset_interval([(0, 100)], [(500, 540)])
    assert (offset, error) == (470, 70)


def test_clock_stepped_mid_measurement_falls_back_to_the_narrowest_round():
    zero = [(0, 10), (1000, 1010)]
    other = [(0, 10), (6000, 6010)]  # second round: the clock jumped by 5 ms
    offset, error = steptrace.offset_interval(zero, other)
    assert (offset, error) == (0, 10)


def test_step_times():
    t = steptrace.StepTimes(1.0, 1.004, 1.006, 1.007)
    assert t.compute == pytest.approx(0.005) and t.wait == pytest.approx(0.002)


def test_payload_round_trip(tmp_path):
    trace = steptrace.StepTrace(3, steptrace.Clock(offset_us=2e6, error_us=40.0, measured_unix_us=5))
    base = trace.anchor_perf
    trace.add(7, steptrace.StepTimes(base + 0.001, base + 0.004, base + 0.005, base + 0.0055))
    payload = trace.payload(1, 2, "node 2/x")
    path = steptrace.write(str(tmp_path / "run"), payload)
    assert path.endswith("steps-epoch3-rank1-node_2_x.json")
    back = steptrace.read(path)
    assert back["steps"][0][0] == 7 and back["steps"][0][2] - back["steps"][0][1] == pytest.approx(3000, abs=0.2)
    assert steptrace.read_run(str(tmp_path / "run")) == {3: [back]}
    aligned = steptrace.on_rank0_clock(back)[7]
    assert aligned[0] == pytest.approx(back["steps"][0][1] - 2e6)


@pytest.mark.parametrize("content, message", [
    ("{", "is unreadable"),
    ('{"format": "other"}', "is not a hvd_mlp step trace"),
    (json.dumps({"format": steptrace.FORMAT, "epoch": 1, "rank": 0, "host": "h", "clock": {"offset_us": 0},
                 "steps": []}), "missing or malformed field"),
    (json.dumps({"format": steptrace.FORMAT, "epoch": 1, "rank": 0, "host": "h",
                 "clock": {"offset_us": 0, "error_us": 0, "measured_unix_us": 0}, "steps": [[1, 2]]}),
     "missing or malformed field"),
])
def test_bad_file_is_named(tmp_path, content, message):
    path = tmp_path / "steps-epoch1-rank0-h.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        steptrace.read(str(path))
