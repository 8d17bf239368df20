"""Per-epoch communication figures from Horovod's timeline (HOROVOD_TIMELINE, Chrome-trace JSON).

    python -m hvd_mlp.timeline summarize TIMELINE [--results results.json] [--json] [--top K]
    python -m hvd_mlp.timeline repair IN OUT
    python -m hvd_mlp.timeline merge RUN_DIR OUT          (tracemerge.py: every rank's steps beside the tensors)

The file is read in chunks (memory bounded whatever its size). Each tensor is a trace "process"; its B/E spans
nest NEGOTIATE_* -> op (ALLREDUCE, ...) -> activities (QUEUE, MEMCPY_*, MPI_/GLOO_/NCCL_ALLREDUCE). Fused tensors
show the same activity at the same moment, so every class is measured as the union of its spans across tensors.
"""
import collections
import json
import os
import math
import sys
import time

from hvd_mlp.errors import ArgumentParser, UserError, command_line
from hvd_mlp.intervals import IntervalUnion
from hvd_mlp.storage import atomic_file

# comm: negotiation or op in flight, i.e. from a tensor being ready to its result being there; op: the collective
# op itself (ALLREDUCE, ...); collective: the transfer (MPI_/GLOO_/NCCL_ALLREDUCE); memcpy: fusion-buffer copies
CLASSES = ("comm", "op", "negotiate", "collective", "memcpy", "queue")
SCALABLE_KEYS = {f"{c}_us" for c in CLASSES} | {"allreduce_bytes", "allreduce_ops"}
OPS = {"ALLREDUCE", "ALLGATHER", "BROADCAST", "ALLTOALL", "REDUCESCATTER", "BARRIER", "JOIN", "ADASUM"}
DTYPE_BYTES = {"uint8": 1, "int8": 1, "bool": 1, "uint16": 2, "int16": 2, "float16": 2, "bfloat16": 2,
               "int32": 4, "float32": 4, "int64": 8, "float64": 8}
CHUNK = 1 << 22  # 4 MiB of text per read
FLUSH_EVERY = 50_000  # spans between folds of the interval unions
MAX_PENDING = 1 << 26  # an "event" longer than 64 MiB means this is not a timeline


class TimelineError(UserError):
    """The file cannot be analysed at all (empty, not a timeline, unreadable)."""


def now_us() -> int:
    return time.time_ns() // 1000


def classify(name: str, depth: int) -> str:
    """The class of a span from its name and nesting depth under the tensor (0 = outermost)."""
    if name.startswith("NEGOTIATE"):
        return "negotiate"
    if name in OPS or (depth == 0 and name.isupper()):
        return "op"
    if name.startswith("MEMCPY"):
        return "memcpy"
    if name == "QUEUE":
        return "queue"
    if name.split("_", 1)[0] in ("MPI", "GLOO", "NCCL", "CCL", "DDL", "ADASUM") or name.endswith(("ALLREDUCE", "BCAST")):
        return "collective"
    return "other"


# --------------------------------------------------------------------------------------------------- reading
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
        pending, seen, eof = head[1:], 0, False
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
                if not isinstance(event, dict) or "ph" not in event:
                    raise TimelineError(f"{path} is not a Horovod timeline (an element is not a trace event)")
                seen += 1
                yield event
        if not seen:
            raise TimelineError(f"{path} holds no trace events")


def _tail(text: str, issues: list) -> str:
    text = text.rstrip()
    if text.endswith("]"):
        text = text[:-1].rstrip()
    else:
        issues.append("the closing ']' is missing")
    if text.endswith(","):
        text = text[:-1]
    return text


def _decode(body: str, issues: list, final: bool):
    body = body.strip().strip(",")
    if not body:
        return []
    try:
        return json.loads(f"[{body}]")
    except json.JSONDecodeError:
        pass
    # slow path, only for a damaged stretch: decode one event at a time and stop at what cannot be read
    decoder, pos, events = json.JSONDecoder(), 0, []
    while pos < len(body):
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(body):
            break
        try:
            event, pos = decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            if final:
                issues.append("the file ends mid-event (a killed run?)")
                return events
            nxt = body.find("},{", pos)
            issues.append("a malformed event was skipped")
            if nxt < 0:
                return events
            pos = nxt + 2
            continue
        events.append(event)
    return events


