"""Real links between hosts, measured: np=2 across two namespace hosts whose links tc shapes to a rate.

    python -m hvd_mlp.bench links [--rates 100M,1G,10G,none] [--controllers mpi,gloo] [--batches 32,256]
                                  [--variants plain,fp16,bpps4,small] [--steps 20] [--out runs/links]
    python -m hvd_mlp.bench links --rows runs/links/links.json --out docs/figures    # again, from its rows

Root only: builds two hosts (hvd_mlp/netns.py: namespaces on a bridge, sshd each), and for every rate shapes both
hosts' links (tc tbf, each way) and runs scripts/launch.sh -np 2 across them with each controller, batch size per
rank and variant (plain; fp16: --fp16-allreduce; bpps4: --backward-passes-per-step 4; small: --hidden 16), 2 epochs
of --steps steps
with the whole epoch in the timeline window; then tears it all down. Prints one table of the steady epoch (the
second): samples/s, the step and its parts, the timeline's per-step transfer (collective) time and bandwidth, and
writes links.json (the rows), links.png (the figure) and every run's directory into --out. Then fits the
cost model (hvd_mlp/costmodel.py) on the unshaped and 1 Gbit/s runs and checks it against the others.

Transfer bandwidth = the bytes each rank puts on the wire per step / the step's collective time: the timeline's
allreduce bytes x 2(N-1)/N (a ring sends that share of the tensor each way; N=2: all of it) over collective_us
(the union of MPI_/GLOO_ALLREDUCE spans). It sits below the link's rate: tbf counts frame headers too (~4% of a
1500-byte frame), and the span also holds the reduction's adds, the protocol's handshakes and waits for the peer.
"""
import argparse
import json
import os
import re
import statistics
import tempfile
import time

from hvd_mlp import costmodel, results
from hvd_mlp.timeline import analysis
from hvd_mlp.errors import UserError, output_dir, positive, positive_list
from hvd_mlp.netns import REPO, Cluster, burst_bytes, launcher_env, namespaces_usable

# small: a 16-unit model (51 kB of gradients), for the cost model's per-message latency
VARIANTS = {"plain": [], "fp16": ["--fp16-allreduce"], "bpps4": ["--backward-passes-per-step", "4"],
            "small": ["--hidden", "16"]}
UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}


def rate_list(text: str) -> list:
    """'100M,1G,none' -> [1e8, 1e9, 0] (bits/s; 0 = unshaped)."""
    rates = []
    for token in text.split(","):
        rate = token.strip().lower()
        found = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg])(?:bit)?", rate)
        if rate in ("none", "0"):
            rates.append(0)
        elif found and float(found[1]) > 0:
            rates.append(float(found[1]) * UNITS[found[2]])
        else:
            raise argparse.ArgumentTypeError(f"expected rates like 100M,1G,10G,none, got {token!r}")
    return rates


def name_list(allowed):
    def parse(text):
        items = [t.strip() for t in text.split(",")]
        if not all(i in allowed for i in items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(allowed)}, got {text!r}")
        return items
    return parse


def rate_name(rate_bps: float) -> str:
    if not rate_bps:
        return "unshaped"
    return f"{rate_bps / 1e9:g}G" if rate_bps >= 1e9 else f"{rate_bps / 1e6:g}M"


def train_args(batch: int, variant: str, steps: int, out: str) -> list:
    per_step = batch * (4 if variant == "bpps4" else 1)
    return ["--dataset", "synthetic", "--synthetic-size", max(2000, 2 * steps * per_step), "--epochs", 2,
            "--max-steps", steps, "--batch-size", batch, "--threads", 1, "--log-every", 0, "--checkpoint-every", 0,
            "--timeline-mode", "window", "--timeline-steps", steps, "--output-dir", out, "--overwrite",
            *VARIANTS[variant]]


def run_across(cluster: Cluster, controller: str, args: list, timeout: int = 600) -> int:
    """scripts/launch.sh -np 2 on node1 across both hosts; the bytes node1 put on its link meanwhile."""
    before = cluster.sent_bytes(0)
    proc = cluster.run_on(0, [f"{REPO}/scripts/launch.sh", "-np", "2", "--hostfile", cluster.hostfile(),
                              f"--{controller}", "--nic", "hvd0", "--start-timeout", "60", "--", *args],
                          timeout=timeout, env=launcher_env())
    if proc.returncode:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"training across the hosts failed ({controller}): {last[0]}")
    return cluster.sent_bytes(0) - before


