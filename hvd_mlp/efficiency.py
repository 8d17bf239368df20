"""Scaling efficiency against the machine's own single-rank compute floor, and where each step's time went.

    python -m hvd_mlp.bench efficiency [--batches 32,64,256] [--np 2,4] [--repeats 3] [--controller mpi]
        [--variant "NAME: KEY=VALUE --train-flag ..."]

Each repeat runs, batch by batch, the floor (np=1, --threads 1, the same batch and data), the floor again with every
step through Horovod's allreduce path ("np=1 horovod": what Horovod's own work costs with no peer to wait for and a
spare core for its background thread) and then np=N under horovodrun, so that machine noise hits all of them alike;
with --variant, each np=N run is followed by the same run with the variant's environment and training flags (a
lever measured against the defaults in the same repeat).
Efficiency = np=N samples/s / (N x the floor's samples/s of the same repeat). A step of np=N splits into the
floor's compute, the compute inflation over it, the wait in synchronize() and the loop's other work (they add up to
the step time); the timeline's negotiation, fusion copies and transfer are what the wait and the op are made of.
"""
import argparse
import os
import shlex
import statistics
import tempfile

from hvd_mlp import bench, results
from hvd_mlp.errors import positive, positive_list

FLOOR = "floor"  # the np=1 single-thread run's name in the table
# the floor through Horovod: at one rank DistributedOptimizer registers its allreduce hooks only in elastic mode
SOLO = ("np=1 horovod", 1, {"HOROVOD_ELASTIC": "1"}, ["--threads", 1])
PARTS = ("floor_ms", "inflation_ms", "wait_ms", "other_ms")  # add up to step_ms
TIMELINE = ("negotiate_ms", "memcpy_ms", "collective_ms")


def variant(text: str) -> tuple:
    """An argparse type: 'NAME: KEY=VALUE ... --flag value ...' -> (name, environment, training arguments)."""
    name, sep, rest = text.partition(":")
    try:
        tokens = shlex.split(rest)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {e}") from None
    if not sep or not name.strip() or not tokens:
        raise argparse.ArgumentTypeError(f"expected 'NAME: KEY=VALUE ... --train-flag ...', got {text!r}")
    if name.strip() in (FLOOR, SOLO[0]):
        raise argparse.ArgumentTypeError(f"{name.strip()!r} names one of the benchmark's own rows: choose another")
    flags_from = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
    env = dict(t.split("=", 1) for t in tokens[:flags_from] if "=" in t)
    if len(env) != flags_from:
        raise argparse.ArgumentTypeError(f"environment settings must be KEY=VALUE before any flag, got {text!r}")
    return name.strip(), env, tokens[flags_from:]


def step_breakdown(epoch: dict, floor_compute_ms: float) -> dict:
    """Per step of one steady epoch (ms, the ranks' mean): step time and its parts against the floor's compute."""
    steps = epoch["steps"]
    row = {"step_ms": 1e3 * epoch["epoch_time_s"] / steps, "floor_ms": floor_compute_ms,
           "inflation_ms": 1e3 * epoch["compute_s"] / steps - floor_compute_ms,
           "wait_ms": 1e3 * epoch["comm_wait_s"] / steps, "other_ms": 1e3 * epoch["other_s"] / steps}
    comm = epoch.get("comm") or {}  # window figures are scaled to the whole epoch: per step is / steps
    row.update({f"{k}_ms": comm[f"{k}_us"] / 1e3 / steps for k in ("negotiate", "memcpy", "collective")
                if f"{k}_us" in comm})
    return row


def steady_epoch(res: dict) -> dict:
    return results.steady(res["epochs"])[-1]


def efficiency(rate: float, np_: int, floor_rate: float) -> float:
    return rate / (np_ * floor_rate)


def spread(values: list) -> float:
    """(max - min) / median: how far apart the repeats are."""
    return (max(values) - min(values)) / statistics.median(values)


