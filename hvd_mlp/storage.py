"""Files that must survive a crash: write to a temporary file beside the target, fsync, then rename over it.

A kill at any moment leaves either the previous file or the new one, never a torn one.
"""
import contextlib
import json
import os
import pickle
import tempfile

from hvd_mlp.errors import UserError


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", durable: bool = True):
    """A file handle whose content replaces `path` only when the block completes without error. durable=False skips
    the fsyncs: still never torn, but a machine crash may lose it (for diagnostics written on the training's path)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as e:  # no such directory, no permission: the user's to fix
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; the result should read like any file the user writes
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str, obj, durable: bool = True):
    with atomic_file(path, "w", durable) as fh:
        json.dump(obj, fh, indent=1)


def write_checkpoint(path: str, obj):
    import torch  # here, not at the top: the timeline tools use this module without needing torch

    with atomic_file(path) as fh:
        torch.save(obj, fh)


def read_checkpoint(path: str) -> dict:
    import torch

    try:
        # weights_only: tensors and plain data only, so a checkpoint from anyone cannot run code on every rank
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"checkpoint {path} is a directory, not a file") from None
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # the weights-only unpickler refused a Python object
            raise UserError(f"checkpoint {path} holds Python objects beyond tensors and plain data; hvd_mlp never "
                            "writes those and will not run their code") from None
        raise UserError(f"checkpoint {path} is corrupt or unreadable (UnpicklingError)") from None
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise UserError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "epoch"} <= ckpt.keys():
        raise UserError(f"checkpoint {path} is not an hvd_mlp checkpoint")
    return ckpt


def make_run_dir(path: str) -> str:
    """Create the run directory and prove it is writable, before any training time is spent."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test")
        probe.close()
    except OSError as e:
        raise UserError(f"output directory {path} is not writable: {e.strerror}") from None
    return path

