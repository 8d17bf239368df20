"""The run record: results.json, its typed parts, the one writer and the one reader every tool uses.

    run_dir/results.json = RunRecord {schema_version, config, parameters, dataset, world, epochs[], world_changes[],
                                      summary}
    epochs[] = Epoch {..., comm, ranks[] (RankFigures, one per rank), straggler}

Training builds a RunRecord and rewrites the file atomically after every epoch; report, timeline, bench and the tests
read it back with `read()`, which checks every field's type and names the first bad one in a UserError.
"""
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field

from hvd_mlp.errors import UserError

SCHEMA_VERSION = 2  # 1: the files written before this module (no schema_version key); they read the same
FILE = "results.json"
WARMUP_EPOCHS = 1  # the first epoch carries warm-up costs (allocation, caches, Horovod's first negotiations)


@dataclass
class DatasetInfo:
    name: str
    train: int
    val: int


@dataclass
class World:
    """The world as an epoch saw it (an elastic job's changes)."""
    size: int
    local_size: int
    hosts: list[str]
    controller: str  # mpi | gloo
    horovod_version: str
    torch_version: str
    device: str
    param_digests: list[str] = field(default_factory=list)  # SHA-256 of each rank's final parameters


@dataclass
class WorldChange:
    """An elastic job's world as it (re)started: the first entry is the start, each further one a change."""
    epoch: int
    samples_done: int  # samples of that epoch already done where the job went on (its last commit)
    size: int
    hosts: list[str]  # the launcher's host name of each rank (what the discovery script lists and Horovod blacklists)
    unix_us: int
    previous_size: int = 0  # 0 for the start
    lost_hosts: list[str] = field(default_factory=list)  # one entry per rank lost (a host with 2 ranks: twice)
    added_hosts: list[str] = field(default_factory=list)
    step: int = 0  # steps of the epoch done when the change was noticed
    rolled_back_steps: int = 0  # steps done after the last commit, lost and done again


@dataclass
class TimelineWindow:
    """The steps of an epoch recorded into a window timeline file (--timeline-mode window)."""
    file: str
    steps: int
    start_unix_us: int = 0
    end_unix_us: int = 0


@dataclass
class Comm:
    """An epoch's communication from Horovod's timeline: union of spans per class (us), bytes, shares."""
    comm_us: float
    op_us: float
    negotiate_us: float
    collective_us: float
    memcpy_us: float
    queue_us: float
    allreduce_bytes: float
    allreduce_ops: float
    epoch_time_s: float
    comm_share: float  # comm_us / epoch time
    bandwidth_MBps: float  # bytes / collective time
    exposed_s: typing.Optional[float] = None  # the part the loop waited for ...
    overlapped_s: typing.Optional[float] = None  # ... and the part hidden behind compute
    scaled_from_steps: typing.Optional[int] = None  # window mode: figures scaled from this many steps
    scale: typing.Optional[float] = None  # window mode: epoch time / window time (bytes and ops: by steps)


@dataclass
class RankFigures:
    """One rank in one epoch, from the per-rank step traces (timeline.stragglers): times scaled from the traced steps to
    the epoch, lateness of its gradient hand-over behind the first rank's, on rank 0's clock."""
    rank: int
    host: str
    compute_s: float  # forward + backward + optimizer step
    wait_s: float  # in synchronize()
    other_s: float  # between its steps (batching, schedule, logging)
    peer_wait_s: float  # the part of wait_s spent until the last rank had handed its gradients over
    last_ready_share: float  # share of steps in which this rank handed its gradients over last
    lag_ms: float  # mean lateness of its hand-over behind the first rank's
    lag_p95_ms: float
    clock_offset_us: float = 0.0  # its wall clock minus rank 0's, as measured before the epoch ...
    clock_error_us: float = 0.0  # ... and the bound on that measurement's error


@dataclass
class Straggler:
    """The rank that held the others back in an epoch, how sure, what it cost them, and why (timeline.stragglers)."""
    rank: int  # the rank last to hand its gradients over most often
    host: str
    confidence: str  # high | low | none (none: no rank stands out; rank is then only the most often last)
    last_ready_share: float
    p_value: float  # chance of a share this high if every rank were equally likely to be last
    cost_s: float  # the others' waits attributable to it (until it handed over), scaled to the epoch
    transfer_wait_s: float  # the ranks' mean wait after the last hand-over: the transfer, slow for everyone alike
    cause: str  # compute | start | transfer | "" (no clear cause)
    cause_text: str
    steps: int  # steps analysed (traced on every rank)
    tick_steps: int = 0  # of which the hand-over order came from Horovod's own ready ticks ...
    clock_error_us: float = 0.0  # ... the others from the step traces, aligned to rank 0's clock within this


