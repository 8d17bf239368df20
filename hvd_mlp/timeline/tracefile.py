"""Reading and repairing a Horovod timeline file (Chrome-trace JSON), whatever its size and damage.

A JSON array of events; Horovod ends metadata records with a newline and chains the others with `,` on one line,
rewriting the closing `]` after each event. A killed run leaves it cut anywhere. The file is read in chunks
(memory bounded), as far as it goes; each imperfection is named in `issues`, and only an unusable file is an error.
"""
import contextlib
import json
import math
import re

from hvd_mlp.errors import UserError
from hvd_mlp.storage import atomic_file

CHUNK = 1 << 22  # 4 MiB of text per read
MAX_PENDING = 1 << 26  # an "event" longer than 64 MiB means this is not a timeline
NUMBER, PID = {int, float}, {int, str}  # exact types (a bool is no time); the decoder refuses NaN, inf
SHAPE = re.compile(r"[\[(] *(\d+ *(, *\d+ *)*,? *)?[\])]")  # "[512, 784]", as timeline.tensor_bytes reads it
CUT = "cut_by_slice"  # in the args of an end a slice added: the span went on past the slice (not a real end)
EVENT_START = re.compile(r"\}\s*,\s*\{")  # where the next event begins after a damaged one


class TimelineError(UserError):
    """The file cannot be analysed at all (empty, not a timeline, unreadable)."""


def iter_events(path: str, issues: list):
    """Yield the trace's events (dicts) in file order, reading as far as the file goes.

    Each imperfection found is appended to `issues` as a short phrase; TimelineError if nothing is a timeline.
    """
    try:
        fh = open(path, "r", encoding="utf-8", errors="replace")
    except OSError as e:
        raise TimelineError(f"cannot read {path}: {e.strerror}") from None
    with fh:
        head = fh.read(CHUNK).lstrip()
        if not head:
            raise TimelineError(f"{path} is empty (Horovod writes nothing for a run without collectives)")
        if not head.startswith("["):
            raise TimelineError(f"{path} is not a Horovod timeline (it does not start with a JSON array)")
        pending, seen, bad, eof = head[1:], 0, 0, False
        while not eof:
            more = fh.read(CHUNK)
            eof = not more
            pending += more
            if eof:
                body, pending = _tail(pending, issues), ""
            else:
                cut = pending.rfind("},")  # the last complete event ends here (or inside a nested args object:
                if cut < 0:                # then the comma-split below fails over to event-by-event decoding)
                    if len(pending) > MAX_PENDING:
                        raise TimelineError(f"{path} is not a Horovod timeline (no event boundary in 64 MiB)")
                    continue
                body, pending = pending[:cut + 1], pending[cut + 2:]
            for event in _decode(body, issues, final=eof):
                if usable(event):
                    seen += 1
                    yield event
                else:
                    bad += 1
            if bad and not seen:  # a whole chunk without one trace event: not a timeline, do not read on
                raise TimelineError(f"{path} is not a Horovod timeline (no element is a trace event with ph, "
                                    "and ts, pid, name of the right types)")
        if not seen:
            raise TimelineError(f"{path} holds no trace events")
        if bad:
            issues.append(f"{bad} malformed event(s) skipped")


def usable(ev) -> bool:
    """Whether an element holds what the analysis and repair read, with the right types; the rest is skipped.
    On the hot path: a GB file is millions of events."""
    try:
        ph = ev["ph"]
        if ph == "B" or ph == "E":
            return type(ev["ts"]) in NUMBER and type(ev["pid"]) in PID and (ph == "E" or type(ev["name"]) is str) \
                and ("args" not in ev or _usable_args(ev))
        return type(ph) is str and type(ev.get("ts", 0)) in NUMBER and ("args" not in ev or _usable_args(ev))
    except (KeyError, TypeError):  # a missing field, or an element that is not an object
        return False


def _usable_args(ev) -> bool:
    args = ev["args"]
    return type(args) is dict and type(args.get("start_time_since_epoch_in_micros", 0)) in NUMBER \
        and (ev["ph"] != "E" or "shape" not in args or SHAPE.fullmatch(str(args["shape"])) is not None)


def _tail(text: str, issues: list) -> str:
    text = text.rstrip()
    if text.endswith("]"):
        text = text[:-1].rstrip()
    else:
        issues.append("the closing ']' is missing")
    if text.endswith(","):
        text = text[:-1]
    return text


def _reject_constant(name):
    # NaN and Infinity are not JSON: Perfetto and Chrome refuse them, and they make no time
    raise ValueError(f"{name} is not a JSON number")


def _finite(text):
    value = float(text)  # 1e400 reads as inf (Horovod writes integers: this runs only for odd files)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


def _decode(body: str, issues: list, final: bool):
    """The events of a stretch of complete events; a damaged event becomes None (counted as malformed)."""
    body = body.strip().strip(",")
    if not body:
        return []
    try:
        return DECODER.decode(f"[{body}]")
    except (ValueError, RecursionError):
        pass
    # slow path, only for a damaged stretch: decode one event at a time, skip to the next event after a bad one
    pos, events = 0, []
    while pos < len(body):
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(body):
            break
        try:
            event, pos = DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError):
            nxt = EVENT_START.search(body, pos)
            if nxt is None and final:
                issues.append("the file ends mid-event (a killed run?)")
                return events
            events.append(None)
            if nxt is None:
                return events
            pos = nxt.end() - 1
            continue
        events.append(event)
    return events


class TraceWriter:
    """Events written as one valid JSON array (what Perfetto and chrome://tracing load); see write_trace()."""

    def __init__(self, out):
        self.out, self.events = out, 0

    def write(self, ev: dict):
        self.out.write(("[\n" if self.events == 0 else ",\n") + json.dumps(ev, separators=(",", ":")))
        self.events += 1


@contextlib.contextmanager
def write_trace(path: str):
    """A TraceWriter whose file replaces `path` (atomically) once the block ends without error."""
    with atomic_file(path, "w") as out:
        writer = TraceWriter(out)
        yield writer
        out.write("\n]\n" if writer.events else "[]\n")


def repaired(src: str, issues: list, counts: dict):
    """The file's events as a valid trace needs them: orphan ends dropped, spans still open closed at the last
    moment. `counts` gets "orphans" and "closed" (repair and merge write what this yields)."""
    stacks, last_ts = {}, 0
    counts.update(orphans=0, closed=0)
    for ev in iter_events(src, issues):
        if ev["ph"] in ("B", "E"):
            stack = stacks.setdefault(ev.get("pid"), [])
            if ev["ph"] == "B":
                stack.append(ev.get("tid", 0))
            elif stack:
                stack.pop()
            else:
                counts["orphans"] += 1
                continue
        last_ts = max(last_ts, ev.get("ts", 0))
        yield ev
    for pid, stack in stacks.items():
        for tid in reversed(stack):
            counts["closed"] += 1
            yield {"ph": "E", "pid": pid, "tid": tid, "ts": last_ts}


def repair(src: str, dst: str) -> dict:
    """Write a valid JSON trace: orphan ends dropped, open spans closed at the last moment, the array closed."""
    issues, counts = [], {}
    with write_trace(dst) as trace:
        for ev in repaired(src, issues, counts):
            trace.write(ev)
    counts.update(events=trace.events - counts["closed"], warnings=issues)  # the file's own events
    return counts
