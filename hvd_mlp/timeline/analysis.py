"""Communication figures of a Horovod timeline: in total, per epoch clip, per tensor, per time bucket.

The file is read in chunks (memory bounded whatever its size). Each tensor is a trace "process"; its B/E spans
nest NEGOTIATE_* -> op (ALLREDUCE, ...) -> activities (QUEUE, MEMCPY_*, MPI_/GLOO_/NCCL_ALLREDUCE). Fused tensors
show the same activity at the same moment, so every class is measured as the union of its spans across tensors.
"""
import collections
import functools
import math
import time

from hvd_mlp.timeline.intervals import IntervalUnion
from hvd_mlp.timeline.tracefile import CUT, TimelineError, iter_events

# comm: negotiation or op in flight, i.e. from a tensor being ready to its result being there; op: the collective
# op itself (ALLREDUCE, ...); collective: the transfer (MPI_/GLOO_/NCCL_ALLREDUCE); memcpy: fusion-buffer copies
CLASSES = ("comm", "op", "negotiate", "collective", "memcpy", "queue")
SCALABLE_KEYS = {f"{c}_us" for c in CLASSES} | {"allreduce_bytes", "allreduce_ops"}
OPS = {"ALLREDUCE", "ALLGATHER", "BROADCAST", "ALLTOALL", "REDUCESCATTER", "BARRIER", "JOIN", "ADASUM"}
DTYPE_BYTES = {"uint8": 1, "int8": 1, "bool": 1, "uint16": 2, "int16": 2, "float16": 2, "bfloat16": 2,
               "int32": 4, "float32": 4, "int64": 8, "float64": 8}
FLUSH_EVERY = 50_000  # spans between folds of the interval unions
SERIES = ("comm", "collective")  # the classes a time series follows


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