# --------------------------------------------------------------------------------------------------- analysis
class Analysis:
    """Streams events into per-class interval unions, per-epoch clips, byte counts and a per-tensor table."""

    def __init__(self, epochs=None):
        self.epochs = sorted(epochs or [], key=lambda e: e["start_unix_us"])
        self.origin_us = None  # start_time_since_epoch_in_micros: the wall clock of ts == 0
        self.names, self.stacks, self.tensors = {}, collections.defaultdict(list), {}
        self.unions = None  # made at the first timed event, once the origin is known
        self.targets = {}  # (span name, depth) -> (class, the unions it counts in): classify once per name
        self.bytes = [0] * (len(self.epochs) + 1)  # per epoch, then the total
        self.ops = [0] * (len(self.epochs) + 1)
        self.first_ts, self.last_ts = None, 0
        self.spans = self.orphans = self.open_at_end = self.cycles = 0

    def feed(self, ev: dict):
        """One event. The hot path (B, E) touches as little as it can: a GB file is millions of events."""
        ph = ev["ph"]
        if ph == "B" or ph == "E":
            ts = ev["ts"]
            if ts > self.last_ts:
                self.last_ts = ts
            if self.first_ts is None:
                self._begin(ts)
            stack = self.stacks[ev["pid"]]
            if ph == "B":
                stack.append((ev["name"], ts))
            elif stack:
                name, start = stack.pop()
                self._span(ev["pid"], name, len(stack), start, ts, ev.get("args"))
            else:
                self.orphans += 1  # its B was before this file began (a DYNAMIC timeline)
        elif ph == "M":
            args = ev.get("args", {})
            if ev.get("name") == "process_name" and "name" in args:
                self.names[ev.get("pid")] = args["name"]
            if "start_time_since_epoch_in_micros" in args and self.origin_us is None:
                self.origin_us = int(args["start_time_since_epoch_in_micros"])
        elif ph == "i" and ev.get("name") == "CYCLE_START":
            self.cycles += 1

    def _begin(self, ts):
        self.first_ts = ts
        if self.origin_us is None:
            self.origin_us = 0  # a file without the start record: epoch windows must then be in its own clock
        clips = [(e["start_unix_us"] - self.origin_us, e["end_unix_us"] - self.origin_us) for e in self.epochs]
        self.unions = {k: IntervalUnion(clips) for k in CLASSES}

    def _span(self, pid, name, depth, start, end, args):
        target = self.targets.get((name, depth))
        if target is None:
            kind = classify(name, depth)
            counted = (kind, "comm") if kind in ("op", "negotiate") else (kind,) if kind != "other" else ()
            target = self.targets[(name, depth)] = (kind, [self.unions[k] for k in counted])
        kind, unions = target
        for union in unions:
            union.add(start, end)
        self.spans += 1
        if self.spans % FLUSH_EVERY == 0:  # keep memory bounded: fold what no later span can overlap
            oldest = min((s[0][1] for s in self.stacks.values() if s), default=end)
            for union in self.unions.values():
                union.flush(min(oldest, end))
        if kind != "op":
            return
        tensor = self.tensors.get(pid)
        if tensor is None:
            tensor = self.tensors[pid] = {"ops": 0, "time_us": 0.0, "bytes": 0}
        tensor["ops"] += 1
        tensor["time_us"] += end - start
        if name in ("ALLREDUCE", "ADASUM"):
            nbytes = tensor_bytes(args)
            tensor["bytes"] += nbytes
            for i in self._epochs_holding(end):
                self.bytes[i] += nbytes
                self.ops[i] += 1

    def _epochs_holding(self, ts):
        """Indices of the epoch windows holding ts, plus the total's."""
        wall = ts + (self.origin_us or 0)
        held = [i for i, e in enumerate(self.epochs) if e["start_unix_us"] <= wall <= e["end_unix_us"]] \
            if self.epochs else []
        return held + [len(self.epochs)]

    def result(self, top: int = 10) -> dict:
        self.open_at_end = sum(len(s) for s in self.stacks.values())
        for pid, stack in self.stacks.items():  # spans still open when the file ends close at its last moment
            while stack:
                name, start = stack.pop()
                self._span(pid, name, len(stack), start, self.last_ts, None)
        if self.unions is None:
            raise TimelineError("the timeline holds no spans (no collective was recorded)")
        per_class = {k: self.unions[k].close() for k in CLASSES}
        total = {f"{k}_us": per_class[k][0] for k in CLASSES}
        total.update(allreduce_bytes=self.bytes[-1], allreduce_ops=self.ops[-1],
                     span_us=self.last_ts - self.first_ts, cycles=self.cycles)
        epochs = []
        for i, e in enumerate(self.epochs):
            row = {"epoch": e["epoch"], **{f"{k}_us": per_class[k][1][i] for k in CLASSES},
                   "allreduce_bytes": self.bytes[i], "allreduce_ops": self.ops[i],
                   "epoch_time_s": e.get("epoch_time_s", (e["end_unix_us"] - e["start_unix_us"]) / 1e6)}
            epochs.append(with_shares(row, e.get("comm_wait_s")))
        tensors = sorted(({"name": self.names.get(pid, str(pid)), **t} for pid, t in self.tensors.items()),
                         key=lambda t: -t["time_us"])
        return {"total": with_shares(total, None), "epochs": epochs, "tensors": tensors[:top],
                "tensor_count": len(tensors)}


