"""Data-parallel MLP training with Horovod.

    horovodrun -np 4 python -m hvd_mlp.train [--dataset ...] [--timeline-mode] [--help]
    HVD_MLP_HOSTFILE=hostfiles/elastic-local horovodrun -np 2 --min-np 1 --max-np 2 --network-interfaces lo \
        --host-discovery-script scripts/discover_hosts.sh python -m hvd_mlp.train --elastic --threads 1

Every Horovod call is marked `# HVD` so the distributed part stands out from plain PyTorch:
init -> threads -> data -> LR x size -> wrap the optimizer -> broadcast parameters and optimizer state ->
per-epoch shards -> average metrics with allreduce -> rank 0 prints and writes.
"""
import hashlib
import math
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

import horovod
import horovod.torch as hvd
import torch
import torch.nn.functional as F
from horovod.common.exceptions import HorovodInternalError

from hvd_mlp import checkpoint, data, results, storage
from hvd_mlp.config import Config, parse_args, to_dict
from hvd_mlp.errors import UserError, command_line, exit_with, launch_rank
from hvd_mlp.model import MLP, parameter_count, training_bytes
from hvd_mlp.recorder import TimelineRecorder
from hvd_mlp.steptrace import StepTimes
from hvd_mlp.timeline import TimelineError, epochs as epochcomm, now_us, stragglers


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


def load_data(cfg) -> data.ResidentData:
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


@dataclass
class Run:
    """What the loop needs besides the elastic state: settings, where to write, the data on its device."""
    cfg: Config
    run_dir: str
    device: torch.device
    recorder: TimelineRecorder
    record: results.RunRecord
    dataset: data.ResidentData
    reached: tuple = (0, 0)  # (epoch, steps done) this process got to: a rollback to the last commit does not undo it
    checkpointed: int = 0  # the last epoch this process wrote a checkpoint of


def check_launch(cfg):
    """Settings that only fail later, or silently, under the wrong launch: refuse them up front."""
    if cfg.elastic and os.environ.get("HOROVOD_ELASTIC") != "1":
        raise UserError("--elastic needs an elastic launch: horovodrun --min-np N --max-np M "
                        "--host-discovery-script SCRIPT ... (this job was started without them, so it would not "
                        "survive a lost worker; docs/reliability.md)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device here (use --device cpu or auto)")


