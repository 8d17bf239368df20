"""Figures from training runs (PNG, matplotlib).

    python -m hvd_mlp.report RUN_DIR [RUN_DIR ...] --out DIR

For each run: <name>-training.png (loss and accuracy per epoch), <name>-time.png (per-epoch compute, exposed
communication and other time, with the timeline's communication in flight), <name>-comm.png (allreduce bytes and
bandwidth per epoch; needs a timeline), <name>-ranks.png (per rank and epoch: compute, waiting for a later rank, the
transfer, other; the straggler marked; needs a timeline and 2+ ranks). For several runs also scaling.png: samples/s
and speedup against world size with the ideal line, parallel efficiency, and communication share, MPI and Gloo side
by side.
"""
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from hvd_mlp import results  # noqa: E402
from hvd_mlp.errors import ArgumentParser, UserError, command_line  # noqa: E402
from hvd_mlp.storage import atomic_file  # noqa: E402

COLORS = {"compute": "#4C72B0", "exposed": "#DD8452", "other": "#BBBBBB", "mpi": "#4C72B0", "gloo": "#C44E52",
          "peers": "#C44E52"}


def load_run(run_dir: str) -> dict:
    """The run record (results.read checks it) as the plain dicts the figures index, with its name."""
    record = results.read_finished(run_dir)
    return {**results.to_dict(record), "name": record.name}


def save_figure(fig, path: str):
    fig.tight_layout()
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path


def title(res: dict) -> str:
    w = res["world"]
    return f"{res['name']}: {w['size']} ranks, {w['controller'].upper()}, {res['dataset']['name']}"


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
    ax.bar(x, exposed, bottom=compute, color=COLORS["exposed"], label="exposed communication (loop waits)")
    ax.bar(x, other, bottom=[c + w for c, w in zip(compute, exposed)], color=COLORS["other"],
           label="other (batching, schedule, logging)")
    if all("comm" in e and "comm_us" in e["comm"] for e in ep):
        ax.plot(x, [e["comm"]["comm_us"] / 1e6 for e in ep], "k^--", label="communication in flight (timeline)")
        ax.plot(x, [e["comm"]["collective_us"] / 1e6 for e in ep], "kv:", label="of which transfer (timeline)")
    ax.set(xlabel="epoch", ylabel="seconds", title=f"time per epoch — {title(res)}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 1.1 * max(e["epoch_time_s"] for e in ep))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_comm(res: dict, path: str):
    ep = [e for e in res["epochs"] if "comm" in e and "allreduce_bytes" in e["comm"]]
    if not ep:
        return None  # no timeline recorded in this run
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
def scaling_rows(runs: list) -> list:
    """One row per run: np, controller, samples/s, speedup and efficiency against the same controller's
    smallest world, and communication share (timeline when recorded, else the loop's wait)."""
    by_controller = defaultdict(list)
    for res in runs:
        by_controller[res["world"]["controller"]].append(res)
    rows = []
    for controller, group in sorted(by_controller.items()):
        group.sort(key=lambda r: r["world"]["size"])
        base = group[0]
        base_rate = base["summary"]["samples_per_s"] / base["world"]["size"]  # per rank
        for res in group:
            steady = results.steady(res["epochs"])
            comm = [e["comm"]["comm_share"] for e in steady if "comm_share" in e.get("comm", {})]
            n, rate = res["world"]["size"], res["summary"]["samples_per_s"]
            speedup = rate / base_rate  # against one rank (the smallest world's rate per rank)
            rows.append({"name": res["name"], "np": n, "controller": controller, "samples_per_s": rate,
                         "speedup": speedup, "efficiency": speedup / n,
                         "comm_share": sum(comm) / len(comm) if comm else res["summary"]["comm_wait_share"],
                         "comm_source": "timeline" if comm else "loop wait"})
    return rows


def plot_scaling(rows: list, path: str):
    controllers = sorted({r["controller"] for r in rows})
    sizes = sorted({r["np"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    (ax_rate, ax_speed), (ax_eff, ax_comm) = axes
    width = 0.8 / len(controllers)
    for i, controller in enumerate(controllers):
        mine = sorted((r for r in rows if r["controller"] == controller), key=lambda r: r["np"])
        nps = [r["np"] for r in mine]
        color = COLORS.get(controller)
        ax_rate.plot(nps, [r["samples_per_s"] for r in mine], "o-", color=color, label=controller.upper())
        ax_speed.plot(nps, [r["speedup"] for r in mine], "o-", color=color, label=controller.upper())
        pos = [sizes.index(n) + (i - (len(controllers) - 1) / 2) * width for n in nps]
        ax_eff.bar(pos, [100 * r["efficiency"] for r in mine], width, color=color, label=controller.upper())
        ax_comm.bar(pos, [100 * r["comm_share"] for r in mine], width, color=color, label=controller.upper())
    base = {c: min((r for r in rows if r["controller"] == c), key=lambda r: r["np"]) for c in controllers}
    per_rank = max(b["samples_per_s"] / b["speedup"] for b in base.values())
    ax_rate.plot(sizes, [per_rank * n for n in sizes], "k--", alpha=0.5, label="ideal (linear)")
    ax_speed.plot(sizes, sizes, "k--", alpha=0.5, label="ideal")
    ax_rate.set(xlabel="ranks (np)", ylabel="samples/s (all ranks)", title="throughput")
    ax_speed.set(xlabel="ranks (np)", ylabel="speedup vs 1 rank", title="speedup")
    ax_eff.set(ylabel="parallel efficiency (%)", title="efficiency = speedup / np", ylim=(0, 110))
    ax_comm.set(ylabel="share of epoch (%)", title="communication in flight (timeline)")
    for ax in (ax_eff, ax_comm):
        ax.set_xticks(range(len(sizes)), [f"np={n}" for n in sizes])
    for ax in (ax_rate, ax_speed):
        ax.set_xticks(sizes)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("scaling on this machine (batch per rank fixed)")
    return save_figure(fig, path)


def format_rows(rows: list) -> str:
    lines = [f"{'np':>3} {'controller':>10} {'samples/s':>10} {'speedup':>8} {'efficiency':>10} {'comm share':>11}"]
    for r in rows:
        lines.append(f"{r['np']:>3} {r['controller']:>10} {r['samples_per_s']:>10,.0f} {r['speedup']:>8.2f} "
                     f"{100 * r['efficiency']:>9.0f}% {100 * r['comm_share']:>10.1f}%")
    return "\n".join(lines)


def make_report(run_dirs: list, out: str) -> tuple:
    """(the PNG files written, the scaling rows when there are several runs)."""
    runs = [load_run(d) for d in run_dirs]
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror}") from None
    written = []
    for res in runs:
        written.append(plot_training(res, os.path.join(out, f"{res['name']}-training.png")))
        written.append(plot_time(res, os.path.join(out, f"{res['name']}-time.png")))
        written.append(plot_comm(res, os.path.join(out, f"{res['name']}-comm.png")))
        written.append(plot_ranks(res, os.path.join(out, f"{res['name']}-ranks.png")))
    rows = scaling_rows(runs) if len(runs) > 1 else []
    if rows:
        written.append(plot_scaling(rows, os.path.join(out, "scaling.png")))
    return [w for w in written if w], rows


@command_line("hvd_mlp.report")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (holding results.json)")
    parser.add_argument("--out", required=True, help="directory for the PNG figures")
    args = parser.parse_args(argv)
    written, rows = make_report(args.runs, args.out)
    if rows:
        print(format_rows(rows))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
