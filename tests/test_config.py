"""Config: defaults, TOML file under flags, and one clear line for each bad value."""
import subprocess
import sys

import pytest

from hvd_mlp.config import Config, parse_args
from hvd_mlp.errors import UserError


def test_defaults_and_flags():
    cfg = parse_args(["--epochs", "3", "--hidden", "64,32", "--fp16-allreduce", "--timeline-mode"])
    assert (cfg.epochs, cfg.hidden, cfg.fp16_allreduce, cfg.timeline_mode) == (3, (64, 32), True, "window")
    assert cfg.batch_size == 64 and Config().timeline_mode == "off"


def test_flags_override_toml(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 7\nlr = 1\nhidden = [32, 16]\ndataset = "synthetic"\n')
    cfg = parse_args(["--config", str(toml), "--epochs", "2"])
    assert (cfg.epochs, cfg.lr, cfg.hidden, cfg.dataset) == (2, 1.0, (32, 16), "synthetic")


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--batch-size", "-4"], "--batch-size must be > 0"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--hidden", "64,0"], "--hidden must be positive"),
    (["--hidden", "64,x"], "expected comma-separated integers"),
    (["--optimizer", "lamb"], "--optimizer must be one of adam, sgd"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--epoch", "3"], "unrecognized arguments: --epoch 3"),  # no abbreviations: horovodrun re-parses them
    (["--weight-decay", "nan"], "--weight-decay must be a finite number, got nan"),
    (["--warmup-epochs", "nan"], "--warmup-epochs must be a finite number"),
    (["--momentum", "nan"], "--momentum must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
])
def test_bad_values_raise_one_clear_line(argv, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_args(argv)


@pytest.mark.parametrize("content, message", [
    ("epochs = 'ten'\n", "epochs must be int, got str 'ten'"),
    ("hidden = 5\n", "hidden must be a list of integers"),
    ("fp16_allreduce = 1\n", "fp16_allreduce must be bool"),
    ("learning_rate = 0.1\n", "unknown setting 'learning_rate'"),
    ("epochs = \n", "is not valid TOML"),
])
def test_bad_toml_is_named(tmp_path, content, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(content)
    with pytest.raises(UserError, match=message):
        parse_args(["--config", str(toml)])


def test_config_that_is_a_directory_is_one_line(tmp_path):
    with pytest.raises(UserError, match=f"config file {tmp_path} cannot be read: Is a directory"):
        parse_args(["--config", str(tmp_path)])


@pytest.mark.parametrize("module", ["hvd_mlp.train", "hvd_mlp.config"])  # config: the check alone, before a launch
def test_command_line_error_is_one_line_and_nonzero(module):
    proc = subprocess.run([sys.executable, "-m", module, "--epochs", "-1"], capture_output=True, text=True)

    assert proc.returncode == 2
    assert proc.stderr.strip() == "hvd_mlp.train: error: --epochs must be > 0, got -1"
    assert proc.stdout == ""


def test_the_check_alone_accepts_what_training_accepts():
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.config", "--dataset", "synthetic", "--epochs", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == proc.stderr == ""


def test_help_shows_defaults():
    proc = subprocess.run([sys.executable, "-m", "hvd_mlp.train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--batch-size" in proc.stdout and "(default: 64)" in proc.stdout
    assert "{auto,mnist,mnist-sample,synthetic}" in proc.stdout and "{adam,sgd}" in proc.stdout  # choices shown
    assert "(default: )" not in proc.stdout and "(default: None)" not in proc.stdout
