"""Benchmarks: commands that print numbers.

    python -m hvd_mlp.bench scaling [--out docs/figures] [--steps 150]
        the scaling sweep: np = 1, 2, 4 with MPI and with Gloo, fixed steps per epoch, timeline window on; raw MPI
        allreduce (commbench) at each np; prints the table and writes the report's figures.

    python -m hvd_mlp.bench compare [--repeats 2]
        side by side on one 60,000-image MNIST-shaped set (IDX files): the seed's PyTorch DDP design (hvd_mlp.baseline)
        and hvd_mlp under horovodrun np=2 (batch 32/rank, Adam, lr 1e-3, one epoch), with and without the timeline;
        Horovod's allreduce per step against raw MPI_Allreduce of the same bytes; np=1 -> np=2 at batch 256/rank.

    python -m hvd_mlp.bench recording [--np 2] [--controller mpi] [--epochs 3] [--repeats 3]
        throughput of the same training with the timeline off, in window mode and in full mode, interleaved
        so that machine noise hits all three alike; prints samples/s and each mode's cost.
    python -m hvd_mlp.bench elastic [--tries 20] [--fault kill|grow-kill|commit-kill]
        an elastic job loses a worker and its host, the host comes back: tries / successes / time to grow back
        (hvd_mlp/elastic_bench.py).
    python -m hvd_mlp.bench timeline [--size-mb 1000] [--file PATH]
        writes a Horovod-format timeline of that size (8 fused gradient tensors per step, as hvd_mlp's MLP makes)
        and times `hvd_mlp.timeline summarize` on it in a child process: seconds, MB/s and peak RSS.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from hvd_mlp import elastic_bench, results
from hvd_mlp.errors import ArgumentParser, UserError, command_line

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
        raise UserError(f"summarize failed: {proc.stderr.strip()}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size_mb = os.path.getsize(args.file) / 1e6
    print(f"summarize {size_mb:,.0f} MB: {elapsed:.1f} s, {size_mb / elapsed:,.0f} MB/s, peak RSS {peak_mb:,.0f} MB")


BIN = os.path.dirname(sys.executable)


def horovodrun(np_: int, controller: str, module: str, args: list) -> list:
    """The command line running `python -m module args` on np local ranks with this venv's horovodrun."""
    return [os.path.join(BIN, "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}",
            sys.executable, "-m", module, *map(str, args)]


def run_training(np_: int, controller: str, train_args: list, out_dir: str) -> dict:
    """One hvd_mlp training under the real horovodrun; its results.json."""
    env = {k: v for k, v in os.environ.items() if k != "HOROVOD_TIMELINE"}
    proc = subprocess.run(horovodrun(np_, controller, "hvd_mlp.train", [*train_args, "--output-dir", out_dir]),
                          capture_output=True, text=True, env={**env, "PATH": f"{BIN}:{env['PATH']}"})
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UserError(f"training failed ({' | '.join(tail)})")
    return results.to_dict(results.read(out_dir))


def bench_recording(args):
    train_args = ["--dataset", "synthetic", "--synthetic-size", args.samples, "--epochs", args.epochs,
                  "--batch-size", args.batch_size, "--log-every", 0, "--checkpoint-every", 0]
    rates = {"off": [], "window": [], "full": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for mode in rates:
                res = run_training(args.np, args.controller, [*train_args, "--timeline-mode", mode],
                                   os.path.join(tmp, f"{mode}-{rep}"))
                rates[mode].append(res["summary"]["samples_per_s"])
                print(f"  run {rep + 1}/{args.repeats} {mode:>6}: {rates[mode][-1]:,.0f} samples/s", flush=True)
    base = statistics.median(rates["off"])
    print(f"timeline recording, np={args.np} {args.controller}, batch {args.batch_size}/rank, "
          f"median of {args.repeats} (epochs after the first):")
    for mode, values in rates.items():
        rate = statistics.median(values)
        print(f"  {mode:>6}: {rate:>8,.0f} samples/s  cost {100 * (1 - rate / base):+5.1f}%")


def raw_mpi_allreduce_us(np_: int, out_dir: str) -> float:
    """commbench's median time for the MLP's gradient bytes at np ranks (np >= 2), in microseconds."""
    from hvd_mlp.commbench import MODEL_FLOATS
    out = os.path.join(out_dir, f"commbench-np{np_}.json")
    proc = subprocess.run(horovodrun(np_, "mpi", "hvd_mlp.commbench",
                                     ["--sizes", MODEL_FLOATS * 4, "--repeats", 100, "--json", out]),
                          capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"commbench failed: {proc.stderr.strip()[-300:]}")
    with open(out) as fh:
        return json.load(fh)["rows"][0]["time_us"]


def bench_scaling(args):
    from hvd_mlp import report
    sweep_dir = os.path.join(args.runs, time.strftime("scaling-%Y%m%d-%H%M%S"))
    train_args = ["--dataset", "synthetic", "--synthetic-size", 60000, "--epochs", args.epochs, "--max-steps",
                  args.steps, "--batch-size", args.batch_size, "--log-every", 0, "--checkpoint-every", 0,
                  "--timeline-mode", "window", "--timeline-steps", min(40, args.steps - 10)]
    run_dirs, raw = [], {}
    for np_ in (1, 2, 4):
        for controller in ("mpi", "gloo"):
            run_dir = os.path.join(sweep_dir, f"np{np_}-{controller}")
            res = run_training(np_, controller, train_args, run_dir)
            run_dirs.append(run_dir)
            print(f"  np={np_} {controller:>4}: {res['summary']['samples_per_s']:,.0f} samples/s", flush=True)
        if np_ > 1:
            raw[np_] = raw_mpi_allreduce_us(np_, sweep_dir)
    runs = [report.load_run(d) for d in run_dirs]
    rows = report.scaling_rows(runs)
    print(f"scaling sweep, batch {args.batch_size}/rank, {args.steps} steps x {args.epochs} epochs, synthetic "
          f"60,000 images (runs in {sweep_dir})")
    header, *lines = report.format_rows(rows).splitlines()
    print(f"{header} {'allreduce/step':>15} {'raw MPI':>8} {'ratio':>6}")
    for row, line in zip(rows, lines):
        res = next(r for r in runs if r["name"] == row["name"])
        steady = [e for e in results.steady(res["epochs"]) if "op_us" in e.get("comm", {})]
        per_step = sum(e["comm"]["op_us"] for e in steady) / max(1, sum(e["steps"] for e in steady))
        mpi = raw.get(row["np"])  # one rank has no raw MPI floor: nothing to hold against
        floor = f"{mpi / 1e3:>5.2f} ms {per_step / mpi:>5.1f}x" if mpi else f"{'-':>8} {'-':>6}"
        print(f"{line} {per_step / 1e3:>12.2f} ms {floor}")
    written, _ = report.make_report(run_dirs, args.out)
    print(f"wrote {len(written)} figures to {args.out}")


def bench_compare(args):
    from hvd_mlp import baseline, generate
    rates = {"ddp": [], "hvd": [], "hvd+timeline": []}
    per_step_us = []
    with tempfile.TemporaryDirectory() as tmp:
        generate.write_mnist_shaped(tmp)
        common = ["--dataset", "mnist", "--data-dir", tmp, "--epochs", 1, "--batch-size", 32, "--lr", 1e-3,
                  "--log-every", 0, "--checkpoint-every", 0]
        for rep in range(args.repeats):
            ddp = baseline.run(argparse.Namespace(data_dir=tmp, np=2, batch_size=32, lr=1e-3, epochs=1))
            rates["ddp"].append(ddp["samples_per_s"])
            rates["hvd"].append(run_training(2, "mpi", common, os.path.join(tmp, f"off{rep}"))
                                ["summary"]["samples_per_s"])
            res = run_training(2, "mpi", [*common, "--timeline-mode", "window"], os.path.join(tmp, f"win{rep}"))
            rates["hvd+timeline"].append(res["summary"]["samples_per_s"])
            comm, steps = res["epochs"][0]["comm"], res["epochs"][0]["steps"]
            per_step_us.append((comm["op_us"] / steps, comm["collective_us"] / steps))
            print(f"  run {rep + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()),
                  flush=True)
        raw_us = raw_mpi_allreduce_us(2, tmp)
        speed = {}
        for np_, threads in ((1, 0), (1, 1), (2, 0)):
            speed[(np_, threads)] = run_training(np_, "mpi", [*common, "--batch-size", 256, "--threads", threads],
                                                 os.path.join(tmp, f"np{np_}t{threads}"))["summary"]["samples_per_s"]
    m = {k: statistics.median(v) for k, v in rates.items()}
    op = statistics.median(p[0] for p in per_step_us)
    transfer = statistics.median(p[1] for p in per_step_us)
    print(f"one epoch of 60,000 MNIST-shaped images, np=2, batch 32/rank, Adam lr 1e-3 (median of {args.repeats}):")
    print(f"  PyTorch DDP, gloo, DataLoader (the seed's design)  {m['ddp']:>8,.0f} samples/s")
    print(f"  hvd_mlp, Horovod over MPI                          {m['hvd']:>8,.0f} samples/s  "
          f"{m['hvd'] / m['ddp']:.2f}x the baseline")
    print(f"  hvd_mlp with the timeline (window)                 {m['hvd+timeline']:>8,.0f} samples/s  "
          f"recording costs {100 * (1 - m['hvd+timeline'] / m['hvd']):+.1f}%")
    print(f"  raw MPI_Allreduce of the same 2.27 MB (commbench)  {raw_us / 1e3:>8.2f} ms")
    print(f"  Horovod's transfer per step (timeline)             {transfer / 1e3:>8.2f} ms  {transfer / raw_us:.2f}x raw")
    print(f"  Horovod's whole op per step (+ fusion copies)      {op / 1e3:>8.2f} ms  {op / raw_us:.2f}x raw")
    print(f"batch 256/rank: np=1 {speed[(1, 0)]:,.0f} samples/s (2 threads), {speed[(1, 1)]:,.0f} (1 thread); "
          f"np=2 {speed[(2, 0)]:,.0f} -> speedup {speed[(2, 0)] / speed[(1, 0)]:.2f} "
          f"(vs one single-threaded rank {speed[(2, 0)] / speed[(1, 1)]:.2f})")


@command_line("hvd_mlp.bench")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timeline", help="time and peak memory of summarising a large timeline")
    t.add_argument("--size-mb", type=float, default=1000, help="timeline size (default: 1000)")
    t.add_argument("--file", default="/tmp/hvd_mlp-bench-timeline.json", help="where to write it (kept for reruns)")
    r = sub.add_parser("recording", help="throughput cost of recording the timeline, per mode")
    r.add_argument("--np", type=int, default=2, help="ranks (default: 2)")
    r.add_argument("--controller", choices=("mpi", "gloo"), default="mpi", help="(default: mpi)")
    r.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    r.add_argument("--samples", type=int, default=60000, help="synthetic training images (default: 60000)")
    r.add_argument("--batch-size", type=int, default=64, help="per rank (default: 64)")
    r.add_argument("--repeats", type=int, default=3, help="runs per mode (default: 3)")
    sc = sub.add_parser("scaling", help="np = 1, 2, 4 with MPI and Gloo: table and figures")
    sc.add_argument("--steps", type=int, default=150, help="steps per epoch (default: 150)")
    sc.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    sc.add_argument("--batch-size", type=int, default=64, help="per rank (default: 64)")
    sc.add_argument("--runs", default="runs", help="where the sweep's run directories go (default: runs)")
    sc.add_argument("--out", default="docs/figures", help="where the figures go (default: docs/figures)")
    c = sub.add_parser("compare", help="hvd_mlp against the seed's DDP design, side by side")
    c.add_argument("--repeats", type=int, default=2, help="runs of each (default: 2)")
    elastic_bench.add_parser(sub)
    args = parser.parse_args(argv)
    {"timeline": bench_timeline, "recording": bench_recording, "scaling": bench_scaling,
     "compare": bench_compare, "elastic": elastic_bench.bench_elastic}[args.command](args)


if __name__ == "__main__":
    main()
