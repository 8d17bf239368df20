"""Benchmarks: commands that print numbers.

    python -m hvd_mlp.bench scaling [--steps 150] [--runs runs] [--out DIR]
        the scaling sweep: np = 1, 2, 4 with MPI and with Gloo, fixed steps per epoch, timeline window on; raw MPI
        allreduce (commbench) at each np; prints the table and writes the report's figures into the sweep's
        directory (docs/figures is regenerated with --out docs/figures).

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
        and times `hvd_mlp.timeline summarize` and `slice` (its middle tenth) on it, each in a child process of
        its own: seconds, MB/s and peak RSS.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from hvd_mlp import efficiency, elastic_bench, generate, links, results
from hvd_mlp.commbench import MODEL_FLOATS
from hvd_mlp.errors import ArgumentParser, UserError, command_line, output_dir, output_file, positive

def bench_timeline(args):
    if not (os.path.exists(args.file) and abs(os.path.getsize(args.file) / 1e6 - args.size_mb) < 0.05 * args.size_mb):
        t = time.perf_counter()
        steps = generate.write_timeline(args.file, args.size_mb)
        print(f"wrote {args.file}: {os.path.getsize(args.file) / 1e6:,.0f} MB, {steps:,} steps "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
    size_mb = os.path.getsize(args.file) / 1e6
    span_s = steps_in(args.file) * generate.STEP_EVERY_US / 1e6
    sliced = args.file + ".slice.json"
    for what, command in (("summarize", ["summarize", args.file, "--json"]),
                          ("slice the middle tenth of", ["slice", args.file, sliced, "--from", 0.45 * span_s,
                                                         "--to", 0.55 * span_s])):
        elapsed, peak_mb = timed_child(command)
        print(f"{what} {size_mb:,.0f} MB: {elapsed:.1f} s, {size_mb / elapsed:,.0f} MB/s, peak RSS {peak_mb:,.0f} MB",
              flush=True)
    os.unlink(sliced)


def steps_in(path: str) -> int:
    """The steps of a generated timeline, from its size (write_timeline writes them at a steady rate)."""
    probe = path + ".probe.json"
    steps = generate.write_timeline(probe, 1)
    size = os.path.getsize(probe)
    os.unlink(probe)
    return int(steps * os.path.getsize(path) / size)


# the child's own peak (VmHWM, kB): ru_maxrss would carry this process's peak across exec
CHILD = "import runpy, sys; sys.argv = ['hvd_mlp.timeline', *sys.argv[1:]]\n" \
        "try:\n    runpy.run_module('hvd_mlp.timeline', run_name='__main__')\n" \
        "finally:\n    print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')), " \
        "file=sys.stderr)"


def timed_child(command: list) -> tuple:
    """(seconds, peak RSS in MB) of `python -m hvd_mlp.timeline COMMAND` in a child process of its own."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, command)], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode:
        raise UserError(f"timeline {command[0]} failed: {cause(proc)}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1]) / 1024


BIN = os.path.dirname(sys.executable)
OWN_ERROR = re.compile(r"hvd_mlp\.\w+: error: .*")  # after horovodrun's "[1,0]<stderr>:" tag, if any


def horovodrun(np_: int, controller: str, module: str, args: list) -> list:
    """The command line running `python -m module args` on np local ranks with this venv's horovodrun."""
    return [os.path.join(BIN, "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}",
            sys.executable, "-m", module, *map(str, args)]


def run_training(np_: int, controller: str, train_args: list, out_dir: str, env: dict = None) -> dict:
    """One hvd_mlp training under the real horovodrun, with `env` added to the environment; its results.json."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "HOROVOD_TIMELINE"}
    proc = subprocess.run(horovodrun(np_, controller, "hvd_mlp.train", [*train_args, "--output-dir", out_dir]),
                          capture_output=True, text=True, env={**env, "PATH": f"{BIN}:{env['PATH']}"})
    if proc.returncode:
        raise UserError(f"training failed: {cause(proc)}")
    return results.to_dict(results.read(out_dir))


def cause(proc) -> str:
    """Why a child run failed: its own one-line error (mpirun's and horovodrun's boxes and tracebacks come after
    it and say only that a process exited), else the last lines of its output."""
    lines = (proc.stdout + proc.stderr).splitlines()
    own = [m.group(0) for m in map(OWN_ERROR.search, lines) if m]
    return own[0] if own else " | ".join(line.strip() for line in lines[-3:])


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
    out = os.path.join(out_dir, f"commbench-np{np_}.json")
    proc = subprocess.run(horovodrun(np_, "mpi", "hvd_mlp.commbench",
                                     ["--sizes", MODEL_FLOATS * 4, "--repeats", 100, "--json", out]),
                          capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"commbench failed: {cause(proc)}")
    with open(out) as fh:
        return json.load(fh)["rows"][0]["time_us"]


def bench_scaling(args):
    from hvd_mlp import report
    sweep_dir = os.path.join(args.runs, time.strftime("scaling-%Y%m%d-%H%M%S"))
    train_args = ["--dataset", "synthetic", "--synthetic-size", 60000, "--epochs", args.epochs, "--max-steps",
                  args.steps, "--batch-size", args.batch_size, "--log-every", 0, "--checkpoint-every", 0,
                  "--timeline-mode", "window", "--timeline-steps", max(1, min(40, args.steps - 10))]
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
    out = args.out or sweep_dir  # not docs/figures: a sweep must not overwrite the committed figures unasked
    written, _, notes = report.make_report(run_dirs, out)
    print("\n".join([f"wrote {len(written)} figures to {out}", *notes]))


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
    print(f"  raw MPI_Allreduce of the same {MODEL_FLOATS * 4 / 1e6:.2f} MB (commbench)  {raw_us / 1e3:>8.2f} ms")
    print(f"  Horovod's transfer per step (timeline)             {transfer / 1e3:>8.2f} ms  {transfer / raw_us:.2f}x raw")
    print(f"  Horovod's whole op per step (+ fusion copies)      {op / 1e3:>8.2f} ms  {op / raw_us:.2f}x raw")
    print(f"batch 256/rank: np=1 {speed[(1, 0)]:,.0f} samples/s (2 threads), {speed[(1, 1)]:,.0f} (1 thread); "
          f"np=2 {speed[(2, 0)]:,.0f} -> speedup {speed[(2, 0)] / speed[(1, 0)]:.2f} "
          f"(vs one single-threaded rank {speed[(2, 0)] / speed[(1, 1)]:.2f})")


@command_line("hvd_mlp.bench")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timeline", help="time and peak memory of summarising and slicing a large timeline")
    t.add_argument("--size-mb", type=positive(float), default=1000, help="timeline size in MB (default: 1000)")
    t.add_argument("--file", type=output_file, default="/tmp/hvd_mlp-bench-timeline.json",
                   help="where to write it; kept, and reused when it has the size (default: %(default)s)")
    r = sub.add_parser("recording", help="throughput cost of recording the timeline, per mode")
    r.add_argument("--np", type=positive(int), default=2, help="ranks (default: 2)")
    r.add_argument("--controller", choices=("mpi", "gloo"), default="mpi", help="horovodrun's (default: mpi)")
    r.add_argument("--epochs", type=positive(int), default=3, help="epochs per run (default: 3)")
    r.add_argument("--samples", type=positive(int), default=60000, help="synthetic training images (default: 60000)")
    r.add_argument("--batch-size", type=positive(int), default=64, help="per rank (default: 64)")
    r.add_argument("--repeats", type=positive(int), default=3, help="runs per mode (default: 3)")
    sc = sub.add_parser("scaling", help="np = 1, 2, 4 with MPI and Gloo: table and figures")
    sc.add_argument("--steps", type=positive(int), default=150, help="steps per epoch (default: 150)")
    sc.add_argument("--epochs", type=positive(int), default=3, help="epochs per run (default: 3)")
    sc.add_argument("--batch-size", type=positive(int), default=64, help="per rank (default: 64)")
    sc.add_argument("--runs", type=output_dir, default="runs",
                    help="where the sweep's run directory goes (default: runs)")
    sc.add_argument("--out", type=output_dir, help="where the figures go (default: the sweep's run directory)")
    c = sub.add_parser("compare", help="hvd_mlp against the seed's DDP design, side by side")
    c.add_argument("--repeats", type=positive(int), default=2, help="runs of each (default: 2)")
    efficiency.add_parser(sub)
    elastic_bench.add_parser(sub)
    links.add_parser(sub)
    args = parser.parse_args(argv)
    {"timeline": bench_timeline, "recording": bench_recording, "scaling": bench_scaling, "compare": bench_compare,
     "efficiency": efficiency.bench_efficiency, "elastic": elastic_bench.bench_elastic,
     "links": links.bench_links}[args.command](args)


if __name__ == "__main__":
    main()
