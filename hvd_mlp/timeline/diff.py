"""Two runs side by side: what changed in their communication, per step, per epoch and per tensor.

A and B are each a timeline file or an hvd_mlp run directory. Figures are per step, since two runs seldom have the
same number of steps: a run directory's results.json says its steps (its warm-up epoch left out, window files scaled
to their epochs as the training did); for a bare timeline, the busiest gradient tensor's allreduce count is its
step count (every step reduces every gradient once).
"""
import os

from hvd_mlp import results
from hvd_mlp.timeline.analysis import CLASSES, summarize
from hvd_mlp.timeline.epochs import last_timeline, run_comm

PER_STEP = [(f"{c} ms", f"{c}_us", 1e-3) for c in CLASSES] + [
    ("allreduce MB", "allreduce_bytes", 1e-6), ("allreduce ops", "allreduce_ops", 1.0)]
PER_EPOCH = ("comm_share", "exposed_s", "bandwidth_MBps")


def profile(path: str, top: int) -> dict:
    """One side: its per-step figures, per-epoch figures (a run) and each tensor's op time per step."""
    if os.path.isdir(path):
        epochs, source = run_comm(path)
        steady = results.steady([e for e in epochs if e.comm])
        steps = sum(e.steps for e in steady)
        totals = {key: sum(getattr(e.comm, key) for e in steady) for _, key, _ in PER_STEP}
        per_epoch = {e.epoch: {k: getattr(e.comm, k) for k in PER_EPOCH} for e in epochs if e.comm}
        report = summarize(last_timeline(path, [e.timeline_window.file for e in epochs if e.timeline_window]),
                           top=top)
        label = f"{path} ({source})"
    else:
        report = summarize(path, top=top)
        totals, per_epoch, steps, label = report["total"], {}, _busiest(report), path
    tensor_steps = max(1, _busiest(report))
    row = {key: totals[key] / max(1, steps) for _, key, _ in PER_STEP}
    row["bandwidth_MBps"] = totals["allreduce_bytes"] / totals["collective_us"] if totals["collective_us"] else 0.0
    return {"label": label, "steps": steps, "per_step": row, "epochs": per_epoch,
            "tensors": {t["name"]: t["time_us"] / tensor_steps for t in report["tensors"]}}


def _busiest(report: dict) -> int:
    return max((t["ops"] for t in report["tensors"] if "allreduce" in t["name"]), default=0)


def diff(a: str, b: str, top: int = 10) -> dict:
    """Rows of (name, A, B, change B - A, ratio B / A) for the per-step figures, the epochs both runs have, and the
    `top` tensors whose time per step changed most."""
    pa, pb = profile(a, top), profile(b, top)
    per_step = [_row(label, pa["per_step"][key] * unit, pb["per_step"][key] * unit) for label, key, unit in PER_STEP]
    per_step.append(_row("bandwidth MB/s", pa["per_step"]["bandwidth_MBps"], pb["per_step"]["bandwidth_MBps"]))
    epochs = [_row(f"epoch {n} {k}", pa["epochs"][n][k], pb["epochs"][n][k])
              for n in sorted(pa["epochs"].keys() & pb["epochs"].keys()) for k in PER_EPOCH]
    tensors = [_row(n, pa["tensors"].get(n, 0.0) / 1e3, pb["tensors"].get(n, 0.0) / 1e3)
               for n in pa["tensors"].keys() | pb["tensors"].keys()]
    tensors.sort(key=lambda r: -abs(r["change"]))
    return {"a": pa["label"], "b": pb["label"], "steps": [pa["steps"], pb["steps"]], "per_step": per_step,
            "epochs": epochs, "tensors": tensors[:top]}


def _row(name: str, a: float, b: float) -> dict:
    return {"name": name, "a": a, "b": b, "change": b - a, "ratio": b / a if a else None}


def format_diff(d: dict) -> str:
    lines = [f"A: {d['a']}, {d['steps'][0]} steps", f"B: {d['b']}, {d['steps'][1]} steps"]
    for title, rows in (("per step", d["per_step"]), ("per epoch", d["epochs"]),
                        ("tensor op ms per step (largest changes)", d["tensors"])):
        if rows:
            lines.append(f"{title:<40} {'A':>10} {'B':>10} {'change':>10} {'B/A':>7}")
            lines += [f"  {r['name'][:38]:<38} {r['a']:>10.3f} {r['b']:>10.3f} {r['change']:>+10.3f} "
                      + (f"{r['ratio']:>6.2f}x" if r["ratio"] is not None else f"{'-':>7}") for r in rows]
    return "\n".join(lines)
