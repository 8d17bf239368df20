"""Recording Horovod's timeline and every rank's step trace, cheaply by default. Recording only (analysis: timeline).

Modes:
- window: HOROVOD_TIMELINE=DYNAMIC, and every epoch records `window_steps` steps with hvd.start_timeline /
  hvd.stop_timeline into timeline-epochN.json. Why: writing every event costs a 2-core machine a large share of
  its throughput (docs/timeline.md).
- full: HOROVOD_TIMELINE=<run dir>/timeline.json; every event of the run, analysed per epoch after shutdown.
A user's own `horovodrun --timeline-filename F` (HOROVOD_TIMELINE=F) is honoured as full mode on F.

With the timeline on, every rank also traces its own steps (steptrace.py) over the same steps — the window, or
every step in full mode — after measuring its clock's offset to rank 0 before each epoch (`measure_clock`).
"""
import os
import socket
import time
from typing import Optional

import horovod.torch as hvd
import torch

from hvd_mlp import steptrace
from hvd_mlp.timeline.epochs import FULL_FILE, window_file
from hvd_mlp.results import TimelineWindow
from hvd_mlp.timeline import now_us

SETTLE_STEPS = 5  # the window starts after the first steps of an epoch, once the loop has settled
CLOCK_ROUNDS = 8  # timed allgathers per clock measurement: the intersection of their bounds tightens with each


class TimelineRecorder:
    def __init__(self, mode: str, run_dir: str, window_steps: int, full_file: str = ""):
        self.mode, self.run_dir, self.window_steps = mode, run_dir, window_steps
        self.full_file = full_file  # full mode: the one file Horovod writes all run long
        self.recording, self.window = False, None
        self.trace = None  # this rank's step trace of the current epoch (timeline on)

    @classmethod
    def before_init(cls, mode: str, run_dir: str, window_steps: int) -> "TimelineRecorder":
        """Set the environment Horovod reads at hvd.init()."""
        user_file = os.environ.get("HOROVOD_TIMELINE", "")
        if user_file and user_file != "DYNAMIC":
            return cls("full", run_dir, window_steps, full_file=user_file)
        if mode == "full":
            os.environ["HOROVOD_TIMELINE"] = os.path.join(run_dir, FULL_FILE)
            return cls(mode, run_dir, window_steps, full_file=os.environ["HOROVOD_TIMELINE"])
        if mode == "window":
            os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
        return cls(mode, run_dir, window_steps)

    def begin_epoch(self, epoch: int, steps: int):
        """Before the epoch's clock starts: measure this rank's clock offset (a collective: every rank)."""
        if self.mode == "off":
            return
        self.trace = steptrace.StepTrace(epoch, measure_clock())
        if self.mode != "window":
            return
        self.first = min(SETTLE_STEPS, max(0, steps - self.window_steps))
        self.last = min(steps, self.first + self.window_steps)
        self.window = TimelineWindow(file=window_file(self.run_dir, epoch), steps=self.last - self.first)

    def before_step(self, step: int):
        if self.mode != "window":
            return
        if step == self.first:
            hvd.start_timeline(self.window.file, mark_cycles=False)  # HVD: every rank, same step
            self.window.start_unix_us = now_us()
            self.recording = True
        elif step == self.last and self.recording:
            self._stop()

    def after_step(self, step: int, times: steptrace.StepTimes):
        if self.trace is not None and (self.recording or self.mode == "full"):
            self.trace.add(step, times)

    def _stop(self):
        hvd.stop_timeline()  # HVD
        self.window.end_unix_us = now_us()
        self.recording = False

    def end_epoch(self) -> Optional[TimelineWindow]:
        """The epoch's recorded window, on rank 0 (which writes the timeline); None otherwise."""
        if self.mode != "window":
            return None
        if self.recording:
            self._stop()
        return self.window if hvd.rank() == 0 else None  # HVD: only rank 0 writes the timeline

    def gather_traces(self) -> list:
        """Every rank's step trace of the epoch, by rank; each rank first writes its own into the run directory."""
        if self.trace is None:
            return []
        mine = self.trace.payload(hvd.rank(), hvd.size(), socket.gethostname())  # HVD
        steptrace.write(self.run_dir, mine)
        self.trace = None
        return hvd.allgather_object(mine, name="steps.traces")  # HVD: one small gather per epoch


def measure_clock(rounds: int = CLOCK_ROUNDS) -> steptrace.Clock:
    """This rank's wall clock against rank 0's (steptrace.offset_interval): `rounds` timed allgathers, then one
    allgather of everyone's timings, so every rank can work out its own offset and error bound."""
    timings = []
    for _ in range(rounds):
        enter = time.time_ns()
        hvd.allgather(torch.zeros(1, dtype=torch.int64), name="clock.round")  # HVD
        timings.append((enter, time.time_ns()))
    everyone = hvd.allgather(torch.tensor([timings], dtype=torch.int64), name="clock.timings")  # HVD: [size, k, 2]
    rank0, mine = everyone[0].tolist(), everyone[hvd.rank()].tolist()  # HVD
    offset_ns, error_ns = steptrace.offset_interval(rank0, mine) if hvd.rank() else (0, 0)  # HVD: 0 is the reference
    return steptrace.Clock(offset_us=offset_ns / 1e3, error_us=error_ns / 1e3,
                           measured_unix_us=int(timings[-1][1] - offset_ns) // 1000)
