"""Data-parallel MLP training with Horovod.

    horovodrun -np 4 python -m hvd_mlp.train [--dataset ...] [--timeline-mode] [--help]

Every Horovod call is marked `# HVD` so the distributed part stands out from plain PyTorch:
init -> threads -> sharded data -> LR x size -> broadcast parameters and optimizer state -> wrap the optimizer ->
average metrics with allreduce -> rank 0 prints and writes.
"""
import glob
import hashlib
import os
import socket
import sys
import time

import horovod
import horovod.torch as hvd
import torch
import torch.nn.functional as F

from hvd_mlp import data, storage
from hvd_mlp.config import UserError, launch_rank, parse_args, report_and_exit, to_dict
from hvd_mlp.model import MLP, parameter_count
from hvd_mlp.recorder import TimelineRecorder


def learning_rate(cfg, size: int, progress: float) -> float:
    """LR at `progress` epochs: linear warm-up from lr to lr x size, then StepLR. Adasum needs no x size."""
    peak = cfg.lr * (1 if cfg.adasum else size)
    lr = peak
    if progress < cfg.warmup_epochs:
        lr = cfg.lr + (peak - cfg.lr) * progress / cfg.warmup_epochs
    if cfg.lr_step:
        lr *= cfg.lr_gamma ** int(progress // cfg.lr_step)
    return lr


def now_us() -> int:
    return time.time_ns() // 1000


def log(*args):
    if hvd.rank() == 0:  # HVD: rank 0 speaks for the job
        print(*args, flush=True)


def load_data(cfg) -> data.Dataset:
    """Resolve --dataset; for MNIST one process per host downloads while the others wait."""
    name = cfg.dataset
    if name == "synthetic":
        return data.make_synthetic(cfg.synthetic_size, cfg.seed)
    if name in ("mnist", "auto") and data.mnist_missing(cfg.data_dir):
        why = data.download_mnist(cfg.data_dir) if hvd.local_rank() == 0 else ""  # HVD
        # HVD: a status allreduce doubles as the barrier: nobody reads the files before every download ended
        failed = hvd.allreduce(torch.tensor([int(bool(why))]), op=hvd.Sum, name="data.download_failed").item()
        if failed and name == "mnist":
            raise UserError(f"MNIST is not under {cfg.data_dir} and could not be downloaded ({why or 'on a peer'})")
        if failed:
            log(f"warning: MNIST not under {cfg.data_dir} and not downloadable; using --dataset mnist-sample")
            name = "mnist-sample"
    return data.load_mnist(cfg.data_dir) if name in ("mnist", "auto") else data.load_mnist_sample(cfg.seed)


def find_checkpoint(cfg, run_dir: str) -> str:
    if cfg.resume != "auto":
        return cfg.resume
    candidates = [os.path.join(run_dir, "checkpoint.pt")] if cfg.output_dir else \
        sorted(glob.glob(os.path.join("runs", "*", "checkpoint.pt")), key=os.path.getmtime)[-1:]
    return next((c for c in candidates if os.path.exists(c)), "")


def run_directory(cfg) -> str:
    if cfg.output_dir:
        return cfg.output_dir
    if cfg.resume and cfg.resume != "auto":
        return os.path.dirname(os.path.abspath(cfg.resume))  # a resumed run continues in its own directory
    resumed = find_checkpoint(cfg, "") if cfg.resume == "auto" else ""
    # the timestamp is read per process; only rank 0 ever writes here
    return os.path.dirname(resumed) if resumed else os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def train(cfg):
    run_dir = run_directory(cfg)
    if launch_rank() == 0:
        storage.make_run_dir(run_dir)
    recorder = TimelineRecorder.before_init(cfg.timeline_mode, run_dir, cfg.timeline_steps)
    # Open MPI busy-polls by default; with ranks >= cores its polling steals the core the other rank computes on
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")

    # ---------------------------------------------------------------------------------------- Horovod and machine
    hvd.init()  # HVD
    rank, size = hvd.rank(), hvd.size()  # HVD
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // hvd.local_size()))  # HVD: no oversubscription
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(hvd.local_rank())  # HVD: one GPU per local rank
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(cfg.seed)  # same init on every rank (and broadcast below makes sure of it)

    # ---------------------------------------------------------------------------------------- data, model, optimizer
    ds = load_data(cfg)
    train_x, train_y = ds.train_x.to(device), ds.train_y.to(device)
    val = data.val_shard(len(ds.val_x), rank, size)
    val_x, val_y = ds.val_x[val].to(device), ds.val_y[val].to(device)
    model = MLP((train_x.shape[1], *cfg.hidden, 10), cfg.dropout).to(device)
    opt_kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    optimizer = torch.optim.Adam(model.parameters(), **opt_kw) if cfg.optimizer == "adam" else \
        torch.optim.SGD(model.parameters(), momentum=cfg.momentum, **opt_kw)

    optimizer = hvd.DistributedOptimizer(  # HVD: gradients are averaged by allreduce during backward
        optimizer, named_parameters=model.named_parameters(),
        compression=hvd.Compression.fp16 if cfg.fp16_allreduce else hvd.Compression.none,
        op=hvd.Adasum if cfg.adasum else hvd.Average,
        backward_passes_per_step=cfg.backward_passes_per_step)

    # resume: after wrapping (the wrapper is a new optimizer object: state loaded before it would be lost)
    start_epoch, history = 0, []
    ckpt_path = find_checkpoint(cfg, run_dir) if cfg.resume else ""
    ckpt, error = None, None
    if ckpt_path and rank == 0:
        try:
            ckpt = storage.read_checkpoint(ckpt_path)
        except UserError as e:
            error = str(e)
    error = hvd.broadcast_object(error, root_rank=0, name="resume.error")  # HVD: every rank stops alike, no hang
    if error:
        raise UserError(error)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        print(f"resumed from {ckpt_path} after epoch {start_epoch}", flush=True)
    start_epoch = hvd.broadcast_object(start_epoch, root_rank=0, name="resume.epoch")  # HVD
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # HVD: every rank starts from rank 0's weights
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)  # HVD: ... and rank 0's optimizer state

    world = {"size": size, "local_size": hvd.local_size(),  # HVD
             "hosts": hvd.allgather_object(socket.gethostname(), name="world.hosts"),  # HVD
             "controller": "mpi" if hvd.mpi_enabled() else "gloo",  # HVD
             "horovod_version": horovod.__version__, "torch_version": torch.__version__, "device": device.type}
    results = {"config": to_dict(cfg), "world": world, "parameters": parameter_count(model),
               "dataset": {"name": ds.name, "train": len(ds.train_x), "val": len(ds.val_x)},
               "epochs": history, "summary": {}}
    steps_per_epoch = -(-(len(train_x) // size) // cfg.batch_size)
    if cfg.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    log(f"hvd_mlp: {size} ranks ({world['controller']}, {world['local_size']} per host, "
        f"{torch.get_num_threads()} threads each) | {ds.name}: {len(ds.train_x):,} train / {len(ds.val_x):,} val | "
        f"MLP {'-'.join(map(str, model.sizes))} ({results['parameters']:,} params) | "
        f"batch {cfg.batch_size}/rank x {size} | {steps_per_epoch} steps/epoch | run dir {run_dir}")

    # ---------------------------------------------------------------------------------------- training loop
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        torch.manual_seed(cfg.seed + 1000 * epoch + rank)  # dropout: per rank, and a resume replays it exactly
        idx = data.train_shard(len(train_x), rank, size, epoch, cfg.seed).to(device)
        shard_x, shard_y = train_x[idx], train_y[idx]  # one gather per epoch; batches below are views
        model.train()
        loss_sum = torch.zeros((), device=device)  # running sums stay tensors: no host sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        samples, comm_wait, compute = 0, 0.0, 0.0
        recorder.begin_epoch(epoch, steps_per_epoch)
        epoch_start_us, t_start = now_us(), time.perf_counter()
        for step in range(steps_per_epoch):
            recorder.before_step(step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, size, epoch - 1 + step / steps_per_epoch)
            xb = shard_x[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            yb = shard_y[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            # forward/backward; backward hooks start each gradient's allreduce as soon as it is ready (overlap)
            t_compute = time.perf_counter()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()  # torch >= 2 sets grads to None: no memset per step
            loss.backward()
            # the part of communication that backward did not hide: wait for every allreduce to finish
            t_wait = time.perf_counter()
            optimizer.synchronize()  # HVD
            t_step = time.perf_counter()
            with optimizer.skip_synchronize():  # HVD: already synchronised above
                optimizer.step()
            comm_wait += t_step - t_wait
            compute += (t_wait - t_compute) + (time.perf_counter() - t_step)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            samples += len(yb)
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log(f"  epoch {epoch} step {step + 1}/{steps_per_epoch} loss {loss.item():.4f}")
        epoch_time = time.perf_counter() - t_start
        epoch_end_us = now_us()
        window = recorder.end_epoch(epoch)

        # ------------------------------------------------------------------------------------ validation and metrics
        model.eval()
        with torch.no_grad():
            logits = model(val_x)
            val_loss_sum = F.cross_entropy(logits, val_y, reduction="sum")
            val_correct = (logits.argmax(1) == val_y).sum()
        # HVD: exact global metrics: allreduce sums and counts, then divide (not a mean of per-rank means)
        totals = hvd.allreduce(torch.stack([loss_sum.double().cpu(), correct.double().cpu(),
                                            torch.tensor(samples, dtype=torch.float64),
                                            val_loss_sum.double().cpu(), val_correct.double().cpu(),
                                            torch.tensor(len(val_y), dtype=torch.float64)]),
                               op=hvd.Sum, name="metrics")
        # HVD: the ranks' mean wait and compute time
        comm_wait_mean, compute_mean = hvd.allreduce(torch.tensor([comm_wait, compute]), op=hvd.Average,
                                                     name="timing").tolist()
        tr_loss, tr_correct, tr_n, va_loss, va_correct, va_n = totals.tolist()
        record = {"epoch": epoch, "start_unix_us": epoch_start_us, "end_unix_us": epoch_end_us,
                  "epoch_time_s": epoch_time, "samples": int(tr_n), "samples_per_s": tr_n / epoch_time,
                  "train_loss": tr_loss / tr_n, "train_acc": tr_correct / tr_n,
                  "val_loss": va_loss / va_n, "val_acc": va_correct / va_n,
                  "lr": optimizer.param_groups[0]["lr"], "comm_wait_s": comm_wait_mean,
                  "compute_s": compute_mean, "other_s": epoch_time - comm_wait_mean - compute_mean,
                  "steps": steps_per_epoch}
        if window:
            record["timeline_window"] = window
            record["comm"] = recorder.epoch_comm(record)
        history.append(record)
        log(f"epoch {epoch}/{cfg.epochs} | {epoch_time:.2f} s | {record['samples_per_s']:,.0f} samples/s | "
            f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
            f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} | "
            f"lr {record['lr']:.2e} | comm wait {comm_wait_mean:.2f} s{recorder.describe(record)}")

        # ------------------------------------------------------------------------------------ results and checkpoint
        if rank == 0:
            results["summary"] = summarize(history)
            storage.write_json(os.path.join(run_dir, "results.json"), results)
            if cfg.checkpoint_every and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs):
                storage.write_checkpoint(os.path.join(run_dir, "checkpoint.pt"), {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                    "config": to_dict(cfg), "history": history})

    # ---------------------------------------------------------------------------------------- finish
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    digests = hvd.allgather_object(digest, name="params.digest")  # HVD: proof that every rank holds the same model
    results["world"]["param_digests"] = digests
    hvd.shutdown()  # HVD: also closes a full timeline file, so it can be analysed below
    if rank == 0:
        recorder.finish(history)
        results["summary"] = summarize(history)
        storage.write_json(os.path.join(run_dir, "results.json"), results)
        print(f"done: {len(history)} epochs, final val acc {results['summary'].get('final_val_acc', 0):.4f}, "
              f"results in {os.path.join(run_dir, 'results.json')}", flush=True)


def summarize(history: list) -> dict:
    if not history:
        return {}
    steady = history[1:] or history  # the first epoch carries warm-up costs
    return {"epochs": len(history), "train_time_s": sum(e["epoch_time_s"] for e in history),
            "samples_per_s": sum(e["samples"] for e in steady) / sum(e["epoch_time_s"] for e in steady),
            "comm_wait_share": sum(e["comm_wait_s"] for e in steady) / sum(e["epoch_time_s"] for e in steady),
            "final_val_acc": history[-1]["val_acc"], "best_val_acc": max(e["val_acc"] for e in history)}


def main(argv=None):
    try:
        train(parse_args(argv))
    except UserError as e:
        report_and_exit("hvd_mlp.train", e)


if __name__ == "__main__":
    main(sys.argv[1:])
