"""Benchmarks: commands that print numbers.

    python -m hvd_mlp.bench timeline [--size-mb 1000] [--file PATH]
        writes a Horovod-format timeline of that size (8 fused gradient tensors per step, as hvd_mlp's MLP makes)
        and times `hvd_mlp.timeline summarize` on it in a child process: seconds, MB/s and peak RSS.
"""
import argparse
import os
import resource
import subprocess
import sys
import time

# hvd_mlp's default MLP: 4 Linear layers, weight and bias each
TENSORS = [("0.weight", "[512, 784]"), ("0.bias", "[512]"), ("3.weight", "[256, 512]"), ("3.bias", "[256]"),
           ("6.weight", "[128, 256]"), ("6.bias", "[128]"), ("9.weight", "[10, 128]"), ("9.bias", "[10]")]


def _event(ph, pid, ts, name=None, args=None):
    """One event exactly as Horovod's TimelineWriter prints it."""
    text = f'{{"ph": "{ph}"'
    if name is not None:
        text += f', "name": "{name}"'
    text += f', "ts": {ts}, "pid": {pid}'
    if ph == "X":
        text += ', "dur": 0'
    if args:
        text += f', "args": {{{args}}}'
    return text + "}"


def _metadata(pid, key, value):
    return f'{{"name": "{key}", "ph": "M", "pid": {pid}, "args": {{{value}}}}},\n'


def _step(ts0: int, ranks: int = 2) -> str:
    """One training step's allreduce: negotiation, then the fused ALLREDUCE with its activities (same times)."""
    events, n = [], len(TENSORS)
    for i, (_, shape) in enumerate(TENSORS):
        pid, t = i + 1, ts0 + 10 * i
        events.append(_event("B", pid, t, "NEGOTIATE_ALLREDUCE"))
        events += [_event("X", pid, t + 1 + r, str(r)) for r in range(ranks)]
        events.append(_event("E", pid, ts0 + 10 * n))
    t = ts0 + 10 * n + 5
    for phase, start, end in (("QUEUE", 0, 20), ("MEMCPY_IN_FUSION_BUFFER", 20, 120),
                              ("MPI_ALLREDUCE", 120, 1300), ("MEMCPY_OUT_FUSION_BUFFER", 1300, 1400)):
        for i in range(n):
            if phase == "QUEUE":
                events.append(_event("B", i + 1, t, "ALLREDUCE"))
            events.append(_event("B", i + 1, t + start, phase))
            events.append(_event("E", i + 1, t + end))
    for i, (_, shape) in enumerate(TENSORS):
        events.append(_event("E", i + 1, t + 1405, args=f'"dtype": "HOROVOD_FLOAT32", "shape": "{shape}"'))
    return ",".join(events)


def write_timeline(path: str, size_mb: float, start_unix_us: int = 1_700_000_000_000_000) -> int:
    """A Horovod-format timeline of about size_mb; returns the number of steps written."""
    steps, target = 0, size_mb * 1e6
    with open(path, "w") as fh:
        fh.write("[\n" + _metadata(0, "process_name", f'"start_time_since_epoch_in_micros":{start_unix_us}')
                 + _metadata(0, "process_sort_index", '"sort_index": 0'))
        for i, (name, _) in enumerate(TENSORS):
            fh.write(_metadata(i + 1, "process_name", f'"name": "allreduce.{name}"')
                     + _metadata(i + 1, "process_sort_index", f'"sort_index": {i + 1}'))
        first = True
        while fh.tell() < target:
            block = ",".join(_step(10 + 2000 * (steps + k)) for k in range(200))
            fh.write(("" if first else ",") + block)
            first, steps = False, steps + 200
        fh.write("]")
    return steps


def bench_timeline(args):
    if not (os.path.exists(args.file) and abs(os.path.getsize(args.file) / 1e6 - args.size_mb) < 0.05 * args.size_mb):
        t = time.perf_counter()
        steps = write_timeline(args.file, args.size_mb)
        print(f"wrote {args.file}: {os.path.getsize(args.file) / 1e6:,.0f} MB, {steps:,} steps "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.timeline", "summarize", args.file, "--json"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"hvd_mlp.bench: error: summarize failed: {proc.stderr.strip()}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size_mb = os.path.getsize(args.file) / 1e6
    print(f"summarize {size_mb:,.0f} MB: {elapsed:.1f} s, {size_mb / elapsed:,.0f} MB/s, peak RSS {peak_mb:,.0f} MB")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hvd_mlp.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timeline", help="time and peak memory of summarising a large timeline")
    t.add_argument("--size-mb", type=float, default=1000, help="timeline size (default: 1000)")
    t.add_argument("--file", default="/tmp/hvd_mlp-bench-timeline.json", help="where to write it (kept for reruns)")
    args = parser.parse_args(argv)
    bench_timeline(args)


if __name__ == "__main__":
    main()