def train(cfg):
    check_launch(cfg)
    run_dir = checkpoint.run_directory(cfg)
    # every rank: all stop alike, none waits for a peer that left. Elastic: a worker that joins later finds the
    # job's own files there, so the verdict that counts is rank 0's at the start, synced with the state (a joining
    # worker is never rank 0)
    refusal = checkpoint.overwrite_refusal(cfg, run_dir)
    if refusal and not (cfg.elastic and launch_rank() != 0):
        raise UserError(refusal)
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
    try:
        hvd.init()  # HVD
    except ValueError as e:  # Horovod's "initialization failed": e.g. a peer never joined (it stopped first)
        raise UserError(f"Horovod did not start: {str(e).splitlines()[0]}") from None
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(hvd.local_rank())  # HVD: one GPU per local rank
    device = torch.device("cuda" if use_cuda else "cpu")
    if cfg.bind_cores:  # np=2: 1.3-4.3x the samples/s unpinned, MPI and Gloo (performance.md)
        bind_to_cores(hvd.local_rank(), hvd.local_size())  # HVD
    # Adam's moments of never-active weights decay into denormal floats, which x86 computes ~100x slower:
    # flushing them to zero took the fused Adam step from 2.6 to 0.45 ms on one core (docs/performance.md)
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)  # same init on every rank (and broadcast below makes sure of it)

    # ---------------------------------------------------------------------------------------- data, model, optimizer
    ds = load_data(cfg)
    sizes = (ds.train_x.shape[1], *cfg.hidden, data.NUM_CLASSES)
    data.check_fits(training_bytes(sizes, cfg.optimizer), f"the model {'-'.join(map(str, sizes))}",
                    hvd.local_size())  # HVD
    model = MLP(sizes, cfg.dropout).to(device)
    # fused: one kernel for all parameters (Adam 0.45 ms a step instead of 1.33 on one core, docs/performance.md)
    opt_kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "fused": cfg.fused_optimizer}
    optimizer = torch.optim.Adam(model.parameters(), **opt_kw) if cfg.optimizer == "adam" else \
        torch.optim.SGD(model.parameters(), momentum=cfg.momentum, **opt_kw)
    optimizer = hvd.DistributedOptimizer(  # HVD: gradients are summed by allreduce during backward
        optimizer, named_parameters=model.named_parameters(),
        compression=hvd.Compression.fp16 if cfg.fp16_allreduce else hvd.Compression.none,
        # a sum of gradients already divided by the world size (train_step) is their average; Average would have
        # Horovod scale the summed buffer afterwards, a scalar loop that took 7% of the CPU (docs/performance.md)
        op=hvd.Adasum if cfg.adasum else hvd.Sum,
        backward_passes_per_step=cfg.backward_passes_per_step,
        # HVD: k groups, each reduced as one once all of it is ready. Not elastic: with groups the constructor
        # broadcasts the parameter order, a collective that a joining worker would run while the others sync the
        # state, and both would wait forever (docs/reliability.md)
        groups=None if cfg.elastic else cfg.allreduce_groups or None)
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

    record = results.RunRecord(config=to_dict(cfg), parameters=parameter_count(model), world=None,  # set by the loop
                               dataset=results.DatasetInfo(ds.name, len(ds.train_x), len(ds.val_x)))
    run = Run(cfg, run_dir, device, recorder, record, data.ResidentData(
        ds.name, ds.train_x.to(device), ds.train_y.to(device), ds.val_x.to(device), ds.val_y.to(device)))
    # what an elastic job carries across world changes; commit() snapshots it, a failure rolls back to it
    state = hvd.elastic.TorchState(model=model, optimizer=optimizer, epoch=done + 1, samples_done=0,  # HVD
                                   steps_done=0, history=history, world_changes=[], run_dir=run_dir,
                                   refusal=refusal)
    if cfg.elastic:
        hvd.elastic.run(train_epochs)(state, run)  # HVD: re-entered from the last commit after each world change
    else:
        train_epochs(state, run)

    # ---------------------------------------------------------------------------------------- finish
    rank = hvd.rank()  # HVD
    hvd.shutdown()  # HVD: also closes a full timeline file, so it can be analysed below
    if rank == 0:
        if recorder.full_file and state.history:
            analyse_full_timeline(recorder.full_file, state.history)
        save_record(run, state)
        last = state.history[-1].epoch if state.history else 0
        if cfg.checkpoint_every and last and run.checkpointed != last:  # rank 0 changed (elastic) before writing it
            checkpoint.save(run.run_dir, cfg, model, optimizer, last, state.history)
        print(f"done: {len(state.history)} epochs, final val acc {record.summary.final_val_acc:.4f}, "
              f"results in {os.path.join(run.run_dir, results.FILE)}", flush=True)


def bind_to_cores(local_rank: int, local_size: int) -> list:
    """Pin every thread of this rank (Horovod's and MPI's, started by hvd.init(); torch's, started later, inherit)
    to its own share, cores / ranks, of the cores this process may use (ranks outnumbering the cores: one core each,
    round robin). Unpinned, two ranks' compute and background threads migrate across both cores and preempt each
    other. A lone rank keeps every core, even with one torch thread: pinned to one, its background thread took
    turns with its compute (1.2-1.85x slower, performance.md). Returns the cores."""
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // local_size
    mine = set(cores[local_rank * share:(local_rank + 1) * share] if share else [cores[local_rank % len(cores)]])
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), mine)
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(mine)


