"""Figures from training runs (PNG, matplotlib).

    python -m hvd_mlp.report RUN_DIR [RUN_DIR ...] --out DIR

For each run: <name>-training.png (loss and accuracy per epoch), <name>-time.png (per-epoch compute, the loop's
wait in synchronize() and other time, with the timeline's communication in flight), <name>-comm.png (allreduce
bytes and bandwidth per epoch; needs a timeline, and a run that communicated), <name>-series.png (communication
in flight and bandwidth over time, from its timeline), <name>-ranks.png (per rank and epoch: compute, waiting
for a later rank, the transfer, other; the straggler marked; needs a timeline and 2+ ranks). <name> is the run directory's name,
with its parents as far as needed to tell the runs apart. For several runs also scaling.png: samples/s against
world size, speedup and parallel efficiency against a one-rank run of the same controller (when there is one),
and communication share, MPI and Gloo side by side, and steps.png: each run's average step side by side (the
loop's compute, wait and other time; the timeline's negotiation, transfer and fusion copies).
"""
import os
import textwrap
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.patches import Patch  # noqa: E402

from hvd_mlp import results  # noqa: E402
from hvd_mlp.errors import ArgumentParser, UserError, command_line, output_dir  # noqa: E402
from hvd_mlp.storage import atomic_file  # noqa: E402
from hvd_mlp.timeline import summarize  # noqa: E402
from hvd_mlp.timeline.epochs import last_timeline  # noqa: E402

COLORS = {"compute": "#4C72B0", "exposed": "#DD8452", "other": "#BBBBBB", "mpi": "#4C72B0", "gloo": "#C44E52",
          "peers": "#C44E52"}
SERIES_BUCKETS = 60  # time buckets of a series figure
STEP_CLASSES = ("negotiate", "collective", "memcpy")  # the step's communication, as the timeline splits it
COMM_SOURCES = {"timeline": "in flight (timeline)", "loop wait": "loop's wait in synchronize()"}


def load_run(run_dir: str) -> dict:
    """The run record (results.read checks it) as the plain dicts the figures index, with its name."""
    record = results.read_finished(run_dir)
    return {**results.to_dict(record), "name": record.name, "dir": run_dir}


def save_figure(fig, path: str):
    fig.tight_layout()
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path


def title(res: dict) -> str:
    w = res["world"]
    return f"{res['name']}: {ranks(w['size'])}, {w['controller'].upper()}, {res['dataset']['name']}"


def ranks(n: int) -> str:
    return f"{n} rank" if n == 1 else f"{n} ranks"


