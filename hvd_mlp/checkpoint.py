"""Run directories, checkpoints and resuming: rank 0 reads and writes, every rank agrees on what happened."""
import glob
import os
import time

import horovod.torch as hvd

from hvd_mlp import storage
from hvd_mlp.config import to_dict
from hvd_mlp.errors import UserError

NAME = "checkpoint.pt"


def find(cfg, run_dir: str) -> str:
    """The checkpoint --resume names: a path, or for 'auto' the run directory's, else the newest under runs/."""
    if cfg.resume != "auto":
        return cfg.resume
    candidates = [os.path.join(run_dir, NAME)] if cfg.output_dir else \
        sorted(glob.glob(os.path.join("runs", "*", NAME)), key=os.path.getmtime)[-1:]
    return next((c for c in candidates if os.path.exists(c)), "")


def run_directory(cfg) -> str:
    if cfg.output_dir:
        return cfg.output_dir
    if cfg.resume and cfg.resume != "auto":
        return os.path.dirname(os.path.abspath(cfg.resume))  # a resumed run continues in its own directory
    resumed = find(cfg, "") if cfg.resume == "auto" else ""
    # the timestamp is read per process; only rank 0 ever writes here
    return os.path.dirname(resumed) if resumed else os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def load(cfg, run_dir: str, model, optimizer):
    """Rank 0 loads the checkpoint --resume names: (epochs done, their records, error or None). Other ranks load
    nothing; the caller broadcasts. Call after hvd.DistributedOptimizer wrapped the optimizer: the wrapper is a new
    optimizer object, so state loaded into the one before it would be lost."""
    path = find(cfg, run_dir) if cfg.resume else ""
    if not path or hvd.rank() != 0:  # HVD
        return 0, [], None
    try:
        ckpt = storage.read_checkpoint(path)
    except UserError as e:
        return 0, [], str(e)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    print(f"resumed from {path} after epoch {ckpt['epoch']}", flush=True)
    return ckpt["epoch"], ckpt["history"], None


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
        "config": to_dict(cfg), "history": history})
