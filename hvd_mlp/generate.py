"""Generated inputs for benchmarks and tests: files in the formats hvd_mlp reads, with known content.

- MNIST-shaped IDX files (random pixels, torchvision's layout): `bench compare` trains on 60,000 of them.
"""
import os

import numpy as np

from hvd_mlp.data import MNIST_FILES, NUM_CLASSES, mnist_raw_dir


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
