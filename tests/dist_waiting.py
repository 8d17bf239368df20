"""Run under horovodrun, np=2: the CPU time rank 0 burns while it has nothing to do, in its two ways of waiting.

wait: rank 0's thread in synchronize() for 1 s while rank 1 sleeps before its allreduce (that thread's CPU time);
idle: 1 s with nothing queued (the CPU time of the rank's every thread). Prints one line per rank (seconds)."""
import time

import horovod.torch as hvd
import torch

hvd.init()
hvd.allreduce(torch.ones(1), name="warm")  # the first negotiation, and the controllers set up, before measuring
if hvd.rank() == 1:
    time.sleep(1.0)
cpu = time.thread_time()  # this thread's only: Horovod's background thread may spin inside MPI meanwhile
hvd.synchronize(hvd.allreduce_async(torch.ones(1000), op=hvd.Sum, name="late"))
wait_cpu = time.thread_time() - cpu
cpu = time.process_time()
time.sleep(1.0)
idle_cpu = time.process_time() - cpu
print(f"WAITING rank={hvd.rank()} wait_cpu={wait_cpu:.3f} idle_cpu={idle_cpu:.3f}", flush=True)
hvd.shutdown()