# --------------------------------------------------------------------------------------------------- analysis
class Analysis:
    """Streams events into per-class interval unions, per-epoch clips, byte counts and a per-tensor table."""

    def __init__(self, epochs=None, bucket_us: float = 0):
        self.bucket_us = bucket_us  # > 0: also a time series of comm in flight and bytes, per bucket of this length
        self.bucket_bytes = collections.defaultdict(float)
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
        self.unions = {k: IntervalUnion(clips, self.bucket_us if k in SERIES else 0) for k in CLASSES}

    def _span(self, pid, name, depth, start, end, args):
        target = self.targets.get((name, depth))
        if target is None:
            kind = classify(name, depth)
            counted = (kind, "comm") if kind in ("op", "negotiate") else (kind,) if kind != "other" else ()
            target = self.targets[(name, depth)] = (kind, [self.unions[k].pending for k in counted])
        kind, pendings = target
        if end > start:  # IntervalUnion.add, inline: millions of spans
            for pending in pendings:
                pending.append((start, end))
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
        if name in ("ALLREDUCE", "ADASUM") and not (args and args.get(CUT)):  # a sliced-off op did not end here
            nbytes = tensor_bytes(args)
            tensor["bytes"] += nbytes
            for i in self._epochs_holding(end):
                self.bytes[i] += nbytes
                self.ops[i] += 1
            if self.bucket_us:
                self.bucket_bytes[int(end // self.bucket_us)] += nbytes

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
        report = {"total": with_shares(total, None), "epochs": epochs, "tensors": tensors[:top],
                  "tensor_count": len(tensors)}
        if self.bucket_us:
            report["series"] = self._series()
        return report

    def _series(self) -> list:
        """Per bucket from the first event to the last: comm in flight (share of the bucket), transfer time, bytes
        of the ops that ended in it and their bandwidth. Empty buckets are kept: a stall shows as a gap."""
        comm, transfer = self.unions["comm"].per_bucket, self.unions["collective"].per_bucket
        rows = []
        for b in range(int(self.first_ts // self.bucket_us), int(self.last_ts // self.bucket_us) + 1):
            nbytes, busy = self.bucket_bytes.get(b, 0.0), transfer.get(b, 0.0)
            rows.append({"t_s": b * self.bucket_us / 1e6, "comm_share": comm.get(b, 0.0) / self.bucket_us,
                         "collective_us": busy, "allreduce_bytes": nbytes,
                         "bandwidth_MBps": nbytes / busy if busy else 0.0})
        return rows


def with_shares(row: dict, comm_wait_s) -> dict:
    """Add comm share, effective bandwidth, and exposed vs overlapped communication."""
    wall_us = row["epoch_time_s"] * 1e6 if "epoch_time_s" in row else row.get("span_us", 0)
    row["comm_share"] = row["comm_us"] / wall_us if wall_us else 0.0
    row["bandwidth_MBps"] = row["allreduce_bytes"] / row["collective_us"] if row["collective_us"] else 0.0
    if comm_wait_s is not None:  # what the training loop waited for is exposed; the rest hid behind backward
        row["exposed_s"] = min(comm_wait_s, row["comm_us"] / 1e6)
        row["overlapped_s"] = row["comm_us"] / 1e6 - row["exposed_s"]
    return row


def transfers(path: str) -> list:
    """(us, tensor bytes) of each transfer in a timeline: the union of overlapping collective spans (fused tensors
    share one, a few us apart) and the bytes of the ALLREDUCE ops they carried. Per transfer, not per epoch: a
    stalled one (the peer descheduled) shows as itself instead of diluting the rest."""
    stacks, carried, spans = collections.defaultdict(list), {}, []
    for ev in iter_events(path, []):
        stack = stacks[ev.get("pid")]
        if ev["ph"] == "B":
            stack.append((ev["name"], ev["ts"]))
        elif ev["ph"] == "E" and stack:
            name, start = stack.pop()
            if classify(name, len(stack)) == "collective":
                carried[ev["pid"]] = (start, ev["ts"])
            elif name == "ALLREDUCE" and ev["pid"] in carried:
                spans.append((*carried.pop(ev["pid"]), tensor_bytes(ev.get("args"))))
    merged = []
    for start, end, nbytes in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = [merged[-1][0], max(end, merged[-1][1]), merged[-1][2] + nbytes]
        else:
            merged.append([start, end, nbytes])
    return [(end - start, nbytes) for start, end, nbytes in merged]


def tensor_bytes(args) -> int:
    if not args or "shape" not in args:
        return 0
    return _bytes_of(str(args["shape"]), str(args.get("dtype", "float32")))


@functools.lru_cache(maxsize=4096)  # a run has a few tensor shapes, seen millions of times
def _bytes_of(shape: str, dtype: str) -> int:
    dims = [int(d) for d in shape.strip("[]()").replace(" ", "").split(",") if d]
    dtype = dtype.lower().removeprefix("horovod_")  # Horovod writes HOROVOD_FLOAT32
    return math.prod(dims) * DTYPE_BYTES.get(dtype, 4)


def summarize(path: str, epochs=None, top: int = 10, bucket_s: float = 0) -> dict:
    """Figures for the whole file and for each epoch window (and per time bucket with bucket_s); `warnings` lists
    what was wrong with the file."""
    issues, analysis = [], Analysis(epochs, bucket_s * 1e6)
    for event in iter_events(path, issues):
        analysis.feed(event)
    report = analysis.result(top)
    if analysis.orphans:
        issues.append(f"{analysis.orphans} span end(s) without a start were dropped (a DYNAMIC file?)")
    if analysis.open_at_end:
        issues.append(f"{analysis.open_at_end} span(s) still open at the end were closed there")
    report["warnings"] = issues
    return report


def format_report(report: dict) -> str:
    t, lines = report["total"], []
    lines.append(f"timeline: {t['span_us'] / 1e6:.3f} s traced | allreduce {t['allreduce_ops']:,} tensor ops, "
                 f"{t['allreduce_bytes'] / 1e6:,.1f} MB, {t['bandwidth_MBps']:,.0f} MB/s effective")
    lines.append("union of spans (ms): " + "  ".join(f"{k} {t[f'{k}_us'] / 1e3:,.1f}" for k in CLASSES))
    lines.append(f"top {len(report['tensors'])} of {report['tensor_count']} tensors by op time:")
    for x in report["tensors"]:
        lines.append(f"  {x['time_us'] / 1e3:>10.1f} ms {x['ops']:>7,} ops {x['bytes'] / 1e6:>9.1f} MB  {x['name']}")
    return "\n".join(lines)


def format_series(series: list) -> str:
    lines = [f"{'t s':>9} {'comm %':>7} {'transfer ms':>12} {'MB':>8} {'MB/s':>8}"]
    lines += [f"{r['t_s']:>9.2f} {100 * r['comm_share']:>6.1f}% {r['collective_us'] / 1e3:>12.2f} "
              f"{r['allreduce_bytes'] / 1e6:>8.2f} {r['bandwidth_MBps']:>8.0f}" for r in series]
    return "\n".join(lines)