def with_shares(row: dict, comm_wait_s) -> dict:
    """Add comm share, effective bandwidth, and exposed vs overlapped communication."""
    wall_us = row["epoch_time_s"] * 1e6 if "epoch_time_s" in row else row.get("span_us", 0)
    row["comm_share"] = row["comm_us"] / wall_us if wall_us else 0.0
    row["bandwidth_MBps"] = row["allreduce_bytes"] / row["collective_us"] if row["collective_us"] else 0.0
    if comm_wait_s is not None:  # what the training loop waited for is exposed; the rest hid behind backward
        row["exposed_s"] = min(comm_wait_s, row["comm_us"] / 1e6)
        row["overlapped_s"] = row["comm_us"] / 1e6 - row["exposed_s"]
    return row


def tensor_bytes(args) -> int:
    if not args or "shape" not in args:
        return 0
    dims = [int(d) for d in str(args["shape"]).strip("[]()").replace(" ", "").split(",") if d]
    dtype = str(args.get("dtype", "float32")).lower().removeprefix("horovod_")  # Horovod writes HOROVOD_FLOAT32
    return math.prod(dims) * DTYPE_BYTES.get(dtype, 4)


def summarize(path: str, epochs=None, top: int = 10) -> dict:
    """Figures for the whole file and for each epoch window; `warnings` lists what was wrong with the file."""
    issues, analysis = [], Analysis(epochs)
    for event in iter_events(path, issues):
        analysis.feed(event)
    report = analysis.result(top)
    if analysis.orphans:
        issues.append(f"{analysis.orphans} span end(s) without a start were dropped (a DYNAMIC file?)")
    if analysis.open_at_end:
        issues.append(f"{analysis.open_at_end} span(s) still open at the end were closed there")
    report["warnings"] = issues
    return report


# --------------------------------------------------------------------------------------------------- repair
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


def write_trace(out, events) -> int:
    """Write events as one JSON array to an open text file; returns how many."""
    out.write("[\n")
    count = 0
    for ev in events:
        out.write((",\n" if count else "") + json.dumps(ev, separators=(",", ":")))
        count += 1
    out.write("\n]\n")
    return count


def repair(src: str, dst: str) -> dict:
    """Write a valid JSON trace: orphan ends dropped, open spans closed at the last moment, the array closed."""
    issues, counts = [], {}
    with atomic_file(dst, "w") as out:
        counts["events"] = write_trace(out, repaired(src, issues, counts)) - counts["closed"]  # the file's own
    counts["warnings"] = issues
    return counts


