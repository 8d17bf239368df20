"""Run under horovodrun: allreduce and broadcast with known answers; prints one line per rank."""
import horovod.torch as hvd
import torch

hvd.init()
rank, size = hvd.rank(), hvd.size()
summed = hvd.allreduce(torch.tensor([float(rank + 1)]), op=hvd.Sum, name="smoke.sum").item()
averaged = hvd.allreduce(torch.tensor([float(rank)]), op=hvd.Average, name="smoke.avg").item()
shared = hvd.broadcast(torch.tensor([100.0 + rank]), root_rank=size - 1, name="smoke.bcast").item()
assert summed == size * (size + 1) / 2, summed
assert averaged == (size - 1) / 2, averaged
assert shared == 100.0 + size - 1, shared
print(f"SMOKE rank={rank} size={size} sum={summed:g} avg={averaged:g} bcast={shared:g} "
      f"controller={'mpi' if hvd.mpi_enabled() else 'gloo'}", flush=True)
hvd.shutdown()