# --------------------------------------------------------------------------------------------------- one run
def plot_training(res: dict, path: str):
    epochs = [e["epoch"] for e in res["epochs"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train", "train"), ("val", "validation")):
        ax_loss.plot(epochs, [e[f"{key}_loss"] for e in res["epochs"]], "o-", label=label)
        ax_acc.plot(epochs, [100 * e[f"{key}_acc"] for e in res["epochs"]], "o-", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title(res))
    return save_figure(fig, path)


def plot_time(res: dict, path: str):
    """Per epoch: where the training time went; with the timeline, how much communication was in flight."""
    ep = res["epochs"]
    x = [e["epoch"] for e in ep]
    compute = [e["compute_s"] for e in ep]
    exposed = [e["comm_wait_s"] for e in ep]
    other = [max(0.0, e["epoch_time_s"] - c - w) for e, c, w in zip(ep, compute, exposed)]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.bar(x, compute, color=COLORS["compute"], label="compute (forward, backward, optimizer)")
    ax.bar(x, exposed, bottom=compute, color=COLORS["exposed"], label="exposed: the loop waits in synchronize()\n"
           "(mean of the ranks, own clock)")
    ax.bar(x, other, bottom=[c + w for c, w in zip(compute, exposed)], color=COLORS["other"],
           label="other (batching, schedule, logging)")
    if all("comm" in e and "comm_us" in e["comm"] for e in ep):
        window = " (window scaled)" if "scaled_from_steps" in ep[0]["comm"] else ""
        ax.plot(x, [e["comm"]["comm_us"] / 1e6 for e in ep], "k^--",
                label=f"communication in flight,\nrank 0's timeline{window}")
        ax.plot(x, [e["comm"]["collective_us"] / 1e6 for e in ep], "kv:", label="of which transfer (timeline)")
        # measured per step (docs/timeline.md): 9-26% of the wait lay before the first span, 6-18% after the last
        note = "The two measure different things: the wait also holds the time until Horovod's background cycle " \
               "picks the gradients up, and until the loop wakes after the op, which the timeline does not record."
        note += " A window's figures are its steps scaled to the whole epoch." if window else ""
        ax.text(1.01, 0, textwrap.fill(note, 40), transform=ax.transAxes, va="bottom", fontsize=7, color="#555555")
    ax.set(xlabel="epoch", ylabel="seconds", title=f"time per epoch — {title(res)}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 1.1 * max(e["epoch_time_s"] for e in ep))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_comm(res: dict, path: str):
    ep = [e for e in res["epochs"] if "comm" in e and "allreduce_bytes" in e["comm"]]
    if not any(e["comm"]["allreduce_bytes"] for e in ep):
        return None  # no timeline recorded, or nothing communicated (one rank): there is nothing to draw
    x = [e["epoch"] for e in ep]
    fig, (ax_bytes, ax_bw) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_bytes.bar(x, [e["comm"]["allreduce_bytes"] / 1e6 for e in ep], color=COLORS["compute"])
    ax_bytes.set(xlabel="epoch", ylabel="MB allreduced (per rank)", title="gradient bytes per epoch")
    ax_bw.plot(x, [e["comm"]["bandwidth_MBps"] for e in ep], "o-", color=COLORS["exposed"])
    ax_bw.set(xlabel="epoch", ylabel="MB/s", title="effective allreduce bandwidth", ylim=(0, None))
    for ax in (ax_bytes, ax_bw):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title(res) + (" — window scaled to epoch" if "scaled_from_steps" in ep[0]["comm"] else ""))
    return save_figure(fig, path)


def plot_series(res: dict, path: str):
    """Communication over time from the run's timeline (the whole run in full mode, the last window in window
    mode): comm in flight per bucket and the bandwidth of the transfers that ended in it, so a slowdown in the
    middle of an epoch shows where it happened."""
    if res["world"]["size"] == 1:  # one rank communicates nothing: Horovod wrote no spans
        return None
    windows = [e["timeline_window"] for e in res["epochs"] if "timeline_window" in e]
    file = last_timeline(res["dir"], [w["file"] for w in windows])
    if not os.path.exists(file):  # no timeline recorded, or a run directory copied without its timeline files
        return None
    ends = (windows[-1]["start_unix_us"], windows[-1]["end_unix_us"]) if windows else \
        (res["epochs"][0]["start_unix_us"], res["epochs"][-1]["end_unix_us"])
    span_us = ends[1] - ends[0]
    series = summarize(file, bucket_s=max(0.01, span_us / 1e6 / SERIES_BUCKETS))["series"]
    t = [r["t_s"] for r in series]
    fig, (ax_comm, ax_bw) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    ax_comm.step(t, [100 * r["comm_share"] for r in series], where="post", color=COLORS["exposed"])
    ax_comm.set(ylabel="comm in flight (%)", ylim=(0, 105), title="share of each time bucket with communication")
    ax_bw.step(t, [r["bandwidth_MBps"] for r in series], where="post", color=COLORS["compute"])
    ax_bw.set(xlabel="seconds since the timeline's start", ylabel="MB/s", ylim=(0, None),
              title="bandwidth of the transfers that ended in each bucket")
    for ax in (ax_comm, ax_bw):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title(res)} — {os.path.basename(file)}, {len(series)} buckets of "
                 f"{1e3 * (t[1] - t[0]) if len(t) > 1 else 0:.0f} ms")
    return save_figure(fig, path)


