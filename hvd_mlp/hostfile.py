"""Hostfiles in horovodrun's format, checked before a launch.

    python -m hvd_mlp.hostfile check FILE [--np N]
    python -m hvd_mlp.hostfile clean FILE OUT [--np N]   # checked, then written without comments and blanks

Format: one `<host> slots=<N>` per line. horovodrun itself crashes with a bare IndexError on a comment or a blank
line, and says little on other mistakes; this names the line and the problem.
"""
import re

from hvd_mlp.errors import ArgumentParser, UserError, command_line, non_negative_int, output_file
from hvd_mlp.storage import atomic_file

HOST = re.compile(r"^[A-Za-z0-9_.:\[\]-]+$")


def parse(text: str, source: str = "hostfile") -> list:
    """[(host, slots)] in file order; UserError naming the first bad line."""
    hosts, seen = [], {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{source}:{number}"
        if not HOST.match(fields[0]):
            raise UserError(f"{where}: '{fields[0]}' is not a host name or address")
        if len(fields) != 2 or not fields[1].startswith("slots="):
            raise UserError(f"{where}: expected '<host> slots=<N>', got '{line}'")
        value = fields[1][len("slots="):]
        if not re.fullmatch(r"-?\d+", value):
            raise UserError(f"{where}: slots must be a whole number, got '{value}'")
        if int(value) <= 0:
            raise UserError(f"{where}: slots must be > 0, got {value}")
        if fields[0] in seen:
            raise UserError(f"{where}: host {fields[0]} is listed again (first on line {seen[fields[0]]})")
        seen[fields[0]] = number
        hosts.append((fields[0], int(value)))
    if not hosts:
        raise UserError(f"{source}: no hosts")
    return hosts


def read(path: str) -> list:
    try:
        with open(path) as fh:
            return parse(fh.read(), path)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read hostfile {path}: {getattr(e, 'strerror', None) or e}") from None


def check(path: str, np_: int = 0) -> list:
    hosts = read(path)
    total = sum(slots for _, slots in hosts)
    if np_ and total < np_:
        raise UserError(f"{path}: {total} slots in all, fewer than -np {np_}")
    return hosts


@command_line("hvd_mlp.hostfile")
def main(argv=None):
    parser = ArgumentParser(prog="hvd_mlp.hostfile", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate a hostfile (and that it has -np slots)")
    k = sub.add_parser("clean", help="write the hostfile without comments and blank lines, for horovodrun")
    for p in (c, k):
        p.add_argument("file", help="the hostfile: one '<host> slots=<N>' per line, # comments allowed")
    k.add_argument("out", type=output_file, help="the clean hostfile to write (replaced atomically)")
    for p in (c, k):
        p.add_argument("--np", type=non_negative_int, default=0,
                       help="processes the launch will start: check there are that many slots (default: 0, no check)")
    args = parser.parse_args(argv)
    hosts = check(args.file, args.np)
    if args.command == "clean":
        try:
            with atomic_file(args.out, "w") as fh:
                fh.writelines(f"{host} slots={slots}\n" for host, slots in hosts)
        except OSError as e:  # checked up front; this is e.g. a full disk
            raise UserError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"{args.file}: {len(hosts)} host(s), {sum(s for _, s in hosts)} slots: "
          + ", ".join(f"{h} ({s})" for h, s in hosts))


if __name__ == "__main__":
    main()
