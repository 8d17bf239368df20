"""Allreduce the MLP's whole gradient through Horovod, under horovodrun with a timeline; prints one line.

On a GPU this is the NCCL path, which `horovodrun -np 1` training never takes: for a world of one, Horovod's
DistributedOptimizer registers no allreduce at all. An explicit hvd.grouped_allreduce does go through Horovod's
core and NCCL (a one-rank communicator), so its timeline shows NCCL's part. On a CPU it runs through Gloo or MPI.

    horovodrun -np 1 --gloo --timeline-filename allreduce.json python scripts/allreduce_timeline.py --device cuda
    python -m hvd_mlp.timeline summarize allreduce.json
"""
import argparse
import time

import horovod.torch as hvd
import torch

from hvd_mlp.model import MLP

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
parser.add_argument("--steps", type=int, default=200, help="allreduces of the whole gradient (default: 200)")
args = parser.parse_args()

hvd.init()
if args.device == "cuda":
    torch.cuda.set_device(hvd.local_rank())
grads = [torch.full_like(p, float(hvd.rank() + 1), device=args.device) for p in MLP().parameters()]
nbytes = sum(g.numel() * g.element_size() for g in grads)


def sync():
    if args.device == "cuda":
        torch.cuda.synchronize()


for _ in range(10):  # warm-up: NCCL communicator, fusion buffer
    hvd.grouped_allreduce(grads, op=hvd.Average, name="mlp.gradient")
sync()
started = time.perf_counter()
for _ in range(args.steps):
    out = hvd.grouped_allreduce(grads, op=hvd.Average, name="mlp.gradient")
sync()
seconds = (time.perf_counter() - started) / args.steps
expected = (hvd.size() + 1) / 2
assert all(torch.allclose(o, torch.full_like(o, expected)) for o in out), "wrong allreduce result"
print(f"ALLREDUCE rank={hvd.rank()} size={hvd.size()} device={args.device} steps={args.steps} tensors={len(grads)} "
      f"bytes={nbytes / 1e6:.2f} MB mean={seconds * 1e3:.3f} ms ({nbytes / seconds / 1e9:.2f} GB/s) "
      f"controller={'mpi' if hvd.mpi_enabled() else 'gloo'}", flush=True)
hvd.shutdown()