def plot_ranks(res: dict, path: str):
    """Per epoch, a bar per rank: compute, waiting for a later rank, the transfer, other; the straggler marked."""
    ep = [e for e in res["epochs"] if e.get("ranks")]
    if not ep:
        return None  # no timeline, or one rank
    size, width = len(ep[0]["ranks"]), 0.8 / len(ep[0]["ranks"])
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for i, e in enumerate(ep):
        for r in e["ranks"]:
            x = i + (r["rank"] - (size - 1) / 2) * width
            parts = ((r["compute_s"], "compute", "compute (forward, backward, optimizer)"),
                     (r["peer_wait_s"], "peers", "waiting for a later rank's hand-over"),
                     (r["wait_s"] - r["peer_wait_s"], "exposed", "waiting for the transfer"),
                     (r["other_s"], "other", "other (between steps)"))
            bottom = 0.0
            for value, color, label in parts:
                ax.bar(x, value, width * 0.9, bottom=bottom, color=COLORS[color], label=label if i == 0 and
                       r["rank"] == 0 else None)
                bottom += value
            s = e.get("straggler") or {}
            if s.get("rank") == r["rank"] and s.get("confidence") in ("high", "low"):
                ax.annotate(f"straggler\n({s['confidence']})", (x, bottom), ha="center", va="bottom", fontsize=7,
                            fontweight="bold" if s["confidence"] == "high" else "normal")
    ax.set_xticks(range(len(ep)), [f"epoch {e['epoch']}\nranks 0..{size - 1}" for e in ep])
    ax.set(ylabel="seconds (scaled to the epoch)", title=f"per rank — {title(res)}")
    ax.set_ylim(0, 1.2 * max(r["compute_s"] + r["wait_s"] + r["other_s"] for e in ep for r in e["ranks"]))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------- several runs
