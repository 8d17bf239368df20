"""Each epoch's communication, from a run's timeline files: window or full, as per-epoch Comm records.

The one place that turns timeline figures into a run's per-epoch figures. The training calls it after every
epoch (window mode) or at the end (full mode), and `python -m hvd_mlp.timeline summarize RUN_DIR` calls the same
functions, so both print the same figures.
"""
import os

from hvd_mlp import results
from hvd_mlp.errors import UserError
from hvd_mlp.timeline import analysis, stragglers

FULL_FILE = "timeline.json"  # full mode: the whole run in one file
COUNTS = ("allreduce_bytes", "allreduce_ops")
NOTHING_SENT = {f"{c}_us": 0.0 for c in analysis.CLASSES} | {"allreduce_bytes": 0.0, "allreduce_ops": 0.0}


def window_file(run_dir: str, epoch: int) -> str:
    """Window mode: one file per epoch."""
    return os.path.join(run_dir, f"timeline-epoch{epoch}.json")


def last_timeline(run_dir: str, window_files: list) -> str:
    """The run's timeline for a view over time or per tensor: its last window's file (beside results.json, wherever
    the run directory was moved) in window mode, else its full-run file."""
    return os.path.join(run_dir, os.path.basename(window_files[-1])) if window_files else \
        os.path.join(run_dir, FULL_FILE)


def window_comm(epoch: results.Epoch) -> results.Comm:
    """The epoch's recorded window, scaled to the whole epoch: bytes and ops by its steps (every step moves the
    same), times by its duration (so a share of the window stays a share of the epoch: a window that ran slower
    than the epoch's average cannot claim more communication than the epoch had time). TimelineError if it has
    no figures."""
    window = epoch.timeline_window
    if epoch.world_size == 1:  # one rank communicates nothing: Horovod records no collective at all
        measured = dict(NOTHING_SENT)
    else:
        clip = [{"epoch": epoch.epoch, "start_unix_us": window.start_unix_us, "end_unix_us": window.end_unix_us}]
        measured = analysis.summarize(window.file, clip)["epochs"][0]
    per_step = epoch.steps / max(1, window.steps)
    window_s = (window.end_unix_us - window.start_unix_us) / 1e6
    per_time = epoch.epoch_time_s / window_s if window_s > 0 else per_step
    row = {k: measured[k] * (per_step if k in COUNTS else per_time) for k in NOTHING_SENT}
    row.update(epoch_time_s=epoch.epoch_time_s, scaled_from_steps=window.steps, scale=per_time)
    return results.from_dict(results.Comm, analysis.with_shares(row, epoch.comm_wait_s), "window")


def full_comm(path: str, epochs: list) -> list:
    """A full-run timeline clipped to each epoch: one Comm per epoch."""
    windows = [{"epoch": e.epoch, "start_unix_us": e.start_unix_us, "end_unix_us": e.end_unix_us,
                "epoch_time_s": e.epoch_time_s, "comm_wait_s": e.comm_wait_s} for e in epochs]
    report = analysis.summarize(path, windows)
    return [results.from_dict(results.Comm, row, path) for row in report["epochs"]]


def run_comm(run_dir: str, timeline_file: str = "") -> tuple:
    """(the epochs whose communication the run's timeline shows, each with its comm analysed afresh; what was read).
    Window mode: each epoch's window file, scaled to the epoch as the training did (only `timeline_file`'s epoch
    when one is named); full mode: the run's timeline.json (or `timeline_file`) clipped to every epoch."""
    record = results.read_finished(run_dir)
    windowed = [e for e in record.epochs if e.timeline_window]
    for e in windowed:  # the files sit beside results.json, wherever the run directory was moved
        e.timeline_window.file = os.path.join(os.path.dirname(record.path), os.path.basename(e.timeline_window.file))
    if timeline_file and windowed:
        named = os.path.exists(timeline_file)
        windowed = [e for e in windowed if named and os.path.exists(e.timeline_window.file)
                    and os.path.samefile(e.timeline_window.file, timeline_file)]
        if not windowed:  # not one of the run's window files: read it as a full timeline of the run
            return _clipped(record, timeline_file)
    if windowed:
        for e in windowed:
            e.comm = window_comm(e)
        return windowed, f"{len(windowed)} window file(s), each scaled to its epoch"
    full = timeline_file or os.path.join(os.path.dirname(record.path), FULL_FILE)
    if not os.path.exists(full):
        raise UserError(f"{run_dir} holds no timeline (train with --timeline-mode window or full)")
    return _clipped(record, full)


def _clipped(record: results.RunRecord, path: str) -> tuple:
    for e, comm in zip(record.epochs, full_comm(path, record.epochs)):
        e.comm = comm
    return record.epochs, path


def comm_text(e: results.Epoch) -> str:
    """An epoch line's communication part, the same in the training's output and in `timeline summarize`."""
    c = e.comm
    if c is None:
        return f" | timeline: {e.comm_error}" if e.comm_error else ""
    scaled = f", {c.scaled_from_steps}-step window scaled" if c.scaled_from_steps else ""
    return (f" | comm {100 * c.comm_share:.1f}% of epoch: allreduce {c.op_us / 1e6:.2f} s ({c.allreduce_ops:.0f} "
            f"tensors, {c.allreduce_bytes / 1e6:.0f} MB, {c.bandwidth_MBps:.0f} MB/s){scaled}")


def format_epochs(epochs: list, source: str) -> str:
    lines = [f"per-epoch communication from {source}:"]
    lines.append(f"{'epoch':>5} {'time s':>7} {'wait s':>7} " + " ".join(f"{k + ' ms':>13}" for k in analysis.CLASSES)
                 + f" {'MB':>8} {'MB/s':>7} {'comm %':>7} {'exposed s':>9} {'hidden s':>9}")
    for e in epochs:
        c = e.comm
        lines.append(f"{e.epoch:>5} {e.epoch_time_s:>7.2f} {e.comm_wait_s:>7.3f} "
                     + " ".join(f"{getattr(c, k + '_us') / 1e3:>13.1f}" for k in analysis.CLASSES)
                     + f" {c.allreduce_bytes / 1e6:>8.1f} {c.bandwidth_MBps:>7.0f} {100 * c.comm_share:>6.1f}%"
                     f" {c.exposed_s:>9.3f} {c.overlapped_s:>9.3f}")
    lines += [f"epoch {e.epoch}{comm_text(e)}{stragglers.straggler_text(e)}" for e in epochs]  # as training prints
    return "\n".join(lines)