@dataclass
class Epoch:
    epoch: int
    start_unix_us: int
    end_unix_us: int
    epoch_time_s: float
    samples: int  # all ranks
    samples_per_s: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    comm_wait_s: float  # ranks' mean time waiting in synchronize(): the communication backward did not hide
    compute_s: float  # ranks' mean forward + backward + optimizer time
    other_s: float
    steps: int
    world_size: int
    resumed_at_samples: int = 0  # elastic: samples of the epoch done before the last world change
    timeline_window: typing.Optional[TimelineWindow] = None
    comm: typing.Optional[Comm] = None
    comm_error: typing.Optional[str] = None  # why the timeline gave no figures for this epoch
    ranks: list[RankFigures] = field(default_factory=list)  # with the timeline on: every rank's figures
    straggler: typing.Optional[Straggler] = None


@dataclass
class Summary:
    epochs: int
    train_time_s: float
    samples_per_s: float  # steady state: epochs after the warm-up
    comm_wait_share: float
    final_val_acc: float
    best_val_acc: float

    @classmethod
    def of(cls, epochs: list) -> typing.Optional["Summary"]:
        if not epochs:
            return None
        run = steady(epochs)
        wall = sum(e.epoch_time_s for e in run)
        return cls(epochs=len(epochs), train_time_s=sum(e.epoch_time_s for e in epochs),
                   samples_per_s=sum(e.samples for e in run) / wall,
                   comm_wait_share=sum(e.comm_wait_s for e in run) / wall,
                   final_val_acc=epochs[-1].val_acc, best_val_acc=max(e.val_acc for e in epochs))


@dataclass
class RunRecord:
    config: dict
    parameters: int
    dataset: DatasetInfo
    world: World
    epochs: list[Epoch] = field(default_factory=list)
    world_changes: list[WorldChange] = field(default_factory=list)
    summary: typing.Optional[Summary] = None
    schema_version: int = SCHEMA_VERSION
    name: str = field(default="", metadata={"saved": False})  # the run directory's name, set by read()
    path: str = field(default="", metadata={"saved": False})  # the results.json read


def steady(epochs: list) -> list:
    """The epochs that speak for the steady state: all but the warm-up (all of them for a one-epoch run)."""
    return epochs[WARMUP_EPOCHS:] or epochs


# ------------------------------------------------------------------------------------------------- write
def to_dict(record) -> dict:
    """A record as JSON-ready dicts; None fields left out (an epoch without a timeline has no "comm")."""
    out = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None or not f.metadata.get("saved", True):
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, list):
            value = [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def write(run_dir: str, record: RunRecord):
    from hvd_mlp.storage import write_json  # storage needs nothing of this module; import late, no cycle

    record.summary = Summary.of(record.epochs)
    write_json(os.path.join(run_dir, FILE), to_dict(record))


# ------------------------------------------------------------------------------------------------- read
def read(path: str) -> RunRecord:
    """The run record in `path` (a run directory or its results.json); UserError naming what is wrong."""
    if not path:
        raise UserError("the run's path is empty (give a run directory or its results.json)")
    file = os.path.join(path, FILE) if os.path.isdir(path) else path
    try:
        with open(file) as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        where = f"{path} holds no {FILE} (is it a hvd_mlp run directory?)" if os.path.isdir(path) else \
            f"{file} does not exist"
        raise UserError(where) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{file} is unreadable: {getattr(e, 'strerror', None) or e}") from None
    record = from_dict(RunRecord, raw, file)
    if record.schema_version > SCHEMA_VERSION:
        raise UserError(f"{file} has schema version {record.schema_version}; this hvd_mlp reads up to "
                        f"{SCHEMA_VERSION} (upgrade hvd_mlp)")
    record.name = os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(file))))
    record.path = file
    return record


def read_finished(path: str) -> RunRecord:
    """read(), and at least one finished epoch (what every figure needs)."""
    record = read(path)
    if not record.epochs:
        raise UserError(f"{path} holds no finished epoch")
    return record


def from_dict(cls, raw, where: str):
    """Build dataclass `cls` from parsed JSON, checking each field's type; keys it does not know are ignored."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected an object, got {_json_type(raw)}")
    hints, values = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("saved", True):
            continue
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{where}: '{f.name}' is missing")
            continue
        values[f.name] = _convert(hints[f.name], raw[f.name], f"{where}: {f.name}")
    if cls is RunRecord and "schema_version" not in raw:
        values["schema_version"] = 1  # written before the version was recorded
    return cls(**values)


def _convert(kind, value, where: str):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {_json_type(value)}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, where)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise UserError(f"{where} must be {'a number' if kind is float else kind.__name__}, got {_json_type(value)} "
                    f"{json.dumps(value)[:40]}")


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