def measure(run_dir: str, **setting) -> dict:
    """One run's row: its steady epoch per step (seconds), from results.json and the epoch's timeline window."""
    record = results.read(run_dir)
    e = results.steady(record.epochs)[-1]
    c, n, steps = e.comm, e.world_size, e.steps
    ring = 2 * (n - 1) / n
    wire = c.allreduce_bytes / steps * ring
    # the window file beside results.json, wherever the run directory was moved
    window = analysis.transfers(os.path.join(os.path.dirname(record.path), os.path.basename(e.timeline_window.file)))
    largest = max((b for _, b in window), default=0)  # the step's gradients, not the epoch's small metric sums
    gradients = [(us / 1e6, b) for us, b in window if b > largest / 2 and us > 0]
    return {**setting, "name": os.path.basename(run_dir), "world": n, "steps": steps,
            "fp16": bool(record.config.get("fp16_allreduce")), "burst_bytes": burst_bytes(setting.get("rate_bps")),
            "parameters": record.parameters,
            "samples_per_step": e.samples / steps / n, "samples_per_s": e.samples_per_s,
            "step_s": e.epoch_time_s / steps, "compute_s": e.compute_s / steps, "wait_s": e.comm_wait_s / steps,
            "other_s": e.other_s / steps, "collective_s": c.collective_us / 1e6 / steps,
            "negotiate_s": c.negotiate_us / 1e6 / steps, "memcpy_s": c.memcpy_us / 1e6 / steps,
            "op_s": c.op_us / 1e6 / steps, "tensor_bytes": c.allreduce_bytes / steps, "wire_bytes": wire,
            "epoch_bps": 8 * wire / (c.collective_us / 1e6 / steps) if c.collective_us else 0.0,
            "transfer_s": statistics.median(t for t, _ in gradients) if gradients else 0.0,
            "transfer_bps": statistics.median(8 * b * ring / t for t, b in gradients) if gradients else 0.0}


def sweep(args, out: str) -> list:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hvd_mlp-links-") as tmp, Cluster(2, tmp) as cluster:
        for rate in args.rates:
            cluster.shape(rate)
            for controller in args.controllers:
                for batch in args.batches:
                    for variant in args.variants:
                        run_dir = os.path.join(out, f"{controller}-{rate_name(rate)}-b{batch}-{variant}")
                        t = time.time()
                        sent = run_across(cluster, controller, train_args(batch, variant, args.steps, run_dir))
                        row = measure(run_dir, controller=controller, rate_bps=rate, batch=batch, variant=variant)
                        row["sent_bytes"] = sent
                        rows.append(row)
                        with open(os.path.join(out, "links.json"), "w") as fh:  # so far: a failure keeps them
                            json.dump({"rows": rows}, fh, indent=1)
                        print(f"  {row['name']:<24} {row['samples_per_s']:>8,.0f} samples/s  transfer "
                              f"{row['transfer_bps'] / 1e6:>7,.0f} Mbit/s  ({time.time() - t:.0f} s)", flush=True)
    return rows


def format_table(rows: list) -> str:
    lines = [f"{'run':<24} {'samples/s':>9} {'step ms':>8} {'compute':>8} {'wait':>7} {'other':>7} "
             f"{'negot':>6} {'memcpy':>6} {'xfer ms':>8} {'MB/step':>8} {'epoch':>7} {'median':>7} {'of rate':>7}"]
    for r in rows:
        share = f"{100 * r['transfer_bps'] / r['rate_bps']:>6.0f}%" if r["rate_bps"] else f"{'-':>7}"
        lines.append(f"{r['name']:<24} {r['samples_per_s']:>9,.0f} {1e3 * r['step_s']:>8.1f} "
                     f"{1e3 * r['compute_s']:>8.1f} {1e3 * r['wait_s']:>7.1f} {1e3 * r['other_s']:>7.1f} "
                     f"{1e3 * r['negotiate_s']:>6.1f} {1e3 * r['memcpy_s']:>6.1f} {1e3 * r['collective_s']:>8.2f} "
                     f"{r['wire_bytes'] / 1e6:>8.2f} {r['epoch_bps'] / 1e6:>7,.0f} {r['transfer_bps'] / 1e6:>7,.0f} "
                     f"{share}")
    return "\n".join(lines + ["(per rank and step; xfer: the collective's time; MB/step on the wire each way; "
                               "Mbit/s: the epoch's bytes / its collective time, and the median transfer's)"])


