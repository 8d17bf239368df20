"""Checkpoints: what must match to resume, which run --resume auto picks, a used run directory refused."""
import os
import re
import types

import pytest
import torch

from hvd_mlp import checkpoint, results
from hvd_mlp.config import Config, to_dict


def write_run(root, name, mtime, **settings):
    run = root / "runs" / name
    run.mkdir(parents=True)
    path = run / checkpoint.NAME
    torch.save({"model": {}, "optimizer": {}, "epoch": 1, "history": [],
                "config": to_dict(Config(**settings))}, path)
    os.utime(path, (mtime, mtime))
    return os.path.join("runs", name, checkpoint.NAME)


def test_differences_name_each_setting():
    saved = to_dict(Config(hidden=(64,), optimizer="adam"))
    now = Config(hidden=(512, 256, 128), optimizer="sgd", epochs=20)
    assert checkpoint.differences(saved, now, checkpoint.MUST_MATCH) == \
        ["hidden [64] -> [512, 256, 128]", "optimizer 'adam' -> 'sgd'"]


def test_resume_auto_takes_the_newest_run_of_the_same_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    same = write_run(tmp_path, "a", 1000, hidden=(64,))
    write_run(tmp_path, "b", 2000, hidden=(32,))  # newer, another model: passed over
    (tmp_path / "runs" / "c").mkdir()
    (tmp_path / "runs" / "c" / checkpoint.NAME).write_bytes(b"damaged")  # newest, unreadable: passed over
    assert checkpoint.find(Config(hidden=(64,), resume="auto"), "") == same
    assert checkpoint.find(Config(hidden=(16,), resume="auto"), "") == ""  # nothing fits: start afresh


@pytest.mark.parametrize("held", [results.FILE, checkpoint.NAME])
def test_a_used_run_directory_is_refused(tmp_path, held):
    (tmp_path / held).write_text("{}")
    assert re.search(r"already holds a run .*--resume auto.*--overwrite",
                     checkpoint.overwrite_refusal(Config(), str(tmp_path)))
    assert checkpoint.overwrite_refusal(Config(overwrite=True), str(tmp_path)) == ""
    assert checkpoint.overwrite_refusal(Config(resume="auto"), str(tmp_path)) == ""
    assert checkpoint.overwrite_refusal(Config(), str(tmp_path / "new")) == ""


def test_run_directory_of_a_resumed_checkpoint(tmp_path):
    cfg = types.SimpleNamespace(output_dir="", resume=str(tmp_path / "r" / checkpoint.NAME))
    assert checkpoint.run_directory(cfg) == str(tmp_path / "r")
