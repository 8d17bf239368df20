"""Generated inputs for benchmarks and tests: files in the formats hvd_mlp reads, with known content.

- MNIST-shaped IDX files (random pixels, torchvision's layout): `bench compare` trains on 60,000 of them.
- Horovod-format timelines of any size, with the default MLP's gradient tensors fused a step at a time:
  `bench timeline` times the analyser on a GB of them; the tests check figures that are known by construction.
"""
import os

import numpy as np

from hvd_mlp.data import MNIST_FILES, NUM_CLASSES, mnist_raw_dir
from hvd_mlp.model import default_sizes, parameter_shapes

# each step of a generated timeline: negotiation ticks, then one fused ALLREDUCE whose activities take (us)
STEP_PHASES = (("QUEUE", 0, 20), ("MEMCPY_IN_FUSION_BUFFER", 20, 120), ("MPI_ALLREDUCE", 120, 1300),
               ("MEMCPY_OUT_FUSION_BUFFER", 1300, 1400))
STEP_OP_US, STEP_EVERY_US = 1405, 2000


def write_idx(path: str, array: np.ndarray):
    """The IDX format data.load_mnist reads: magic (0, 0, 8 = uint8, ndim), big-endian dims, bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_mnist_shaped(data_dir: str, n_train: int = 60000, n_val: int = 10000, seed: int = 0) -> str:
    """Random-pixel IDX files in torchvision's MNIST layout under data_dir; returns the raw directory."""
    raw = mnist_raw_dir(data_dir)
    os.makedirs(raw, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        images, labels = MNIST_FILES[split]
        write_idx(os.path.join(raw, images), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(raw, labels), rng.integers(0, NUM_CLASSES, n))
    return raw


def _event(ph, pid, ts, name=None, args=None):
    """One event exactly as Horovod's TimelineWriter prints it."""
    text = f'{{"ph": "{ph}"'
    if name is not None:
        text += f', "name": "{name}"'
    text += f', "ts": {ts}, "pid": {pid}'
    if ph == "X":
        text += ', "dur": 0'
    if args:
        text += f', "args": {{{args}}}'
    return text + "}"


def _metadata(pid, key, value):
    return f'{{"name": "{key}", "ph": "M", "pid": {pid}, "args": {{{value}}}}},\n'


def _step(ts0: int, tensors: list, ranks: int = 2) -> str:
    """One training step's allreduce: negotiation, then the fused ALLREDUCE with its activities (same times)."""
    events, n = [], len(tensors)
    for i in range(n):
        pid, t = i + 1, ts0 + 10 * i
        events.append(_event("B", pid, t, "NEGOTIATE_ALLREDUCE"))
        events += [_event("X", pid, t + 1 + r, str(r)) for r in range(ranks)]
        events.append(_event("E", pid, ts0 + 10 * n))
    t = ts0 + 10 * n + 5
    for phase, start, end in STEP_PHASES:
        for i in range(n):
            if phase == "QUEUE":
                events.append(_event("B", i + 1, t, "ALLREDUCE"))
            events.append(_event("B", i + 1, t + start, phase))
            events.append(_event("E", i + 1, t + end))
    for i, (_, shape) in enumerate(tensors):
        events.append(_event("E", i + 1, t + STEP_OP_US, args=f'"dtype": "HOROVOD_FLOAT32", "shape": "{list(shape)}"'))
    return ",".join(events)


def write_timeline(path: str, size_mb: float, start_unix_us: int = 1_700_000_000_000_000) -> int:
    """A Horovod-format timeline of about size_mb, a step every STEP_EVERY_US from ts 10; returns the steps."""
    tensors, steps, target = parameter_shapes(default_sizes()), 0, size_mb * 1e6
    with open(path, "w") as fh:
        fh.write("[\n" + _metadata(0, "process_name", f'"start_time_since_epoch_in_micros":{start_unix_us}')
                 + _metadata(0, "process_sort_index", '"sort_index": 0'))
        for i, (name, _) in enumerate(tensors):
            fh.write(_metadata(i + 1, "process_name", f'"name": "allreduce.{name}"')
                     + _metadata(i + 1, "process_sort_index", f'"sort_index": {i + 1}'))
        first = True
        while fh.tell() < target:
            block = ",".join(_step(10 + STEP_EVERY_US * (steps + k), tensors) for k in range(200))
            fh.write(("" if first else ",") + block)
            first, steps = False, steps + 200
        fh.write("]")
    return steps
