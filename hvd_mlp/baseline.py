"""The design hvd_mlp replaces, kept as a yardstick: PyTorch DDP as the seed project built it.

    python -m hvd_mlp.baseline --data-dir DIR [--np 2] [--batch-size 32] [--epochs 1]

torch.multiprocessing.spawn, the gloo backend, torchvision's MNIST dataset with ToTensor and Normalize per sample
through a DataLoader (workers=0) and a DistributedSampler, the same MLP, Adam. Prints one line: samples/s of the
epoch (all ranks). `bench compare` runs it beside hvd_mlp on the same files.
"""
import json
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms

from hvd_mlp.data import MNIST_MEAN, MNIST_STD
from hvd_mlp.errors import ArgumentParser, UserError, command_line, positive
from hvd_mlp.model import MLP


def worker(rank: int, args, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.np)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.np))
    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    dataset = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    sampler = DistributedSampler(dataset, num_replicas=args.np, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=0)
    model = DistributedDataParallel(MLP())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    seen, elapsed = 0, 0.0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        dist.barrier()
        start = time.perf_counter()
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            seen += len(labels)
        dist.barrier()
        elapsed += time.perf_counter() - start
    if rank == 0:
        out.put({"samples": seen * args.np, "seconds": elapsed, "samples_per_s": seen * args.np / elapsed})
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> dict:
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(worker, args=(args, free_port(), queue), nprocs=args.np, join=True)
    return queue.get()


@command_line("hvd_mlp.baseline")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="torchvision MNIST root (MNIST/raw/*-ubyte)")
    parser.add_argument("--np", type=positive(int), default=2, help="processes (default: 2)")
    parser.add_argument("--batch-size", type=positive(int), default=32, help="per process (default: 32)")
    parser.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate (default: 0.001)")
    parser.add_argument("--epochs", type=positive(int), default=1, help="epochs to time (default: 1)")
    args = parser.parse_args(argv)
    try:  # here, not in the spawned workers: their failure would be a traceback per process
        datasets.MNIST(args.data_dir, train=True, download=False)
    except RuntimeError:
        raise UserError(f"no MNIST under {args.data_dir} (torchvision's MNIST/raw/*-ubyte files)") from None
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