def describe_world(run: Run, state) -> results.World:
    """The world as it is now (elastic: it changes); a change is logged in state.world_changes and printed."""
    size = hvd.size()  # HVD
    # launcher's host name (elastic: the discovery's), machine name, progress: one gather, the same answer everywhere
    ranks = hvd.allgather_object((os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname(), socket.gethostname(),
                                  run.reached), name="world.hosts")  # HVD
    world = results.World(size=size, local_size=hvd.local_size(), hosts=[r[1] for r in ranks],  # HVD
                          controller="mpi" if hvd.mpi_enabled() else "gloo",  # HVD
                          horovod_version=horovod.__version__, torch_version=torch.__version__,
                          device=run.device.type)
    hosts, before = [r[0] for r in ranks], state.world_changes[-1] if state.world_changes else None
    if before and before.size == size and sorted(before.hosts) == sorted(hosts):
        return world  # re-entered without a change (e.g. the discovery dropped a host already gone)
    reached = max((r[2][1] for r in ranks if r[2][0] == state.epoch), default=state.steps_done)
    change = results.WorldChange(epoch=state.epoch, samples_done=state.samples_done, size=size, hosts=hosts,
                                 unix_us=now_us(), previous_size=before.size if before else 0,
                                 step=max(reached, state.steps_done),
                                 rolled_back_steps=max(0, reached - state.steps_done))
    if before:
        change.lost_hosts = list((Counter(before.hosts) - Counter(hosts)).elements())
        change.added_hosts = list((Counter(hosts) - Counter(before.hosts)).elements())
        log(world_line(change))
    state.world_changes.append(change)
    return world


def world_line(c: results.WorldChange) -> str:
    """world: 2 -> 1 ranks (lost host node2) at epoch 3, step 41; rolled back to the commit 7 steps earlier"""
    what = "; ".join(f"{verb} host{'s' if len(set(names)) > 1 else ''} {', '.join(sorted(set(names)))}"
                     for verb, names in (("lost", c.lost_hosts), ("added", c.added_hosts)) if names)
    line = f"world: {c.previous_size} -> {c.size} ranks ({what}) at epoch {c.epoch}, step {c.step}"
    back = c.rolled_back_steps
    return line + (f"; rolled back to the commit {back} step{'s' if back > 1 else ''} earlier" if back else "")


def train_step(model, optimizer, micro_batches: list, adasum: bool) -> tuple:
    """One optimizer step over [(x, y)] micro-batches: more than one with --backward-passes-per-step, whose
    gradients add up locally; Horovod allreduces once, after the last backward.
    Returns (loss sum, correct count, samples, StepTimes: when it started, handed its gradients over, had them
    back, and ended)."""
    t_compute = time.perf_counter()
    optimizer.zero_grad()  # torch >= 2 sets grads to None: no memset per step
    loss_sum, correct, samples = 0.0, 0, 0
    # with accumulation the mean over the micro-batches is the gradient of their union; dividing by the world size
    # here makes Horovod's sum the average over the ranks (Adasum combines the ranks' gradients its own way)
    shares = len(micro_batches) * (1 if adasum else hvd.size())  # HVD: the world's size now (elastic: it changes)
    for xb, yb in micro_batches:
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        (loss / shares).backward()  # backward hooks start each gradient's allreduce as soon as it is ready
        t_wait = time.perf_counter()  # after the last backward, every gradient hook has handed its tensor over
        loss_sum += loss.detach() * len(yb)  # running sums stay tensors: no host sync per step
        correct += (logits.argmax(1) == yb).sum()
        samples += len(yb)
    if adasum:
        optimizer.step()  # HVD: Adasum combines the ranks' updates inside step(); its wait cannot be split off
        t_step = time.perf_counter()
    else:
        optimizer.synchronize()  # HVD: the communication backward did not hide: wait for every allreduce
        t_step = time.perf_counter()
        with optimizer.skip_synchronize():  # HVD: already synchronised above
            optimizer.step()
    return loss_sum, correct, samples, StepTimes(t_compute, t_wait, t_step, time.perf_counter())


