"""One merged Chrome trace of a run: every rank's step phases on rank 0's clock, beside Horovod's tensor tracks.

    python -m hvd_mlp.timeline merge RUN_DIR OUT.json

Horovod's timeline (rank 0's clock) keeps its events, with each tensor on one track across the window files; each
rank becomes one more process, "rank R (host)", holding its traced steps as slices — forward+backward, synchronize
(wait), optimizer step, other — and an instant where it handed its gradients over ("hand-over (last)" for the rank
the others waited for), moved onto rank 0's clock by its measured offset. The output follows the rules of
`timeline repair` (orphan ends dropped, open spans closed, one valid JSON array), so Perfetto and Chrome load it.
"""
import itertools
import os

from hvd_mlp import results, steptrace
from hvd_mlp.errors import UserError
from hvd_mlp.timeline.epochs import FULL_FILE
from hvd_mlp.timeline.tracefile import repaired, write_trace

RANK_PID = 1_000_000  # rank r is process RANK_PID + r: clear of Horovod's tensor pids (1, 2, ...)
PHASES = (("forward+backward", 0, 1), ("synchronize (wait)", 1, 2), ("optimizer step", 2, 3))


def timeline_files(run_dir: str, record: results.RunRecord) -> list:
    """The run's Horovod timeline files, in time order: its window files, else its full timeline.json."""
    windows = [os.path.join(run_dir, os.path.basename(e.timeline_window.file)) for e in record.epochs
               if e.timeline_window]
    full = os.path.join(run_dir, FULL_FILE)
    return [f for f in windows if os.path.exists(f)] or ([full] if os.path.exists(full) else [])


class _Horovod:
    """Horovod's events from several files on one time base (the first file's), one pid per tensor name."""

    def __init__(self, files: list):
        self.files, self.origin, self.pids = files, None, {}
        self.issues, self.counts = [], {"orphans": 0, "closed": 0}

    def _pid(self, path: str, local: dict, pid):
        if not pid:
            return pid  # 0: Horovod's start record
        if pid not in local:  # a tensor the file never named
            local[pid] = self.pids.setdefault(f"{path}#{pid}", len(self.pids) + 1)
        return local[pid]

    def events(self):
        written = set()  # (metadata name, pid): each tensor's name and sort index once, not once per window file
        for path in self.files:
            counts, local, shift = {}, {}, 0
            for ev in repaired(path, self.issues, counts):
                args = ev.get("args") or {}
                if ev["ph"] == "M":
                    if "start_time_since_epoch_in_micros" in args:
                        start = int(args["start_time_since_epoch_in_micros"])
                        self.origin = start if self.origin is None else self.origin
                        shift = start - self.origin  # the windows of one run share it; a user's file may not
                    elif ev.get("name") == "process_name" and "name" in args:
                        local[ev.get("pid")] = self.pids.setdefault(args["name"], len(self.pids) + 1)
                    ev["pid"] = self._pid(path, local, ev.get("pid"))
                    if (ev.get("name"), ev["pid"]) in written:
                        continue
                    written.add((ev.get("name"), ev["pid"]))
                    if ev.get("name") == "process_sort_index" and ev["pid"]:
                        ev["args"] = {"sort_index": ev["pid"]}
                elif "ts" in ev:
                    ev["pid"] = self._pid(path, local, ev.get("pid"))
                    ev["ts"] += shift
                yield ev
            for key in self.counts:
                self.counts[key] += counts[key]


def rank_events(traces_by_epoch: dict, origin_us: float):
    """Each rank's traced steps as complete ('X') slices and hand-over instants, on rank 0's clock, microseconds
    after origin_us."""
    for rank, host in sorted({(t["rank"], t["host"]) for ts in traces_by_epoch.values() for t in ts}):
        worst = max(t["clock"]["error_us"] for ts in traces_by_epoch.values() for t in ts if t["rank"] == rank)
        pid = RANK_PID + rank
        yield {"ph": "M", "name": "process_name", "pid": pid,
               "args": {"name": f"rank {rank} ({host}) steps, on rank 0's clock +-{worst:.0f} us"}}
        yield {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": -1000 + rank}}
    for epoch, traces in traces_by_epoch.items():
        aligned = [steptrace.on_rank0_clock(t) for t in traces]
        for trace, steps in zip(traces, aligned):
            pid = RANK_PID + trace["rank"]
            for step, moments in steps.items():
                t = [m - origin_us for m in moments]
                args = {"epoch": epoch, "step": step}
                for name, a, b in PHASES:
                    yield {"ph": "X", "name": name, "pid": pid, "tid": 0, "ts": t[a], "dur": max(0.0, t[b] - t[a]),
                           "args": args}
                if step + 1 in steps:
                    gap = steps[step + 1][0] - moments[3]
                    yield {"ph": "X", "name": "other", "pid": pid, "tid": 0, "ts": t[3], "dur": max(0.0, gap),
                           "args": args}
                last = all(moments[1] >= other[step][1] for other in aligned if step in other)
                yield {"ph": "i", "s": "t", "name": "hand-over (last)" if last else "hand-over", "pid": pid,
                       "tid": 0, "ts": t[1], "args": args}


def merge(run_dir: str, out: str) -> dict:
    """Write the merged trace; returns what went in (counts, the clock error bound, warnings)."""
    record = results.read_finished(run_dir)
    traces = steptrace.read_run(run_dir)
    if not traces:
        raise UserError(f"{run_dir} holds no step traces (steps-epoch*-rank*-*.json): train with --timeline-mode "
                        "window or full")
    horovod = _Horovod(timeline_files(run_dir, record))
    missing = sorted({r for ts in traces.values() for r in range(ts[0]["size"])} -
                     {t["rank"] for ts in traces.values() for t in ts})
    with write_trace(out) as trace:
        for ev in itertools.chain(horovod.events(), _after(horovod, traces)):
            trace.write(ev)
    warnings = horovod.issues + ([f"no step trace of rank(s) {', '.join(map(str, missing))}: each rank writes its "
                                  "own on its host; copy those steps-epoch*-rank*-*.json into the run directory"]
                                 if missing else [])
    return {"events": trace.events, "ranks": len({t["rank"] for ts in traces.values() for t in ts}),
            "steps": sum(len(t["steps"]) for ts in traces.values() for t in ts),
            "files": len(horovod.files), "error_us": max(t["clock"]["error_us"] for ts in traces.values() for t in ts),
            **horovod.counts, "warnings": warnings}


def _after(horovod: _Horovod, traces: dict):
    """The ranks' events, once Horovod's have set the time base (or, without a Horovod file, the first step's)."""
    origin = horovod.origin if horovod.origin is not None else \
        min(row[1] - t["clock"]["offset_us"] for ts in traces.values() for t in ts for row in t["steps"])
    yield from rank_events(traces, origin)
