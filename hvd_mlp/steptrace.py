"""Per-rank step traces: when each traced step's phases began and ended on one rank, and that rank's clock offset.

Every rank keeps, for the steps of the timeline window (every step in full mode), four moments per step:

    start     the step begins (zero_grad, forward)
    handover  backward has ended: every gradient hook has handed its tensor to Horovod
    synced    optimizer.synchronize() returned: the averaged gradients are back
    end       the optimizer step is done

in memory, as perf_counter readings converted once to its wall clock (microseconds since the Unix epoch), and
writes them once per epoch to RUN/steps-epoch{E}-rank{R}-{host}.json. Ranks on different hosts do not share a
clock: each trace carries its rank's offset to rank 0 (`offset_interval`, measured with Horovod collectives by the
recorder) and the bound on that offset's error, so a reader can put every rank on rank 0's clock.
"""
import glob
import json
import os
import re
import time
from dataclasses import dataclass
from typing import NamedTuple

from hvd_mlp.errors import UserError
from hvd_mlp.storage import write_json

FORMAT = "hvd_mlp step trace 1"
FIELDS = ("step", "start_us", "handover_us", "synced_us", "end_us")
FILE_NAME = re.compile(r"steps-epoch(\d+)-rank(\d+)-.*\.json$")


class StepTimes(NamedTuple):
    """The four moments of one step, perf_counter seconds (train_step returns them)."""
    start: float
    handover: float
    synced: float
    end: float

    @property
    def compute(self) -> float:  # forward + backward + optimizer step
        return (self.handover - self.start) + (self.end - self.synced)

    @property
    def wait(self) -> float:  # in synchronize(): the communication backward did not hide
        return self.synced - self.handover


@dataclass
class Clock:
    """This rank's wall clock minus rank 0's, within +- error_us, as measured at measured_unix_us (rank 0's clock)."""
    offset_us: float
    error_us: float
    measured_unix_us: int


# --------------------------------------------------------------------------------------------------- clock offsets
def offset_interval(rounds_0: list, rounds_r: list) -> tuple:
    """(offset, error bound) of rank r's clock against rank 0's, from timed rounds of one collective.

    rounds_x = [(enter, exit), ...]: each rank's own clock just before entering and just after leaving the same
    allgather. Every rank's result holds every rank's input, so rank 0 cannot leave round k before rank r entered
    it, nor r leave before 0 entered: theta = clock_r - clock_0 lies in (enter_r - exit_0, exit_r - enter_0) — no
    assumption of symmetric delays. Its middle is NTP's ((t1 - t0) + (t2 - t3)) / 2 with (t0, t1, t2, t3) = (enter_0,
    enter_r, exit_r, exit_0); its half-width, the mean of the two ranks' times in the collective, is wider than NTP's
    RTT/2 because r's stamps bracket its whole part, not one receipt. Each round gives such an interval; all hold
    the offset, so their intersection does. Returns its middle and half-width; the narrowest single round where
    they do not intersect (a clock stepped during the measurement).
    """
    bounds = [(enter_r - exit_0, exit_r - enter_0) for (enter_0, exit_0), (enter_r, exit_r) in zip(rounds_0, rounds_r)]
    lo, hi = max(b[0] for b in bounds), min(b[1] for b in bounds)
    if lo > hi:
        lo, hi = min(bounds, key=lambda b: b[1] - b[0])
    return (lo + hi) / 2, (hi - lo) / 2


# --------------------------------------------------------------------------------------------------- recording
class StepTrace:
    """One rank's traced steps of one epoch, in memory until `payload()`."""

    def __init__(self, epoch: int, clock: Clock):
        self.epoch, self.clock, self.steps = epoch, clock, []
        # one wall-clock reading anchors the monotonic ones: durations stay exact whatever the wall clock does
        self.anchor_us, self.anchor_perf = time.time_ns() / 1e3, time.perf_counter()

    def add(self, step: int, times: StepTimes):
        self.steps.append((step, times))

    def payload(self, rank: int, size: int, host: str) -> dict:
        """The trace as written to its file and gathered by rank 0: this rank's wall clock, microseconds."""
        wall = [[step] + [round(self.anchor_us + (t - self.anchor_perf) * 1e6, 1) for t in times]
                for step, times in self.steps]
        return {"format": FORMAT, "epoch": self.epoch, "rank": rank, "size": size, "host": host,
                "clock": vars(self.clock), "fields": list(FIELDS), "steps": wall}


def file_name(epoch: int, rank: int, host: str) -> str:
    """Per epoch and rank, the host in the name: files of several hosts can be gathered in one directory."""
    return f"steps-epoch{epoch}-rank{rank}-{re.sub(r'[^A-Za-z0-9._-]', '_', host)}.json"


def write(run_dir: str, payload: dict) -> str:
    os.makedirs(run_dir, exist_ok=True)  # a host without the shared file system: the files stay on it
    path = os.path.join(run_dir, file_name(payload["epoch"], payload["rank"], payload["host"]))
    write_json(path, payload, durable=False)  # atomic, not fsynced: an fsync cost rank 0 ~55 ms an epoch here
    return path


# --------------------------------------------------------------------------------------------------- reading
def read(path: str) -> dict:
    """One step trace file, checked; UserError naming what is wrong."""
    try:
        with open(path) as fh:
            trace = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(trace, dict) or trace.get("format") != FORMAT:
        raise UserError(f"{path} is not a hvd_mlp step trace ({FORMAT!r})")
    try:
        trace["clock"] = vars(Clock(**trace["clock"]))  # the same plain dict as a gathered payload
        steps = trace["steps"]
        if not all(len(row) == len(FIELDS) and all(isinstance(v, (int, float)) for v in row) for row in steps):
            raise ValueError
        int(trace["rank"]), int(trace["epoch"]), str(trace["host"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: a hvd_mlp step trace with a missing or malformed field") from None
    return trace


def read_run(run_dir: str) -> dict:
    """{epoch: [each rank's trace, by rank]} of the step trace files in run_dir."""
    by_epoch = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "steps-epoch*-rank*-*.json"))):
        if FILE_NAME.search(os.path.basename(path)):
            trace = read(path)
            by_epoch.setdefault(trace["epoch"], []).append(trace)
    return {e: sorted(traces, key=lambda t: t["rank"]) for e, traces in sorted(by_epoch.items())}


def on_rank0_clock(trace: dict) -> dict:
    """{step: (start, handover, synced, end)} of a trace, moved onto rank 0's clock (microseconds)."""
    offset = trace["clock"]["offset_us"]
    return {int(row[0]): tuple(v - offset for v in row[1:]) for row in trace["steps"]}
