"""Data-parallel MLP training with Horovod.

    horovodrun -np 4 python -m hvd_mlp.train [--dataset ...] [--timeline-mode] [--help]
    horovodrun -np 2 --min-np 1 --max-np 4 --host-discovery-script scripts/discover_hosts.sh \
        python -m hvd_mlp.train --elastic

Every Horovod call is marked `# HVD` so the distributed part stands out from plain PyTorch:
init -> threads -> data -> LR x size -> wrap the optimizer -> broadcast parameters and optimizer state ->
per-epoch shards -> average metrics with allreduce -> rank 0 prints and writes.
"""
import hashlib
import os
import socket
import sys
import time
from types import SimpleNamespace

import horovod
import horovod.torch as hvd
import torch
import torch.nn.functional as F
from horovod.common.exceptions import HorovodInternalError

from hvd_mlp import checkpoint, data, storage
from hvd_mlp.config import parse_args, to_dict
from hvd_mlp.errors import UserError, command_line, exit_with, launch_rank
from hvd_mlp.model import MLP, parameter_count
from hvd_mlp.recorder import TimelineRecorder
from hvd_mlp.timeline import now_us


def learning_rate(cfg, size: int, progress: float) -> float:
    """LR at `progress` epochs: linear warm-up from lr to lr x size, then StepLR. Adasum needs no x size."""
    peak = cfg.lr * (1 if cfg.adasum else size)
    lr = peak
    if progress < cfg.warmup_epochs:
        lr = cfg.lr + (peak - cfg.lr) * progress / cfg.warmup_epochs
    if cfg.lr_step:
        lr *= cfg.lr_gamma ** int(progress // cfg.lr_step)
    return lr


def log(*args):
    if hvd.rank() == 0:  # HVD: rank 0 speaks for the job
        print(*args, flush=True)


def load_data(cfg) -> data.Dataset:
    """Resolve --dataset; for MNIST one process per host downloads while the others wait."""
    name = cfg.dataset
    if name == "synthetic":
        return data.make_synthetic(cfg.synthetic_size, cfg.seed)
    if name in ("mnist", "auto") and data.mnist_missing(cfg.data_dir):
        if cfg.elastic:  # no collective may run before the elastic state is synced (see train()): no download
            failed, why = 1, "elastic runs do not download; fetch MNIST once with a normal run"
        else:
            why = data.download_mnist(cfg.data_dir) if hvd.local_rank() == 0 else ""  # HVD
            # HVD: a status allreduce doubles as the barrier: nobody reads the files before every download ended
            failed = hvd.allreduce(torch.tensor([int(bool(why))]), op=hvd.Sum, name="data.download_failed").item()
        if failed and name == "mnist":
            raise UserError(f"MNIST is not under {cfg.data_dir} and could not be downloaded ({why or 'on a peer'})")
        if failed:
            log(f"warning: MNIST not under {cfg.data_dir} and not downloadable; using --dataset mnist-sample")
            name = "mnist-sample"
    return data.load_mnist(cfg.data_dir) if name in ("mnist", "auto") else data.load_mnist_sample(cfg.seed)


def train(cfg):
    run_dir = checkpoint.run_directory(cfg)
    if launch_rank() == 0:
        storage.make_run_dir(run_dir)
    recorder = TimelineRecorder.before_init(cfg.timeline_mode, run_dir, cfg.timeline_steps)
    # Open MPI busy-polls by default; with ranks >= cores its polling steals the core the other rank computes on
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    # Horovod's background thread looks for ready tensors every 1 ms by default: up to 1 ms of idle wait per step,
    # when a whole step computes in ~2 ms here. Under MPI 0.1 ms gave +10% samples/s; under Gloo (horovodrun sets
    # its rendezvous address) each cycle is a TCP round and 0.1 ms cost 23% instead (docs/performance.md)
    if "HOROVOD_GLOO_RENDEZVOUS_ADDR" not in os.environ:
        os.environ.setdefault("HOROVOD_CYCLE_TIME", "0.1")

    # ---------------------------------------------------------------------------------------- Horovod and machine
    hvd.init()  # HVD
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(hvd.local_rank())  # HVD: one GPU per local rank
    device = torch.device("cuda" if use_cuda else "cpu")
    # Adam's moments of never-active weights decay into denormal floats, which x86 computes ~100x slower:
    # flushing them to zero took the fused Adam step from 2.6 to 0.45 ms on one core (docs/performance.md)
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)  # same init on every rank (and broadcast below makes sure of it)

    # ---------------------------------------------------------------------------------------- data, model, optimizer
    ds = load_data(cfg)
    model = MLP((ds.train_x.shape[1], *cfg.hidden, 10), cfg.dropout).to(device)
    # fused: one kernel for all parameters (Adam 0.45 ms a step instead of 1.33 on one core, docs/performance.md)
    opt_kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "fused": cfg.fused_optimizer}
    optimizer = torch.optim.Adam(model.parameters(), **opt_kw) if cfg.optimizer == "adam" else \
        torch.optim.SGD(model.parameters(), momentum=cfg.momentum, **opt_kw)
    optimizer = hvd.DistributedOptimizer(  # HVD: gradients are averaged by allreduce during backward
        optimizer, named_parameters=model.named_parameters(),
        compression=hvd.Compression.fp16 if cfg.fp16_allreduce else hvd.Compression.none,
        op=hvd.Adasum if cfg.adasum else hvd.Average,
        backward_passes_per_step=cfg.backward_passes_per_step,
        groups=cfg.allreduce_groups or None)  # HVD: k groups, each reduced as one once all of it is ready
    if cfg.elastic:
        # no collective before hvd.elastic.run: a worker joining later would run it while the others sync state;
        # the state's sync on entry broadcasts rank 0's model, optimizer, epoch and records instead
        done, history, error = checkpoint.load(cfg, run_dir, model, optimizer)
        if error:
            raise UserError(error)
    else:
        done, history = checkpoint.resume(cfg, run_dir, model, optimizer)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # HVD: every rank starts from rank 0's weights
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)  # HVD: ... and rank 0's optimizer state

    results = {"config": to_dict(cfg), "parameters": parameter_count(model),
               "dataset": {"name": ds.name, "train": len(ds.train_x), "val": len(ds.val_x)}, "summary": {}}
    run = SimpleNamespace(cfg=cfg, run_dir=run_dir, device=device, recorder=recorder, results=results,
                          train_x=ds.train_x.to(device), train_y=ds.train_y.to(device),
                          val_x=ds.val_x.to(device), val_y=ds.val_y.to(device))
    # what an elastic job carries across world changes; commit() snapshots it, a failure rolls back to it
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, epoch=done + 1, samples_done=0,  # HVD
                                   history=history, world_changes=[])
    if cfg.elastic:
        hvd.elastic.run(train_epochs)(state, run)  # HVD: re-entered from the last commit after each world change
    else:
        train_epochs(state, run)

    # ---------------------------------------------------------------------------------------- finish
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    results["world"]["param_digests"] = hvd.allgather_object(digest, name="params.digest")  # HVD: all equal?
    rank = hvd.rank()  # HVD
    hvd.shutdown()  # HVD: also closes a full timeline file, so it can be analysed below
    if rank == 0:
        recorder.finish(state.history)
        write_results(run, state)
        print(f"done: {len(state.history)} epochs, final val acc {results['summary'].get('final_val_acc', 0):.4f}, "
              f"results in {os.path.join(run_dir, 'results.json')}", flush=True)


