"""A stretch of a timeline as a valid, self-contained trace, for timelines too big to open in Perfetto or Chrome.

Streaming, in bounded memory: the events before the stretch are read only to know which spans are open where it
starts, and reading stops at its end. The slice keeps the metadata (process names, the start-time record), opens at
its start the spans open there and closes at its end those still open, and leaves every time as it was, so it lines
up with the whole file: `summarize` of a slice equals `summarize` of the same stretch of the whole file.
"""
from hvd_mlp.timeline.tracefile import CUT, TimelineError, iter_events, write_trace

START_RECORD = "start_time_since_epoch_in_micros"  # the wall clock (us) of ts == 0
# Horovod writes events in the order it records them, not strictly by time (a fused op's tensors are written one
# after the other): read this far past the stretch's end before stopping
REORDER_US = 1_000_000


def slice_timeline(src: str, dst: str, start_s: float = 0.0, end_s: float = float("inf"),
                   wall_us: tuple = ()) -> dict:
    """Write the events of src between start_s and end_s (seconds of the timeline's clock, ts / 1e6) to dst; or,
    with wall_us = (start, end), between two wall-clock times (us since the Unix epoch: an epoch of results.json).
    Returns counts of what was written and the file's warnings."""
    issues, stacks = [], {}
    counts = {"events": 0, "opened": 0, "closed": 0, "last_ts": None}
    lo, hi = start_s * 1e6, end_s * 1e6
    inside, need_origin = False, bool(wall_us)
    with write_trace(dst) as trace:
        for ev in iter_events(src, issues):
            ph, ts = ev["ph"], ev.get("ts")
            if ph == "M":
                if need_origin and START_RECORD in ev.get("args", {}):
                    origin = ev["args"][START_RECORD]
                    lo, hi, need_origin = wall_us[0] - origin, wall_us[1] - origin, False
                trace.write(ev)
                continue
            if ts is None:
                continue
            if need_origin:
                raise TimelineError(f"{src} has no start-time record before its first event: slice it with --from "
                                    "and --to (seconds) instead of --epoch")
            if ts > hi:
                if ts > hi + REORDER_US:
                    break
                continue  # past the end: a span begun inside is closed at the end below
            counts["last_ts"] = max(ts, counts["last_ts"] or ts)
            if not inside and ts >= lo:  # the stretch begins: reopen, in order, what is open here
                inside = True
                for (pid, tid), stack in stacks.items():
                    for name in stack:
                        trace.write({"ph": "B", "name": name, "pid": pid, "tid": tid, "ts": lo})
                        counts["opened"] += 1
            if ph in ("B", "E"):
                stack = stacks.setdefault((ev["pid"], ev.get("tid", 0)), [])
                if ph == "B":
                    stack.append(ev["name"])
                elif stack:
                    stack.pop()
                elif inside:
                    continue  # an end whose start the file never had (a DYNAMIC window): nothing to end
            if inside:
                trace.write(ev if ts >= lo else {**ev, "ts": lo})  # written late, but it is in the stretch from lo
        if not inside:
            end = f"its events end at {counts['last_ts'] / 1e6:.3f} s" if counts["last_ts"] is not None else \
                "it has no timed events"
            raise TimelineError(f"the slice {lo / 1e6:.3f}..{hi / 1e6:.3f} s of {src} is empty ({end})")
        close_at = hi if hi != float("inf") else counts["last_ts"]  # open to the end: close at the last event
        for (pid, tid), stack in stacks.items():  # close at the stretch's end what goes on past it
            for _ in stack:
                trace.write({"ph": "E", "pid": pid, "tid": tid, "ts": close_at, "args": {CUT: True}})
                counts["closed"] += 1
        counts["events"] = trace.events
    counts["warnings"] = issues
    return counts
