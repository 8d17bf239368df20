"""Recording Horovod's timeline during training, cheaply by default. Recording only: the analysis is timeline.epochs'.

Modes:
- window: HOROVOD_TIMELINE=DYNAMIC, and every epoch records `window_steps` steps with hvd.start_timeline /
  hvd.stop_timeline into timeline-epochN.json. Why: writing every event costs a 2-core machine a large share of
  its throughput (docs/timeline.md).
- full: HOROVOD_TIMELINE=<run dir>/timeline.json; every event of the run, analysed per epoch after shutdown.
A user's own `horovodrun --timeline-filename F` (HOROVOD_TIMELINE=F) is honoured as full mode on F.
"""
import os
from typing import Optional

import horovod.torch as hvd

from hvd_mlp.timeline.epochs import FULL_FILE, window_file
from hvd_mlp.results import TimelineWindow
from hvd_mlp.timeline import now_us

SETTLE_STEPS = 5  # the window starts after the first steps of an epoch, once the loop has settled


class TimelineRecorder:
    def __init__(self, mode: str, run_dir: str, window_steps: int, full_file: str = ""):
        self.mode, self.run_dir, self.window_steps = mode, run_dir, window_steps
        self.full_file = full_file  # full mode: the one file Horovod writes all run long
        self.recording, self.window = False, None

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