def evaluate(model, x, y) -> tuple:
    """(loss sum, correct count, samples) of this rank's validation shard."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        return F.cross_entropy(logits, y, reduction="sum").item(), (logits.argmax(1) == y).sum().item(), len(y)


def train_epochs(state, run: Run):
    """The training loop. Elastic: re-entered after a world change, from state's last commit."""
    cfg, model, optimizer, device, ds = run.cfg, state.model, state.optimizer, run.device, run.dataset
    if state.refusal:  # elastic: rank 0's verdict on the run directory, now every worker's
        raise UserError(state.refusal)
    run.run_dir = run.recorder.run_dir = state.run_dir  # elastic: the first rank 0's, whoever is rank 0 later
    started = not state.world_changes
    run.record.world = describe_world(run, state)
    rank, size = hvd.rank(), hvd.size()  # HVD: read on every (re)entry: an elastic world may have changed
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // hvd.local_size()))  # HVD: cores / ranks
    n, per_step = len(ds.train_x), cfg.batch_size * cfg.backward_passes_per_step  # samples per rank and step
    epoch_samples = min(n, cfg.max_steps * per_step * size) if cfg.max_steps else n
    if epoch_samples < size:
        raise UserError(f"the training set has {epoch_samples} sample(s), fewer than the {size} ranks")
    if started:
        log(f"hvd_mlp: {size} ranks ({run.record.world.controller}, {hvd.local_size()} per host, "  # HVD
            f"{torch.get_num_threads()} threads each) | {ds.name}: {n:,} train / {len(ds.val_x):,} val | MLP "
            f"{'-'.join(map(str, model.sizes))} ({run.record.parameters:,} params) | batch {cfg.batch_size}/rank x "
            f"{size}" + (f" x {cfg.backward_passes_per_step} passes" if cfg.backward_passes_per_step > 1 else "")
            + f" | run dir {run.run_dir}")

    while state.epoch <= cfg.epochs:
        epoch, resumed_at = state.epoch, state.samples_done  # elastic: > 0 when the world changed mid-epoch
        torch.manual_seed(data.derive_seed(cfg.seed, epoch, rank))  # dropout: per rank; a resume replays it
        idx = data.train_shard(n, rank, size, epoch, cfg.seed, cfg.batch_size, state.samples_done, epoch_samples)
        shard_x, shard_y = ds.train_x[idx.to(device)], ds.train_y[idx.to(device)]  # one gather; batches are views
        steps = -(-len(idx) // per_step)
        model.train()
        loss_sum, correct, samples, compute, comm_wait = torch.zeros((), device=device), 0, 0, 0.0, 0.0
        run.recorder.begin_epoch(epoch, steps)
        epoch_start_us, t_start = now_us(), time.perf_counter()
        for step in range(steps):
            run.recorder.before_step(step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, size, epoch - 1 + state.samples_done / epoch_samples)
            lo = step * per_step
            micro = [(shard_x[i:i + cfg.batch_size], shard_y[i:i + cfg.batch_size])
                     for i in range(lo, min(lo + per_step, len(idx)), cfg.batch_size)]
            step_loss, step_correct, step_samples, times = train_step(model, optimizer, micro, cfg.adasum)
            run.recorder.after_step(step, times)
            loss_sum, correct, samples = loss_sum + step_loss, correct + step_correct, samples + step_samples
            compute, comm_wait = compute + times.compute, comm_wait + times.wait
            state.samples_done += step_samples * size
            state.steps_done += 1
            run.reached = (epoch, state.steps_done)
            if cfg.elastic and (step + 1) % cfg.commit_every == 0:
                state.commit()  # HVD: snapshot, and raise here if hosts were added or removed
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log(f"  epoch {epoch} step {step + 1}/{steps} loss {step_loss.item() / step_samples:.4f}")
        epoch_time, epoch_end_us = time.perf_counter() - t_start, now_us()
        window = run.recorder.end_epoch()

        # ------------------------------------------------------------------------------------ validation and metrics
        val = data.val_shard(len(ds.val_x), rank, size)
        val_loss, val_correct, val_n = evaluate(model, ds.val_x[val], ds.val_y[val])
        # HVD: exact global metrics: allreduce sums and counts, then divide (not a mean of per-rank means)
        totals = hvd.allreduce(torch.tensor([float(loss_sum), float(correct), samples, val_loss, val_correct,
                                             val_n], dtype=torch.float64), op=hvd.Sum, name="metrics")
        # HVD: the ranks' mean wait and compute time
        comm_wait_mean, compute_mean = hvd.allreduce(torch.tensor([comm_wait, compute]), op=hvd.Average,
                                                     name="timing").tolist()
        tr_loss, tr_correct, tr_n, va_loss, va_correct, va_n = totals.tolist()
        record = results.Epoch(
            epoch=epoch, start_unix_us=epoch_start_us, end_unix_us=epoch_end_us, epoch_time_s=epoch_time,
            samples=int(tr_n), samples_per_s=tr_n / epoch_time, train_loss=tr_loss / tr_n,
            train_acc=tr_correct / tr_n, val_loss=va_loss / va_n, val_acc=va_correct / va_n,
            lr=optimizer.param_groups[0]["lr"], comm_wait_s=comm_wait_mean, compute_s=compute_mean,
            other_s=epoch_time - comm_wait_mean - compute_mean, steps=steps, world_size=size,
            resumed_at_samples=resumed_at, timeline_window=window)
        if window:
            try:
                record.comm = epochcomm.window_comm(record)
            except TimelineError as e:  # e.g. an epoch too short to record any collective
                record.comm_error = str(e)
        # every rank's step trace (timeline on): who handed its gradients over last, and what that cost the others
        stragglers.attach(record, run.recorder.gather_traces(), window.file if window else "")
        if not (math.isfinite(record.train_loss) and math.isfinite(record.val_loss)):  # every rank sees the sums
            raise UserError(f"the loss became {record.train_loss} in epoch {epoch}: training diverged (lower --lr)")
        state.history.append(record)
        log(epoch_line(record, cfg.epochs))

        # ------------------------------------------------------------------------------------ results and checkpoint
        state.epoch, state.samples_done, state.steps_done = epoch + 1, 0, 0
        if rank == 0:
            save_record(run, state)
            if cfg.checkpoint_every and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs):
                checkpoint.save(run.run_dir, cfg, model, optimizer, epoch, state.history)
                run.checkpointed = epoch
        if cfg.elastic:
            state.commit()  # HVD: an epoch boundary is always a safe point to come back to

    # inside the elastic loop: a world change here is rolled back and the digests gathered again
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    run.record.world.param_digests = hvd.allgather_object(digest, name="params.digest")  # HVD: all equal?


def epoch_line(e: results.Epoch, epochs: int) -> str:
    line = (f"epoch {e.epoch}/{epochs} | {e.epoch_time_s:.2f} s | {e.samples_per_s:,.0f} samples/s | "
            f"train loss {e.train_loss:.4f} acc {e.train_acc:.4f} | val loss {e.val_loss:.4f} acc {e.val_acc:.4f} | "
            f"lr {e.lr:.2e} | comm wait {e.comm_wait_s:.2f} s")
    return line + epochcomm.comm_text(e) + stragglers.straggler_text(e)


def analyse_full_timeline(path: str, history: list):
    """After hvd.shutdown() the full timeline file is complete: attach each epoch's figures and print them."""
    try:
        for record, comm in zip(history, epochcomm.full_comm(path, history)):
            record.comm = comm
            print(f"epoch {record.epoch} comm{epochcomm.comm_text(record)}", flush=True)
    except TimelineError as e:
        print(f"warning: timeline not analysed: {e}", flush=True)


def save_record(run: Run, state):
    run.record.epochs, run.record.world_changes = state.history, state.world_changes
    results.write(run.run_dir, run.record)


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