def plot(rows: list, checked: list, path: str):
    from hvd_mlp import report  # matplotlib only where a figure is drawn
    plt = report.plt
    fig, (ax_speed, ax_bw, ax_model) = plt.subplots(1, 3, figsize=(15, 4.6))
    top = max(r["rate_bps"] for r in rows) * 4 or 4e10
    x = lambda r: r["rate_bps"] or top  # noqa: E731  (unshaped: drawn right of the fastest rate)
    kinds = sorted({(r["batch"], r["variant"]) for r in rows})
    for key in sorted({(r["controller"], r["batch"], r["variant"]) for r in rows}):
        mine = sorted((r for r in rows if (r["controller"], r["batch"], r["variant"]) == key), key=x)
        # colour: batch and variant; line: MPI solid, Gloo dashed
        look = {"color": f"C{kinds.index(key[1:]) % 10}", "linestyle": "-" if key[0] == "mpi" else "--", "marker": "o"}
        ax_speed.plot([x(r) for r in mine], [r["samples_per_s"] for r in mine], **look,
                      label=f"b{key[1]} {key[2]}" if key[0] == rows[0]["controller"] else None)
        shaped = [r for r in mine if r["rate_bps"] and r["wire_bytes"] > r["burst_bytes"]]  # more than the bucket holds
        ax_bw.plot([r["rate_bps"] / 1e6 for r in shaped], [r["transfer_bps"] / r["rate_bps"] for r in shaped], **look)
    for controller, line in (("MPI", "-"), ("Gloo", "--")):
        ax_speed.plot([], [], color="k", linestyle=line, label=controller)
    ax_bw.axhspan(0.85, 1.0, color="grey", alpha=0.2, label="within 15% of the rate")
    ax_speed.set(xscale="log", yscale="log", xlabel="link rate, bit/s (rightmost: unshaped)", ylabel="samples/s",
                 title="throughput, np=2 across two hosts")
    ax_speed.legend(fontsize=6, ncol=2)
    ax_bw.set(xscale="log", ylim=(0, 1.1), xlabel="configured rate, Mbit/s", ylabel="share of the configured rate",
              title="timeline: median transfer's wire bytes / time")
    ax_bw.legend(fontsize=7)
    for role, marker in (("fit", "o"), ("check", "s")):
        pts = [(r["step_s"] * 1e3, r["predicted_s"] * 1e3) for r in checked if r["role"] == role]
        if pts:
            ax_model.plot(*zip(*pts), marker, linestyle="", label=f"{role} runs")
    if checked:
        edge = max(max(r["step_s"], r["predicted_s"]) for r in checked) * 1.2e3
        ax_model.plot([0.5, edge], [0.5, edge], "k:")
    ax_model.set(xscale="log", yscale="log", xlabel="measured step, ms", ylabel="predicted step, ms",
                 title="alpha-beta cost model")
    if checked:
        ax_model.legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, path)
    plt.close(fig)


def bench_links(args):
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    if args.rows:  # a sweep measured before: fit, table and figure again, no runs
        saved = read_rows(args.rows)
        rows, load = saved["rows"], saved.get("load", [])
        print(f"{len(rows)} runs from {args.rows}")
    else:
        why = namespaces_usable()
        if why:
            raise UserError(f"bench links builds two hosts with network namespaces: {why}")
        load = os.getloadavg()
        print(f"links sweep: np=2 across two hosts, {args.steps} steps x 2 epochs per run, load {load[0]:.2f} "
              f"{load[1]:.2f} {load[2]:.2f} (runs in {out})", flush=True)
        rows = sweep(args, out)
    print(format_table(rows))
    report(rows, load, out)


def read_rows(path: str) -> dict:
    try:
        with open(path) as fh:
            saved = json.load(fh)
        if not saved.get("rows"):
            raise ValueError("no runs in it")
        return saved
    except (OSError, ValueError) as e:
        raise UserError(f"--rows {path}: not a links.json of bench links ({e})") from None


def report(rows: list, load, out: str):
    """Fit and check the cost model on the rows; links.json and links.png in out."""
    fitted, checked, text = costmodel.fit_and_check(rows)
    print(text)
    parameters = max(r["parameters"] for r in rows)
    for controller, model in fitted.items():
        print(f"projected, {controller}, {parameters:,} float32 parameters, one rank per host:\n"
              + costmodel.projection_table(model, parameters))
    with open(os.path.join(out, "links.json"), "w") as fh:
        json.dump({"rows": rows, "model": fitted, "checked": checked, "load": load}, fh, indent=1)
    plot(rows, checked, os.path.join(out, "links.png"))
    print(f"wrote {out}/links.json and {out}/links.png")


def add_parser(sub):
    p = sub.add_parser("links", help="np=2 across two hosts on tc-shaped links: table, figure, cost model")
    p.add_argument("--rates", type=rate_list, default=rate_list("100M,1G,10G,none"),
                   help="link rates, bit/s with k/M/G; none = unshaped (default: 100M,1G,10G,none)")
    p.add_argument("--controllers", type=name_list(("mpi", "gloo")), default=["mpi", "gloo"], help="(default: mpi,gloo)")
    p.add_argument("--batches", type=positive_list, default=[32, 256], help="per rank (default: 32,256)")
    p.add_argument("--variants", type=name_list(tuple(VARIANTS)), default=list(VARIANTS),
                   help="plain, fp16 (--fp16-allreduce), bpps4 (--backward-passes-per-step 4), small (--hidden 16) "
                        "(default: all)")
    p.add_argument("--steps", type=positive(), default=20, help="steps per epoch (default: 20)")
    p.add_argument("--out", type=output_dir, default="runs/links", help="(default: %(default)s)")
    p.add_argument("--rows", default="", help="a sweep's links.json: fit, print and draw again from its runs")
