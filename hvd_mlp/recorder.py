"""Recording Horovod's timeline during training, cheaply by default.

Modes:
- window: HOROVOD_TIMELINE=DYNAMIC, and every epoch records `timeline_steps` steps with hvd.start_timeline /
  hvd.stop_timeline into timeline-epochN.json. The window's figures are scaled to the whole epoch (said so in the
  output). Why: writing every event costs a 2-core machine a large share of its throughput (docs/timeline.md).
- full: HOROVOD_TIMELINE=<run dir>/timeline.json; every event of the run, analysed per epoch after shutdown.
A user's own `horovodrun --timeline-filename F` (HOROVOD_TIMELINE=F) is honoured as full mode on F.
"""
import os

import horovod.torch as hvd

from hvd_mlp import timeline

SETTLE_STEPS = 5  # the window starts after the first steps of an epoch, once the loop has settled


class TimelineRecorder:
    def __init__(self, mode: str, path: str, window_steps: int):
        self.mode, self.path, self.window_steps = mode, path, window_steps
        self.recording, self.window = False, None

    @classmethod
    def before_init(cls, mode: str, run_dir: str, window_steps: int) -> "TimelineRecorder":
        """Set the environment Horovod reads at hvd.init()."""
        user_file = os.environ.get("HOROVOD_TIMELINE", "")
        if user_file and user_file != "DYNAMIC":
            return cls("full", user_file, window_steps)
        if mode == "full":
            path = os.path.join(run_dir, "timeline.json")
            os.environ["HOROVOD_TIMELINE"] = path
            return cls(mode, path, window_steps)
        if mode == "window":
            os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
        return cls(mode, run_dir, window_steps)

    # ------------------------------------------------------------------------------------------- window mode
    def begin_epoch(self, epoch: int, steps: int):
        if self.mode != "window":
            return
        self.first = min(SETTLE_STEPS, max(0, steps - self.window_steps))
        self.last = min(steps, self.first + self.window_steps)
        self.window = {"file": os.path.join(self.path, f"timeline-epoch{epoch}.json"), "steps": self.last - self.first}

    def before_step(self, step: int):
        if self.mode != "window":
            return
        if step == self.first:
            hvd.start_timeline(self.window["file"], mark_cycles=False)  # HVD: every rank, same step
            self.window["start_unix_us"] = timeline.now_us()
            self.recording = True
        elif step == self.last and self.recording:
            self._stop()

    def _stop(self):
        hvd.stop_timeline()  # HVD
        self.window["end_unix_us"] = timeline.now_us()
        self.recording = False

    def end_epoch(self):
        """The epoch's recorded window (dict), or None when not in window mode."""
        if self.mode != "window":
            return None
        if self.recording:
            self._stop()
        return self.window if hvd.rank() == 0 else None  # HVD: only rank 0 writes the timeline

    def epoch_comm(self, record: dict) -> dict:
        """The window's communication figures, scaled from its steps to the whole epoch."""
        window = record["timeline_window"]
        clip = [{"epoch": record["epoch"], "start_unix_us": window["start_unix_us"],
                 "end_unix_us": window["end_unix_us"]}]
        if hvd.size() == 1:  # HVD: one rank communicates nothing (Horovod records no collective at all)
            measured = {"epoch": record["epoch"], **{k: 0 for k in sorted(timeline.SCALABLE_KEYS)}}
        else:
            try:
                measured = timeline.summarize(window["file"], clip)["epochs"][0]
            except timeline.TimelineError as e:  # e.g. an epoch too short to record any collective
                return {"error": str(e)}
        scale = record["steps"] / max(1, window["steps"])
        comm = {k: (v * scale if k in timeline.SCALABLE_KEYS else v) for k, v in measured.items()}
        comm.update(epoch_time_s=record["epoch_time_s"], scaled_from_steps=window["steps"], scale=scale)
        return timeline.with_shares(comm, record.get("comm_wait_s"))

    # ------------------------------------------------------------------------------------------- full mode
    def finish(self, history: list):
        """After hvd.shutdown(), the full timeline file is complete: attach each epoch's figures."""
        if self.mode != "full" or not history:
            return
        try:
            report = timeline.summarize(self.path, history)
        except timeline.TimelineError as e:
            print(f"warning: timeline not analysed: {e}", flush=True)
            return
        for record, comm in zip(history, report["epochs"]):
            record["comm"] = comm
            print(f"epoch {record['epoch']} comm{self.describe(record)}", flush=True)

    @staticmethod
    def describe(record: dict) -> str:
        """The epoch line's communication part."""
        comm = record.get("comm")
        if not comm or "error" in comm:
            return ""
        scaled = f", {comm['scaled_from_steps']}-step window scaled" if "scaled_from_steps" in comm else ""
        return (f" | comm {100 * comm['comm_share']:.1f}% of epoch: allreduce {comm['op_us'] / 1e6:.2f} s "
                f"({comm['allreduce_ops']:.0f} tensors, {comm['allreduce_bytes'] / 1e6:.0f} MB, "
                f"{comm['bandwidth_MBps']:.0f} MB/s){scaled}")
