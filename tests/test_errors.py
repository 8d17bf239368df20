"""The one way out: one line on stderr and exit 2 for what the user can fix; no abbreviated options."""
import subprocess
import sys
import textwrap

import pytest

from hvd_mlp import errors

PROGRAM = textwrap.dedent("""
    import sys
    from hvd_mlp.errors import ArgumentParser, UserError, command_line

    @command_line("demo")
    def main(argv=None):
        parser = ArgumentParser(prog="demo")
        parser.add_argument("--epochs", type=int, default=1)
        args = parser.parse_args(argv)
        raise UserError(f"bad epochs {args.epochs}")

    main(sys.argv[1:])
""")


@pytest.mark.parametrize("argv, env, expected", [
    (["--epochs", "3"], {}, "demo: error: bad epochs 3\n"),
    (["--epoch", "3"], {}, "demo: error: unrecognized arguments: --epoch 3\n"),  # no abbreviation
    (["--epochs", "x"], {}, "demo: error: argument --epochs: invalid int value: 'x'\n"),
    (["--epochs", "3"], {"OMPI_COMM_WORLD_RANK": "1"}, ""),  # rank 1 fails alike but stays quiet
])
def test_user_error_is_one_line_exit_2(argv, env, expected):
    proc = subprocess.run([sys.executable, "-c", PROGRAM, *argv], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, expected, "")


def test_launch_rank_reads_the_launchers_variables(monkeypatch):
    for var in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert errors.launch_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert errors.launch_rank() == 3
    monkeypatch.setenv("HOROVOD_RANK", "5")  # horovodrun's own variable wins
    assert errors.launch_rank() == 5


@pytest.mark.parametrize("parse, text, message", [
    (errors.positive(int), "0", "must be > 0"), (errors.positive(float), "nan", "must be > 0"),
    (errors.positive(float), "inf", "must be > 0"), (errors.positive(int), "x", "expected a whole number > 0"),
    (errors.non_negative_int, "-1", "must be >= 0"),
])
def test_number_types_refuse(parse, text, message):
    with pytest.raises(Exception, match=message):
        parse(text)
    assert errors.positive(float)("2.5") == 2.5 and errors.non_negative_int("0") == 0