def describe_world(run, state) -> dict:
    """The world as it is now (elastic: it changes); a change is logged in state.world_changes."""
    size = hvd.size()  # HVD
    world = {"size": size, "local_size": hvd.local_size(),  # HVD
             "hosts": hvd.allgather_object(socket.gethostname(), name="world.hosts"),  # HVD
             "controller": "mpi" if hvd.mpi_enabled() else "gloo",  # HVD
             "horovod_version": horovod.__version__, "torch_version": torch.__version__, "device": run.device.type}
    if not state.world_changes or state.world_changes[-1]["size"] != size:
        state.world_changes.append({"epoch": state.epoch, "samples_done": state.samples_done, "size": size,
                                    "hosts": world["hosts"], "unix_us": now_us()})
    return world


def train_epochs(state, run):
    """The training loop. Elastic: re-entered after a world change, from state's last commit."""
    cfg, model, optimizer, device = run.cfg, state.model, state.optimizer, run.device
    run.results["world"] = describe_world(run, state)
    rank, size = hvd.rank(), hvd.size()  # HVD: read on every (re)entry: an elastic world may have changed
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // hvd.local_size()))  # HVD: cores / ranks
    n = len(run.train_x)
    epoch_samples = min(n, cfg.max_steps * cfg.batch_size * size) if cfg.max_steps else n
    log(f"hvd_mlp: {size} ranks ({run.results['world']['controller']}, {hvd.local_size()} per host, "  # HVD
        f"{torch.get_num_threads()} threads each) | {run.results['dataset']['name']}: {n:,} train / "
        f"{len(run.val_x):,} val | MLP {'-'.join(map(str, model.sizes))} ({run.results['parameters']:,} params) | "
        f"batch {cfg.batch_size}/rank x {size} | run dir {run.run_dir}")

    while state.epoch <= cfg.epochs:
        epoch, resumed_at = state.epoch, state.samples_done  # elastic: > 0 when the world changed mid-epoch
        torch.manual_seed(cfg.seed + 1000 * epoch + rank)  # dropout: per rank, and a resume replays it exactly
        idx = data.train_shard(n, rank, size, epoch, cfg.seed, cfg.batch_size, state.samples_done, epoch_samples)
        shard_x, shard_y = run.train_x[idx.to(device)], run.train_y[idx.to(device)]  # one gather; batches are views
        steps = -(-len(idx) // cfg.batch_size)
        model.train()
        loss_sum = torch.zeros((), device=device)  # running sums stay tensors: no host sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        samples, comm_wait, compute = 0, 0.0, 0.0
        run.recorder.begin_epoch(epoch, steps)
        epoch_start_us, t_start = now_us(), time.perf_counter()
        for step in range(steps):
            run.recorder.before_step(step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, size, epoch - 1 + state.samples_done / epoch_samples)
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
            state.samples_done += len(yb) * size
            if cfg.elastic and (step + 1) % cfg.commit_every == 0:
                state.commit()  # HVD: snapshot, and raise here if hosts were added or removed
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log(f"  epoch {epoch} step {step + 1}/{steps} loss {loss.item():.4f}")
        epoch_time, epoch_end_us = time.perf_counter() - t_start, now_us()
        window = run.recorder.end_epoch()

        # ------------------------------------------------------------------------------------ validation and metrics
        model.eval()
        val = data.val_shard(len(run.val_x), rank, size)
        with torch.no_grad():
            logits = model(run.val_x[val])
            val_loss_sum = F.cross_entropy(logits, run.val_y[val], reduction="sum")
            val_correct = (logits.argmax(1) == run.val_y[val]).sum()
        # HVD: exact global metrics: allreduce sums and counts, then divide (not a mean of per-rank means)
        totals = hvd.allreduce(torch.tensor([loss_sum.item(), correct.item(), samples, val_loss_sum.item(),
                                             val_correct.item(), len(run.val_y[val])], dtype=torch.float64),
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
                  "steps": steps, "world_size": size, "resumed_at_samples": resumed_at}
        if window:
            record["timeline_window"] = window
            record["comm"] = run.recorder.epoch_comm(record)
        state.history.append(record)
        log(f"epoch {epoch}/{cfg.epochs} | {epoch_time:.2f} s | {record['samples_per_s']:,.0f} samples/s | "
            f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
            f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} | "
            f"lr {record['lr']:.2e} | comm wait {comm_wait_mean:.2f} s{run.recorder.describe(record)}")

        # ------------------------------------------------------------------------------------ results and checkpoint
        state.epoch, state.samples_done = epoch + 1, 0
        if rank == 0:
            write_results(run, state)
            if cfg.checkpoint_every and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs):
                checkpoint.save(run.run_dir, cfg, model, optimizer, epoch, state.history)
        if cfg.elastic:
            state.commit()  # HVD: an epoch boundary is always a safe point to come back to


def write_results(run, state):
    run.results.update(epochs=state.history, world_changes=state.world_changes, summary=summarize(state.history))
    storage.write_json(os.path.join(run.run_dir, "results.json"), run.results)


def summarize(history: list) -> dict:
    if not history:
        return {}
    steady = history[1:] or history  # the first epoch carries warm-up costs
    return {"epochs": len(history), "train_time_s": sum(e["epoch_time_s"] for e in history),
            "samples_per_s": sum(e["samples"] for e in steady) / sum(e["epoch_time_s"] for e in steady),
            "comm_wait_share": sum(e["comm_wait_s"] for e in steady) / sum(e["epoch_time_s"] for e in steady),
            "final_val_acc": history[-1]["val_acc"], "best_val_acc": max(e["val_acc"] for e in history)}


@command_line("hvd_mlp.train")
def main(argv=None):
    try:
        train(parse_args(argv))
    except HorovodInternalError as e:  # a peer died or hung (non-elastic): say so once per surviving rank
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        exit_with("hvd_mlp.train", f"rank {launch_rank()} lost its peers ({first_line[:160]}); continue from the "
                  "last checkpoint with --resume auto", status=1, every_rank=True)


if __name__ == "__main__":
    main(sys.argv[1:])
