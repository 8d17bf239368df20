"""Raw MPI_Allreduce floor: what the same bytes cost without Horovod.

    horovodrun -np 2 --mpi python -m hvd_mlp.commbench [--sizes ...] [--repeats N] [--json OUT]
    mpirun -np 2 python -m hvd_mlp.commbench

Times mpi4py's Allreduce (float32, SUM, in place) of the MLP's whole gradient (567,434 floats = 2.27 MB) and a sweep
of sizes; prints per size the median time, algorithm bandwidth (bytes / t) and bus bandwidth (2(N-1)/N x bytes / t,
the ring allreduce's traffic per link), so Horovod's allreduce per step can be held against it.
"""
import argparse
import os
import time

import numpy as np

from hvd_mlp.errors import ArgumentParser, UserError, command_line, output_file, positive
from hvd_mlp.model import default_sizes, parameter_count_of

MODEL_FLOATS = parameter_count_of(default_sizes())  # hvd_mlp's default MLP: 567,434
DEFAULT_SIZES = [4 << 10, 64 << 10, 256 << 10, 1 << 20, MODEL_FLOATS * 4, 8 << 20, 32 << 20]


def time_allreduce(comm, nbytes: int, repeats: int, warmup: int = 3) -> float:
    """Median seconds of one in-place Allreduce of nbytes of float32, across `repeats` (after warm-up)."""
    from mpi4py import MPI
    buf = np.ones(max(1, nbytes // 4), dtype=np.float32)
    times = []
    for i in range(warmup + repeats):
        comm.Barrier()  # start together, so each sample is the collective and not a rank's late arrival
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    # the slowest rank's view is the collective's time
    return float(comm.allreduce(float(np.median(times)), op=MPI.MAX))


def byte_sizes(text: str) -> list:
    """An argparse type: comma-separated byte counts, each a whole number of float32 elements."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of bytes, got {text!r}") from None
    bad = [n for n in sizes if n <= 0 or n % 4]
    if bad:
        raise argparse.ArgumentTypeError(f"each size must be a positive multiple of 4 (float32), got {bad[0]}")
    return sizes


def row(nbytes: int, seconds: float, size: int) -> dict:
    """One size's figures: algorithm bandwidth (bytes / t) and bus bandwidth, what each link of a ring carries:
    reduce-scatter then allgather move 2(N-1)/N x bytes per rank."""
    return {"bytes": nbytes, "time_us": seconds * 1e6, "algbw_MBps": nbytes / seconds / 1e6,
            "busbw_MBps": 2 * (size - 1) / size * nbytes / seconds / 1e6}


@command_line("hvd_mlp.commbench")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.commbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=byte_sizes, default=DEFAULT_SIZES,
                        help="bytes per allreduce, comma separated (default: 4 KiB .. 32 MiB and the MLP's gradient)")
    parser.add_argument("--repeats", type=positive(int), default=50, help="timed repetitions per size (default: 50)")
    parser.add_argument("--json", type=output_file, help="also write the table to this JSON file (rank 0; "
                                                          "checked before the benchmark runs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")  # same setting as the training, for a fair floor
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 2:
        # under --gloo every process is rank 0 of its own MPI world: exit_with asks the launcher for the rank
        raise UserError("run it with >= 2 MPI ranks (horovodrun -np 2 --mpi ... or mpirun -np 2 ...); under --gloo "
                        "mpi4py sees a world of 1")
    rows = []
    for nbytes in sorted(args.sizes):
        t = time_allreduce(comm, nbytes, args.repeats)
        rows.append(row(nbytes, t, size))
    if rank != 0:
        return
    library = MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()  # Open MPI's ends in a NUL byte
    print(f"raw MPI_Allreduce, {size} ranks, {library}")
    print(f"{'bytes':>12} {'time us':>10} {'algbw MB/s':>11} {'busbw MB/s':>11}")
    for r in rows:
        mark = "  <- the MLP's gradient" if r["bytes"] == MODEL_FLOATS * 4 else ""
        print(f"{r['bytes']:>12,} {r['time_us']:>10.1f} {r['algbw_MBps']:>11.0f} {r['busbw_MBps']:>11.0f}{mark}")
    if args.json:
        from hvd_mlp.storage import write_json
        write_json(args.json, {"ranks": size, "rows": rows, "model_bytes": MODEL_FLOATS * 4})


if __name__ == "__main__":
    main()
