"""Errors a user can cause, and the one way out of every command: one line on stderr, a non-zero exit.

    from hvd_mlp.errors import UserError, command_line

    @command_line("hvd_mlp.report")
    def main(argv=None): ...          # raise UserError("what is wrong") anywhere below: one line, exit 2

Internal bugs still raise with a traceback; only what the user can fix is turned into one line.
"""
import argparse
import functools
import os
import sys
import time
import tempfile


class UserError(Exception):
    """A problem the user can fix (bad flag, bad file, missing data): reported as one line, exit status 2."""


def launch_rank() -> int:
    """This process's global rank as the launcher set it, readable before hvd.init() (0 outside a launcher)."""
    for var in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def exit_with(prog: str, message, status: int = 2, every_rank: bool = False):
    """Print `prog: error: message` and exit. Under a launcher every rank fails alike, so rank 0 speaks for the
    job unless the failure is this rank's own (every_rank)."""
    if every_rank or launch_rank() == 0:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    else:  # quiet ranks leave a moment later: a launcher that kills the job at the first exit must not kill the
        time.sleep(1)  # rank that speaks before its line is out (srun --kill-on-bad-exit, mpirun)
    sys.exit(status)


def command_line(prog: str):
    """Decorate a `main(argv=None)`: UserError becomes one line and exit 2; Ctrl-C exits 130 without a traceback."""
    def wrap(main):
        @functools.wraps(main)
        def guarded(argv=None):
            whole_lines()
            try:
                return main(argv)
            except UserError as e:
                exit_with(prog, e)
            except KeyboardInterrupt:
                exit_with(prog, "interrupted", status=130)
        return guarded
    return wrap


def whole_lines():
    """Let every printed line leave in one write. With PYTHONUNBUFFERED (common in images; horovodrun's Gloo
    launcher sets it) print() writes a line's text and its newline separately, and mpirun --tag-output, which
    horovodrun's MPI launcher uses, tags each piece it reads: `[1,0]<stdout>:` then lands at the end of a line.
    Line buffering is as prompt (a flush per line) and writes the line whole."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, write_through=False)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (raised as UserError) and no abbreviated options: `--timeline` must not
    silently mean `--timeline-mode`, nor `--epoch` `--epochs` (horovodrun re-parses what follows it)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(message)


def positive(kind=int):
    """An argparse type: a number > 0 (and finite), else a one-line error naming the value."""
    what = "a whole number" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} > 0, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def positive_list(text: str) -> list:
    """An argparse type: comma-separated whole numbers > 0."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers > 0, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must all be > 0, got {text}")
    return values


def non_negative_int(text):
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def output_file(text):
    """An argparse type: a path a file can be written to, checked before any work is spent on its content."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    if os.path.isdir(text) or text.endswith(os.sep):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    _probe(os.path.dirname(os.path.abspath(text)), text)
    return text


def output_dir(text):
    """An argparse type: a directory that exists or can be made, and that takes new files."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory path, got ''")
    existing = os.path.abspath(text)
    while not os.path.exists(existing):  # the nearest existing ancestor is where makedirs starts
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory" if existing == os.path.abspath(text)
                                         else f"cannot make directory {text}: {existing} is a file")
    _probe(existing, text)
    return text


def _probe(directory, text):
    # a real file, not os.access: root passes every access check, and a read-only mount fails only on writing
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {e.strerror}") from None
