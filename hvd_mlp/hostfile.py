"""Hostfiles in horovodrun's format, checked before a launch.

    python -m hvd_mlp.hostfile check FILE [--np N]
    python -m hvd_mlp.hostfile clean FILE OUT [--np N]   # checked, then written without comments and blanks
    python -m hvd_mlp.hostfile from-slurm [--hostfile]    # inside a Slurm allocation: node1:2,node2:2 for -H

Format: one `<host> slots=<N>` per line. horovodrun itself crashes with a bare IndexError on a comment or a blank
line, and says little on other mistakes; this names the line and the problem.

from-slurm reads Slurm's own variables, SLURM_JOB_NODELIST (compressed: `node[1-3,5],gpu01`) and
SLURM_TASKS_PER_NODE (`2(x3),1`), and needs no Slurm command: the same expansion as `scontrol show hostnames`.
"""
import itertools
import os
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


def lines(hosts: list) -> str:
    """[(host, slots)] as hostfile text, one `<host> slots=<N>` per line."""
    return "".join(f"{host} slots={slots}\n" for host, slots in hosts)


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


def expand_nodelist(text: str, source: str = "SLURM_JOB_NODELIST") -> list:
    """Slurm's compressed host list, expanded in order: `node[01-02,5],gpu1` -> node01, node02, node5, gpu1.
    Several bracket groups in one name are a product (`r[1-2]n[1-2]` -> r1n1 r1n2 r2n1 r2n2), as in Slurm."""
    def bad(why):
        return UserError(f"{source} '{text}': {why}")
    hosts, seen = [], set()
    for name in re.split(r",(?![^\[]*\])", text.strip()):  # commas outside brackets separate names
        name = name.strip()
        if not name:
            raise bad("empty host name")
        parts = re.split(r"(\[[^\[\]]*\])", name)  # text, [ranges], text, ...
        if any(c in part for part in parts[::2] for c in "[]"):
            raise bad(f"unbalanced brackets in '{name}'")
        choices = []
        for k, part in enumerate(parts):
            choices.append([part] if k % 2 == 0 else _expand_ranges(part[1:-1], bad))
        for combination in itertools.product(*choices):
            host = "".join(combination)
            if not HOST.match(host):
                raise bad(f"'{host}' is not a host name")
            if host in seen:
                raise bad(f"host {host} is listed twice")
            seen.add(host)
            hosts.append(host)
    return hosts


def _expand_ranges(text: str, bad) -> list:
    """`01-03,7` -> ['01', '02', '03', '7']: a range keeps the width of its first number (zero padding)."""
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise bad(f"'[{text}]' is not a list of numbers and ranges like 1-4")
        low, high = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if high < low:
            raise bad(f"range {item.strip()} runs backwards")
        out += [str(n).zfill(len(m[1])) for n in range(low, high + 1)]
    return out


def expand_tasks(text: str, source: str = "SLURM_TASKS_PER_NODE") -> list:
    """Slurm's per-node task counts: `2(x3),1` -> [2, 2, 2, 1]."""
    counts = []
    for item in text.strip().split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not m or int(m[1]) == 0 or (m[2] is not None and int(m[2]) == 0):
            raise UserError(f"{source} '{text}': expected counts like '2(x3),1' (each > 0), got '{item.strip()}'")
        counts += [int(m[1])] * int(m[2] or 1)
    return counts


def from_slurm(nodelist: str, tasks_per_node: str) -> list:
    """[(host, slots)] of a Slurm allocation, from its SLURM_JOB_NODELIST and SLURM_TASKS_PER_NODE values."""
    hosts, counts = expand_nodelist(nodelist), expand_tasks(tasks_per_node)
    if len(hosts) != len(counts):
        raise UserError(f"SLURM_JOB_NODELIST '{nodelist}' names {len(hosts)} host(s) but SLURM_TASKS_PER_NODE "
                        f"'{tasks_per_node}' gives {len(counts)} count(s)")
    return list(zip(hosts, counts))


def _slurm_variable(value, name: str) -> str:
    value = value if value is not None else os.environ.get(name)
    if not value:
        raise UserError(f"{name} is not set: run this inside a Slurm allocation (sbatch, salloc) or pass "
                        f"--{'nodelist' if 'NODELIST' in name else 'tasks-per-node'}")
    return value


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
    s = sub.add_parser("from-slurm", help="the allocation's hosts from SLURM_JOB_NODELIST and SLURM_TASKS_PER_NODE: "
                                          "host:slots,... for horovodrun -H (or hostfile lines)")
    s.add_argument("--nodelist", help="instead of $SLURM_JOB_NODELIST, e.g. 'node[1-3,5]'")
    s.add_argument("--tasks-per-node", help="instead of $SLURM_TASKS_PER_NODE, e.g. '2(x3),1'")
    s.add_argument("--hostfile", action="store_true", help="print '<host> slots=<N>' lines instead")
    args = parser.parse_args(argv)
    if args.command == "from-slurm":
        hosts = from_slurm(_slurm_variable(args.nodelist, "SLURM_JOB_NODELIST"),
                           _slurm_variable(args.tasks_per_node, "SLURM_TASKS_PER_NODE"))
        print(lines(hosts).rstrip("\n") if args.hostfile else ",".join(f"{h}:{s}" for h, s in hosts))
        return
    hosts = check(args.file, args.np)
    if args.command == "clean":
        try:
            with atomic_file(args.out, "w") as fh:
                fh.write(lines(hosts))
        except OSError as e:  # checked up front; this is e.g. a full disk
            raise UserError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"{args.file}: {len(hosts)} host(s), {sum(s for _, s in hosts)} slots: "
          + ", ".join(f"{h} ({s})" for h, s in hosts))


if __name__ == "__main__":
    main()
