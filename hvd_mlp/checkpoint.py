"""Run directories, checkpoints and resuming: rank 0 reads and writes, every rank agrees on what happened."""
import glob
import os
import time

import horovod.torch as hvd

from hvd_mlp import results, storage
from hvd_mlp.config import to_dict
from hvd_mlp.errors import UserError

NAME = "checkpoint.pt"
# What a checkpoint fixes: the model's shape, the optimizer state's layout, and the data the epochs were counted on.
# Anything else (more epochs, another LR, another world size) may change on resume; the changes are listed.
MUST_MATCH = ("dataset", "synthetic_size", "hidden", "optimizer", "seed")
FREE_TO_CHANGE = ("epochs", "resume", "output_dir", "overwrite", "log_every", "checkpoint_every", "timeline_mode",
                  "timeline_steps", "device", "threads", "data_dir")


def differences(saved: dict, cfg, keys) -> list:
    """'name saved -> now' for each setting in keys whose value differs."""
    now = to_dict(cfg)
    return [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in keys if k in now and saved.get(k) != now[k]]


def find(cfg, run_dir: str) -> str:
    """The checkpoint --resume names: a path, or for 'auto' the run directory's, else the newest under runs/ whose
    model, optimizer and data are this run's (an unrelated newer run is passed over, not resumed). Once
    run_directory() has chosen the run directory, 'auto' is that directory's checkpoint: no second scan."""
    if cfg.resume != "auto":
        return cfg.resume
    if run_dir:
        path = os.path.join(run_dir, NAME)
        return path if os.path.exists(path) else ""
    for path in sorted(glob.glob(os.path.join("runs", "*", NAME)), key=os.path.getmtime, reverse=True):
        try:
            saved = storage.read_checkpoint(path).get("config", {})
        except UserError:
            continue
        if not differences(saved, cfg, MUST_MATCH):
            return path
    return ""


def run_directory(cfg) -> str:
    if cfg.output_dir:
        return cfg.output_dir
    if cfg.resume and cfg.resume != "auto":
        return os.path.dirname(os.path.abspath(cfg.resume))  # a resumed run continues in its own directory
    resumed = find(cfg, "") if cfg.resume == "auto" else ""
    # the timestamp is read per process; only rank 0 ever writes here
    return os.path.dirname(resumed) if resumed else os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def overwrite_refusal(cfg, run_dir: str) -> str:
    """Why this run may not use run_dir, or "": a run directory that already holds a run is continued (--resume)
    or replaced on purpose (--overwrite)."""
    held = [f for f in (results.FILE, NAME) if os.path.exists(os.path.join(run_dir, f))]
    if held and not cfg.resume and not cfg.overwrite:
        return (f"{run_dir} already holds a run ({', '.join(held)}); continue it with --resume auto, "
                "replace it with --overwrite, or choose another --output-dir")
    return ""


def load(cfg, run_dir: str, model, optimizer):
    """Rank 0 loads the checkpoint --resume names: (epochs done, their records, error or None). Other ranks load
    nothing; the caller broadcasts. Call after hvd.DistributedOptimizer wrapped the optimizer: the wrapper is a new
    optimizer object, so state loaded into the one before it would be lost."""
    path = find(cfg, run_dir) if cfg.resume else ""
    if not path or hvd.rank() != 0:  # HVD
        return 0, [], None
    try:
        ckpt = storage.read_checkpoint(path)
        mismatch = differences(ckpt.get("config", {}), cfg, MUST_MATCH)
        if mismatch:
            raise UserError(f"checkpoint {path} was written by another model, optimizer or data: "
                            f"{'; '.join(mismatch)} (start a new run, or resume with the checkpoint's settings)")
        history = [results.from_dict(results.Epoch, h, f"checkpoint {path}: history") for h in ckpt["history"]]
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except UserError as e:
        return 0, [], str(e)
    except (RuntimeError, ValueError, KeyError) as e:  # state dicts that do not fit despite matching settings
        return 0, [], f"checkpoint {path} does not fit this model ({str(e).splitlines()[0][:200]})"
    changed = differences(ckpt["config"], cfg, [k for k in ckpt["config"] if k not in MUST_MATCH + FREE_TO_CHANGE])
    print(f"resumed from {path} after epoch {ckpt['epoch']}"
          + (f" (settings changed: {'; '.join(changed)})" if changed else ""), flush=True)
    return ckpt["epoch"], history, None


def resume(cfg, run_dir: str, model, optimizer):
    """load() on rank 0, then every rank agrees: on the error (all stop alike, nobody hangs) or the epoch."""
    done, history, error = load(cfg, run_dir, model, optimizer)
    error = hvd.broadcast_object(error, root_rank=0, name="resume.error")  # HVD
    if error:
        raise UserError(error)
    return hvd.broadcast_object(done, root_rank=0, name="resume.epoch"), history  # HVD


def save(run_dir: str, cfg, model, optimizer, epoch: int, history: list):
    storage.write_checkpoint(os.path.join(run_dir, NAME), {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "config": to_dict(cfg), "history": [results.to_dict(e) for e in history]})