def plot_steps(runs: list, path: str):
    """Each run's average step side by side (steady epochs): where the loop's time went, and what the timeline
    saw of the communication (negotiation, transfer, fusion copies) in the same step."""
    names = [r["name"] for r in runs]
    steady = [results.steady(r["epochs"]) for r in runs]
    per_step = [{k: 1e3 * sum(e[k] for e in ep) / sum(e["steps"] for e in ep)
                 for k in ("compute_s", "comm_wait_s", "other_s")} for ep in steady]
    fig, (ax_loop, ax_comm) = plt.subplots(1, 2, figsize=(12, 4.5))
    bottom = [0.0] * len(runs)
    for key, label, color in (("compute_s", "compute", COLORS["compute"]),
                              ("comm_wait_s", "wait in synchronize()", COLORS["exposed"]),
                              ("other_s", "other", COLORS["other"])):
        values = [p[key] for p in per_step]
        ax_loop.bar(names, values, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax_loop.set(ylabel="ms per step", title="the loop's step")
    width = 0.8 / len(STEP_CLASSES)
    for i, cls in enumerate(STEP_CLASSES):
        values = [1e3 * sum(e["comm"][f"{cls}_us"] / 1e6 for e in ep if "comm" in e)
                  / max(1, sum(e["steps"] for e in ep if "comm" in e)) for ep in steady]
        bars = ax_comm.bar([j + (i - (len(STEP_CLASSES) - 1) / 2) * width for j in range(len(runs))], values,
                           width, label=cls)
        ax_comm.bar_label(bars, fmt="%.2f", fontsize=7)
    ax_comm.set_xticks(range(len(runs)), names)
    ax_comm.set(ylabel="ms per step", title="communication per step (timeline; 0 without one)")
    for ax in (ax_loop, ax_comm):
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle("step breakdown, side by side")
    return save_figure(fig, path)



def scaling_rows(runs: list) -> list:
    """One row per run: np, controller, samples/s, speedup and efficiency against a one-rank run of the same
    controller (None without one: a larger world's rate per rank is no one-rank rate), and communication share
    (timeline when recorded, else the loop's wait)."""
    by_controller = defaultdict(list)
    for res in runs:
        by_controller[res["world"]["controller"]].append(res)
    rows = []
    for controller, group in sorted(by_controller.items()):
        group.sort(key=lambda r: r["world"]["size"])
        one = [r["summary"]["samples_per_s"] for r in group if r["world"]["size"] == 1]
        for res in group:
            steady = results.steady(res["epochs"])
            comm = [e["comm"]["comm_share"] for e in steady if "comm_share" in e.get("comm", {})]
            n, rate = res["world"]["size"], res["summary"]["samples_per_s"]
            speedup = rate / max(one) if one else None  # the best one-rank run: speedup is never flattered
            rows.append({"name": res["name"], "np": n, "controller": controller, "samples_per_s": rate,
                         "speedup": speedup, "efficiency": speedup / n if one else None,
                         "comm_share": sum(comm) / len(comm) if comm else res["summary"]["comm_wait_share"],
                         "comm_source": "timeline" if comm else "loop wait"})
    return rows


def plot_scaling(rows: list, path: str):
    controllers = sorted({r["controller"] for r in rows})
    sizes = sorted({r["np"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    (ax_rate, ax_speed), (ax_eff, ax_comm) = axes
    for controller in controllers:
        mine = sorted((r for r in rows if r["controller"] == controller), key=lambda r: r["np"])
        style = {"color": COLORS.get(controller), "label": controller.upper()}
        ax_rate.plot([r["np"] for r in mine], [r["samples_per_s"] for r in mine], "o-", **style)
        if mine[0]["speedup"] is not None:
            ax_speed.plot([r["np"] for r in mine], [r["speedup"] for r in mine], "o-", **style)
    for n_i, n in enumerate(sizes):  # one bar per run, side by side within its np: none hides another
        mine = sorted((r for r in rows if r["np"] == n), key=lambda r: (r["controller"], r["name"]))
        width = 0.8 / len(mine)
        for i, r in enumerate(mine):
            pos, style = n_i + (i - (len(mine) - 1) / 2) * width, {"color": COLORS.get(r["controller"])}
            ax_comm.bar_label(ax_comm.bar(pos, 100 * r["comm_share"], width, **style), fmt="%.0f%%", fontsize=7)
            if r["efficiency"] is not None:
                ax_eff.bar_label(ax_eff.bar(pos, 100 * r["efficiency"], width, **style), fmt="%.0f%%", fontsize=7)
    ideal = {"color": "black", "linestyle": "--", "linewidth": 1.2, "zorder": 5}  # drawn over the points
    one = [r["samples_per_s"] for r in rows if r["np"] == 1]
    if one:
        ax_rate.plot(sizes, [max(one) * n for n in sizes], label="ideal (linear from 1 rank)", **ideal)
    without = [c.upper() for c in controllers if not any(r["np"] == 1 and r["controller"] == c for r in rows)]
    if len(without) < len(controllers):
        ax_speed.plot(sizes, sizes, label="ideal", **ideal)
        ax_eff.axhline(100, label="ideal", **ideal)
    for ax in (ax_speed, ax_eff):  # say why a panel is (partly) empty rather than compute a speedup from np > 1
        if without:
            ax.text(0.5, 0.5, f"no np=1 run of {' or '.join(without)}:\nno speedup to show", transform=ax.transAxes,
                    ha="center", va="center", color="#777777")
    top = max([110] + [100 * r["efficiency"] * 1.15 for r in rows if r["efficiency"] is not None])
    ax_rate.set(xlabel="ranks (np)", ylabel="samples/s (all ranks)", title="throughput")
    ax_speed.set(xlabel="ranks (np)", ylabel="speedup vs 1 rank", title="speedup")
    ax_eff.set(ylabel="parallel efficiency (%)", title="efficiency = speedup / np", ylim=(0, top))
    sources = sorted({r["comm_source"] for r in rows})
    ax_comm.set(ylabel="share of epoch (%)", title=f"communication: {' / '.join(COMM_SOURCES[s] for s in sources)}",
                ylim=(0, 1.15 * max([1] + [100 * r["comm_share"] for r in rows])))
    for ax in (ax_eff, ax_comm):
        ax.set_xticks(range(len(sizes)), [f"np={n}" for n in sizes])
    for ax in (ax_rate, ax_speed):
        ax.set_xticks(sizes)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in (ax_rate, ax_speed):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in (ax_eff, ax_comm):  # bars are per run: the legend names the controllers once
        ax.legend(handles=[Patch(color=COLORS.get(c), label=c.upper()) for c in controllers]
                  + ax.get_legend_handles_labels()[0], fontsize=8)
    fig.suptitle("scaling on this machine (batch per rank fixed)")
    return save_figure(fig, path)


def format_rows(rows: list) -> str:
    lines = [f"{'np':>3} {'controller':>10} {'samples/s':>10} {'speedup':>8} {'efficiency':>10} {'comm share':>11}"]
    for r in rows:
        speedup, efficiency = (f"{r['speedup']:>8.2f}", f"{100 * r['efficiency']:>9.0f}%") \
            if r["speedup"] is not None else (f"{'-':>8}", f"{'-':>10}")
        lines.append(f"{r['np']:>3} {r['controller']:>10} {r['samples_per_s']:>10,.0f} {speedup} {efficiency} "
                     f"{100 * r['comm_share']:>10.1f}%")
    if any(r["speedup"] is None for r in rows):
        lines.append("(-: no np=1 run of that controller, so no speedup to measure against)")
    return "\n".join(lines)


def figure_names(run_dirs: list) -> list:
    """Each run's name for its figures: its directory's name, with as many parents as it takes to tell the runs
    apart (runs/a/x and runs/b/x -> a-x, b-x): two runs must never write the same file."""
    real = [os.path.realpath(d) for d in run_dirs]
    for i, path in enumerate(real):
        if path in real[:i]:
            raise UserError(f"{run_dirs[i]} is given twice")
    parts = [os.path.abspath(d).split(os.sep) for d in run_dirs]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["-".join(p[-depth:]).strip("-") for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}-{name}" for i, name in enumerate(names, 1)]  # a/b-c and a-b/c: joined, even the paths collide


def make_report(run_dirs: list, out: str) -> tuple:
    """(the PNG files written, the scaling rows when there are several runs, notes on figures not drawn)."""
    runs = [load_run(d) for d in run_dirs]
    for res, name in zip(runs, figure_names(run_dirs)):
        res["name"] = name
    try:
        os.makedirs(out, exist_ok=True)
        written, notes = [], []
        for res in runs:
            written.append(plot_training(res, os.path.join(out, f"{res['name']}-training.png")))
            written.append(plot_time(res, os.path.join(out, f"{res['name']}-time.png")))
            written.append(plot_comm(res, os.path.join(out, f"{res['name']}-comm.png")))
            if not written[-1]:
                notes.append(f"no {res['name']}-comm.png: " + ("nothing was communicated (one rank)"
                             if res["world"]["size"] == 1 else "no timeline was recorded (--timeline-mode)"))
            written.append(plot_series(res, os.path.join(out, f"{res['name']}-series.png")))
            written.append(plot_ranks(res, os.path.join(out, f"{res['name']}-ranks.png")))
        rows = scaling_rows(runs) if len(runs) > 1 else []
        if rows:
            written.append(plot_scaling(rows, os.path.join(out, "scaling.png")))
            written.append(plot_steps(runs, os.path.join(out, "steps.png")))
    except OSError as e:  # --out was checked up front; this is e.g. a disk filling up
        raise UserError(f"cannot write figures into {out}: {e.strerror}") from None
    return [w for w in written if w], rows, notes


@command_line("hvd_mlp.report")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (holding results.json)")
    parser.add_argument("--out", required=True, type=output_dir,
                        help="directory for the PNG figures (made if missing; figures of the same names replaced)")
    args = parser.parse_args(argv)
    written, rows, notes = make_report(args.runs, args.out)
    if rows:
        print(format_rows(rows))
    for line in [*(f"wrote {path}" for path in written), *notes]:
        print(line)


if __name__ == "__main__":
    main()