def measure(args) -> list:
    """Every run of the benchmark, interleaved; a row per run: batch, name, np, repeat, samples/s, efficiency,
    breakdown."""
    common = ["--dataset", "synthetic", "--synthetic-size", args.samples, "--epochs", args.epochs,
              "--log-every", 0, "--checkpoint-every", 0, "--timeline-mode", "window",
              "--timeline-steps", args.timeline_steps]
    configs = [SOLO]  # (name, np, environment, training flags): the floor through Horovod, each np=N, its variants
    for n in args.np:
        configs += [(f"np={n}", n, {}, []), *((f"np={n} {v}", n, env, flags) for v, env, flags in args.variant)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for batch in args.batches:
                out = os.path.join(tmp, f"r{rep}-b{batch}")
                floor = steady_epoch(bench.run_training(
                    1, args.controller, [*common, "--batch-size", batch, "--threads", 1], f"{out}-floor"))
                floor_ms = 1e3 * floor["compute_s"] / floor["steps"]
                for i, (name, np_, env, flags) in enumerate([(FLOOR, 1, {}, []), *configs]):
                    e = floor if name == FLOOR else steady_epoch(bench.run_training(
                        np_, args.controller, [*common, "--batch-size", batch, *flags], f"{out}-{i}", env=env))
                    rows.append({"batch": batch, "name": name, "np": np_, "repeat": rep,
                                 "samples_per_s": e["samples_per_s"],
                                 "efficiency": efficiency(e["samples_per_s"], np_, floor["samples_per_s"]),
                                 **step_breakdown(e, floor_ms)})
                    print(f"  repeat {rep + 1}/{args.repeats} batch {batch:>4} {name:<22} "
                          f"{rows[-1]['samples_per_s']:>8,.0f} samples/s  efficiency {rows[-1]['efficiency']:.0%}  "
                          f"load {os.getloadavg()[0]:.2f}", flush=True)
    return rows


def summarize(rows: list) -> list:
    """One line per (batch, configuration): the median run's samples/s and step breakdown (so that its parts add
    up to its step), the median, min and max of the efficiency and the spread of samples/s over the repeats."""
    lines = []
    for key in dict.fromkeys((r["batch"], r["name"]) for r in rows):
        mine = sorted((r for r in rows if (r["batch"], r["name"]) == key), key=lambda r: r["samples_per_s"])
        effs = [r["efficiency"] for r in mine]
        lines.append({**mine[(len(mine) - 1) // 2], "repeats": len(mine),
                      "spread": spread([r["samples_per_s"] for r in mine]), "efficiency": statistics.median(effs),
                      "efficiency_min": min(effs), "efficiency_max": max(effs)})
    return lines


def format_table(lines: list) -> str:
    w = max(len(s["name"]) for s in lines)
    head = (f"{'batch':>5} {'run':<{w}} {'samples/s':>9} {'spread':>6} {'efficiency':>16} {'step':>6} {'floor':>6} "
            f"{'+infl.':>6} {'wait':>6} {'other':>6} | {'negot.':>6} {'copies':>6} {'transf.':>7}")
    text = [head]
    for s in lines:
        eff = f"{s['efficiency']:.0%} ({s['efficiency_min']:.0%}-{s['efficiency_max']:.0%})"
        cells = " ".join(f"{s[k]:>6.2f}" for k in ("step_ms", *PARTS))
        comm = " ".join(f"{s[k]:>6.2f}" if k in s else f"{'-':>6}" for k in TIMELINE)
        text.append(f"{s['batch']:>5} {s['name']:<{w}} {s['samples_per_s']:>9,.0f} {s['spread']:>6.1%} {eff:>16} "
                    f"{cells} | {comm}")
    return "\n".join(text)


def bench_efficiency(args):
    load = os.getloadavg()
    rows = measure(args)
    print(f"scaling efficiency, {args.controller}, synthetic {args.samples:,} images, epoch {args.epochs} of "
          f"{args.epochs}, {args.repeats} repeats; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n"
          f"samples/s and ms per step (ranks' mean): the median run; spread: (max - min) / median of samples/s; "
          f"efficiency: median (min-max) over the repeats of np=N / (N x that repeat's floor)")
    print(format_table(summarize(rows)))
    print("step = floor (np=1 compute) + infl. (compute above it) + wait (in synchronize) + other; negot., copies "
          "(fusion buffer) and transf. (the collective): the timeline's, inside the op")


def add_parser(sub):
    p = sub.add_parser("efficiency", help="np=N against the single-rank compute floor: efficiency and step breakdown")
    p.add_argument("--batches", type=positive_list, default=[32, 64, 256],
                   help="per-rank batch sizes (default: 32,64,256)")
    p.add_argument("--np", type=positive_list, default=[2, 4], help="rank counts besides the floor (default: 2,4)")
    p.add_argument("--repeats", type=positive(int), default=3, help="runs of each (default: 3)")
    p.add_argument("--controller", choices=("mpi", "gloo"), default="mpi", help="horovodrun's (default: mpi)")
    p.add_argument("--samples", type=positive(int), default=60000,
                   help="synthetic training images (default: 60000)")
    p.add_argument("--epochs", type=positive(int), default=2, help="epochs per run; the last is measured (default: 2)")
    p.add_argument("--timeline-steps", type=positive(int), default=40, help="timeline window (default: 40)")
    p.add_argument("--variant", type=variant, action="append", default=[], metavar="'NAME: KEY=VALUE --flag ...'",
                   help="also run each np=N with this environment and these training flags (repeatable)")