# --------------------------------------------------------------------------------------------------- command line
def format_report(report: dict) -> str:
    t, lines = report["total"], []
    lines.append(f"timeline: {t['span_us'] / 1e6:.3f} s traced | allreduce {t['allreduce_ops']:,} tensor ops, "
                 f"{t['allreduce_bytes'] / 1e6:,.1f} MB, {t['bandwidth_MBps']:,.0f} MB/s effective")
    lines.append("union of spans (ms): " + "  ".join(f"{k} {t[f'{k}_us'] / 1e3:,.1f}" for k in CLASSES))
    lines.append(f"top {len(report['tensors'])} of {report['tensor_count']} tensors by op time:")
    for x in report["tensors"]:
        lines.append(f"  {x['time_us'] / 1e3:>10.1f} ms {x['ops']:>7,} ops {x['bytes'] / 1e6:>9.1f} MB  {x['name']}")
    return "\n".join(lines)


@command_line("hvd_mlp.timeline")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.timeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="communication figures, in total, or per epoch of a run")
    s.add_argument("timeline", help="a Horovod timeline file, or an hvd_mlp run directory (per-epoch figures from "
                                    "its timeline files, whatever the --timeline-mode, as the training printed them)")
    s.add_argument("--results", help="the run (directory or results.json) the timeline file belongs to: per-epoch "
                                     "figures")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.add_argument("--top", type=int, default=10, help="tensors listed (default: 10)")
    r = sub.add_parser("repair", help="write a valid JSON trace that Perfetto and Chrome load")
    r.add_argument("input")
    r.add_argument("output")
    m = sub.add_parser("merge", help="one trace of a run: every rank's step phases on rank 0's clock beside "
                                     "Horovod's tensors (Perfetto, Chrome)")
    m.add_argument("run_dir", metavar="RUN_DIR", help="a run trained with --timeline-mode window or full")
    m.add_argument("output", metavar="OUT", help="the merged trace to write (JSON)")
    args = parser.parse_args(argv)
    if args.command == "merge":
        from hvd_mlp import tracemerge  # it builds on this module
        if not os.path.isdir(args.run_dir):
            raise UserError(f"{args.run_dir} is not a run directory")
        counts = tracemerge.merge(args.run_dir, args.output)
        warn(counts.pop("warnings"))
        print(f"wrote {args.output}: {counts['events']:,} events; {counts['ranks']} ranks, {counts['steps']:,} "
              f"traced steps on rank 0's clock (+-{counts['error_us']:.0f} us) beside {counts['files']} Horovod "
              f"timeline file(s); {counts['orphans']} orphan ends dropped, {counts['closed']} open spans closed")
        return
    if args.command == "repair":
        counts = repair(args.input, args.output)
        warn(counts.pop("warnings"))
        print(f"wrote {args.output}: {counts['events']:,} events, {counts['orphans']} orphan ends dropped, "
              f"{counts['closed']} open spans closed")
        return
    if args.results or os.path.isdir(args.timeline):
        from hvd_mlp import epochcomm, results, stragglers  # they build on this module
        run, file = (args.results, args.timeline) if args.results else (args.timeline, "")
        epochs, source = epochcomm.run_comm(run, file)
        run_dir = run if os.path.isdir(run) else os.path.dirname(run)
        ranked = stragglers.attach_run(run_dir, epochs, source if os.path.isfile(source) else "")  # full: its file
        print(json.dumps([results.to_dict(e) for e in epochs], indent=1) if args.json else
              (stragglers.format_ranks(epochs) + "\n" if ranked else "") + epochcomm.format_epochs(epochs, source),
              flush=True)
        return
    report = summarize(args.timeline, top=args.top)
    print(json.dumps(report, indent=1) if args.json else format_report(report), flush=True)
    warn(report.pop("warnings"))


def warn(issues: list):
    if issues:
        print(f"hvd_mlp.timeline: warning: {'; '.join(dict.fromkeys(issues))}; read as far as it goes",
              file=sys.stderr)


if __name__ == "__main__":
    main()
