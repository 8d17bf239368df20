"""Elastic training, measured: a worker dies, its host leaves and comes back. Does the job grow back, every time?

    python -m hvd_mlp.bench elastic [--tries 20] [--fault kill|grow-kill|commit-kill] [--epochs 12] [--keep DIR]

One try runs on this machine under two host names (localhost and 127.0.0.1: Horovod blacklists the host of a failed
worker): horovodrun -np 2 --min-np 1 --max-np 2 with scripts/discover_hosts.sh reading a hostfile the try edits.
  1. a fault: `kill` SIGKILLs rank 1 in epoch 2 once rank 0 printed its step 25 (commits every 10 steps);
     `commit-kill` kills rank 0 inside state.commit() at the end of epoch 2, after it wrote results.json and the
     checkpoint. The dead rank's host leaves the hostfile (the capacity is gone); the job must shrink to 1 and go on.
  2. once the discovery reported it gone, the host is listed again (the capacity is back): the job must grow to 2
     within --grow-limit seconds.
     `grow-kill` then kills the new worker while the job grows (its host leaves and returns once more).
  3. the job must end (exit 0) with every epoch once and complete, the same parameters on every rank, a checkpoint
     of the last epoch, and world_changes in results.json telling what rank 0 printed.
"""
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from hvd_mlp import results, storage
from hvd_mlp.errors import UserError, positive

BIN = os.path.dirname(sys.executable)
DISCOVERY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "discover_hosts.sh")
HOSTS = ("localhost", "127.0.0.1")
SAMPLES = 20000
NEWCOMER_DIES_AFTER = (0.5, 2.0, 4.0, 6.0)  # grow-kill, try by try: s after the new worker started
# commit-kill: loaded by every Python process of the try (PYTHONPATH); only the chosen rank dies, once
KILL_IN_COMMIT = '''import os, signal
if os.environ.get("HVD_MLP_BENCH_KILL_IN_COMMIT"):
    from horovod.common import elastic as _elastic
    _rank, _epoch, _marker = os.environ["HVD_MLP_BENCH_KILL_IN_COMMIT"].split(":", 2)
    _commit = _elastic.State.commit

    def _dying_commit(self):
        if os.environ.get("HOROVOD_RANK") == _rank and getattr(self, "epoch", 0) == int(_epoch) \\
                and getattr(self, "samples_done", 1) == 0 and not os.path.exists(_marker):
            open(_marker, "w").close()
            self.save()  # the snapshot is taken; the process dies before commit's collective check of the hosts
            os.kill(os.getpid(), signal.SIGKILL)
        return _commit(self)
    _elastic.State.commit = _dying_commit
'''


def observed_discovery(workdir: str) -> str:
    """scripts/discover_hosts.sh, also noting each answer in workdir/discovered: a host must have been seen gone
    before it returns, or Horovod never knew it left (horovodrun runs the script every 1 s, plus a Python process
    start for each run: seconds under load)."""
    path = os.path.join(workdir, "discover.sh")
    with open(path, "w") as fh:
        fh.write(f"#!/usr/bin/env bash\nset -euo pipefail\nhosts=$({shlex.quote(DISCOVERY)})\necho \"$hosts\"\n"
                 f"echo $hosts >> {shlex.quote(os.path.join(workdir, 'discovered'))}\n")
    os.chmod(path, 0o755)
    return path


def discovered(workdir: str) -> list:
    """The discovery's answers so far, each the set of host names it listed."""
    try:
        with open(os.path.join(workdir, "discovered")) as fh:
            return [{token.split(":")[0] for token in line.split()} for line in fh]
    except FileNotFoundError:
        return []


@dataclass
class Try:
    """What one try saw; `problems` empty = a success."""
    problems: list = field(default_factory=list)
    shrink_s: float = 0.0  # the kill -> rank 0's world line of the smaller world
    returned_us: list = field(default_factory=list)  # when the host was listed again (the growth measured)
    grow_s: list = field(default_factory=list)  # -> the world recorded at 2 ranks, per return in returned_us
    sizes: list = field(default_factory=list)
    note: str = ""  # grow-kill: when the new worker was killed
    wall_s: float = 0.0


class Job:
    """The try's horovodrun, its hostfile and its output."""

    def __init__(self, workdir: str, epochs: int, fault: str):
        self.dir, self.out, self.log = workdir, os.path.join(workdir, "run"), os.path.join(workdir, "log")
        self.hostfile = os.path.join(workdir, "hosts")
        self.listed = list(HOSTS)
        self.write_hosts()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOROVOD_")}
        env.update(PATH=f"{BIN}:{env['PATH']}", HVD_MLP_HOSTFILE=self.hostfile)
        if fault == "commit-kill":
            with open(os.path.join(workdir, "sitecustomize.py"), "w") as fh:
                fh.write(KILL_IN_COMMIT)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [workdir, env.get("PYTHONPATH")]))
            env["HVD_MLP_BENCH_KILL_IN_COMMIT"] = f"0:3:{os.path.join(workdir, 'killed')}"
        cmd = [os.path.join(BIN, "horovodrun"), "-np", "2", "--min-np", "1", "--max-np", "2",
               "--network-interfaces", "lo", "--host-discovery-script", observed_discovery(workdir),
               sys.executable, "-m", "hvd_mlp.train", "--elastic", "--dataset", "synthetic", "--synthetic-size",
               str(SAMPLES), "--epochs", str(epochs), "--log-every", "25", "--commit-every", "10", "--threads", "1",
               "--output-dir", self.out]
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def write_hosts(self):
        tmp = self.hostfile + ".tmp"  # the discovery script must never read a half-written file
        with open(tmp, "w") as fh:
            fh.writelines(f"{h} slots=1\n" for h in self.listed)
        os.replace(tmp, self.hostfile)

    def text(self) -> str:
        with open(self.log, errors="replace") as fh:
            return fh.read()

    def epochs_done(self) -> int:
        return sum(line.split(":", 1)[-1].startswith("epoch ") for line in self.text().splitlines())

    def workers(self) -> dict:
        """{pid: (launcher host name, rank at launch)} of this job's training processes."""
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read().decode(errors="replace")
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    env = dict(v.split("=", 1) for v in fh.read().decode(errors="replace").split("\0") if "=" in v)
            except OSError:
                continue
            if "hvd_mlp.train" in cmdline and self.out in cmdline and "HOROVOD_HOSTNAME" in env:
                found[int(pid)] = (env["HOROVOD_HOSTNAME"], env.get("HOROVOD_RANK"))
        return found

    def wait(self, predicate, timeout: float):
        """predicate()'s first true value within timeout s, else a false one (also once the job ended)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value or self.proc.poll() is not None:
                return value
            time.sleep(0.1)
        return None

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in self.workers():  # horovodrun starts each in a session of its own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def lose_and_return(job: Job, host: str, t: Try, grow_limit: float, then=None) -> bool:
    """The host leaves the hostfile; once Horovod's discovery has seen it gone (and 1 s more) it is back; the job
    must grow to 2 ranks within grow_limit s. `then(pids_before)` runs right after it is listed again (grow-kill)."""
    answers = len(discovered(job.dir))
    job.listed = [h for h in job.listed if h != host]
    job.write_hosts()
    if not job.wait(lambda: any(host not in a for a in discovered(job.dir)[answers:]), 60):
        t.problems.append(f"the discovery did not report {host} gone within 60 s")
        return False
    time.sleep(1)
    before = set(job.workers())
    job.listed.append(host)
    job.write_hosts()
    back_us, grown = time.time_ns() // 1000, job.text().count("world: 1 -> 2")
    if then:
        return then(before)
    if not job.wait(lambda: job.text().count("world: 1 -> 2") > grown, grow_limit):
        t.problems.append(f"no growth within {grow_limit:.0f} s of {host} being listed again")
        return False
    t.returned_us.append(back_us)  # the time to grow comes from results.json's world change at the end
    return True


def run_try(workdir: str, epochs: int = 12, fault: str = "kill", grow_limit: float = 60, timeout: float = 600,
            newcomer_dies_after: float = 1.0) -> Try:
    """One try (the module's docstring); grow-kill kills the new worker newcomer_dies_after s after it started."""
    t, start = Try(), time.time()
    job = Job(workdir, epochs, fault)
    try:
        if not job.wait(lambda: "epoch 1/" in job.text(), 120):
            t.problems.append("no first epoch within 120 s")
            return finish(job, t, start, epochs)
        if fault == "commit-kill":  # rank 0 kills itself in the commit at the end of epoch 2
            first = dict(job.workers())
            if not job.wait(lambda: os.path.exists(os.path.join(workdir, "killed")), 60):
                t.problems.append("rank 0 did not reach the commit at the end of epoch 2 within 60 s")
                return finish(job, t, start, epochs)
            killed_at = time.time()
            lost = next((h for h, rank in first.values() if rank == "0"), None)
        else:
            # mid-epoch 2, past its commits at steps 10 and 20, whatever the machine's load
            if not job.wait(lambda: "epoch 2 step 25/" in job.text(), 60):
                t.problems.append("no step 25 of epoch 2 within 60 s")
                return finish(job, t, start, epochs)
            victim = next(((pid, h) for pid, (h, rank) in job.workers().items() if rank == "1"), None)
            if victim is None:
                t.problems.append("rank 1 not found")
                return finish(job, t, start, epochs)
            os.kill(victim[0], signal.SIGKILL)
            killed_at, lost = time.time(), victim[1]
        if not job.wait(lambda: "world: 2 -> 1" in job.text(), 60):
            t.problems.append("no shrink to 1 rank within 60 s")
            return finish(job, t, start, epochs)
        t.shrink_s = time.time() - killed_at
        if fault == "grow-kill":
            def kill_newcomer(before):
                new = job.wait(lambda: [p for p in job.workers() if p not in before], 60)
                if not new:
                    t.problems.append("no new worker started within 60 s")
                    return False
                time.sleep(newcomer_dies_after)  # importing torch, in the rendezvous, or syncing the state
                os.kill(new[0], signal.SIGKILL)
                t.note = f"new worker killed {newcomer_dies_after:.1f} s after it started | "
                return True
            if not lose_and_return(job, lost, t, grow_limit, then=kill_newcomer):
                return finish(job, t, start, epochs)
            done = job.epochs_done()  # training goes on once the driver recorded the failure (its host blacklisted)
            if not job.wait(lambda: job.epochs_done() > done, 120):
                t.problems.append("no epoch finished within 120 s of the kill during the growth")
                return finish(job, t, start, epochs)
        lose_and_return(job, lost, t, grow_limit)
        try:
            job.proc.wait(timeout=max(1.0, timeout - (time.time() - start)))
        except subprocess.TimeoutExpired:
            t.problems.append(f"the job did not end within {timeout:.0f} s")
    finally:
        job.stop()
    return finish(job, t, start, epochs)


def finish(job: Job, t: Try, start: float, epochs: int) -> Try:
    """Check what the job left behind; grow times from the world changes rank 0 recorded."""
    job.stop()
    t.wall_s = time.time() - start
    if job.proc.returncode:
        t.problems.append(f"horovodrun exited with {job.proc.returncode}")
    try:
        record = results.read(job.out)
    except UserError as e:
        t.problems.append(str(e))
        return t
    t.sizes = [c.size for c in record.world_changes]
    grown = [c.unix_us for c in record.world_changes if c.size > c.previous_size > 0]
    t.grow_s = [(min(g for g in grown if g > back) - back) / 1e6 for back in t.returned_us
                if any(g > back for g in grown)]
    t.problems += check_record(record, job.text(), epochs)
    try:
        saved = storage.read_checkpoint(os.path.join(job.out, "checkpoint.pt"))["epoch"]
        if saved != epochs:
            t.problems.append(f"checkpoint holds epoch {saved}, not {epochs}")
    except UserError as e:
        t.problems.append(str(e))
    return t


def check_record(record, log: str, epochs: int) -> list:
    """Every epoch once and complete, identical parameters, the printed world lines = world_changes."""
    problems = []
    if [e.epoch for e in record.epochs] != list(range(1, epochs + 1)):
        problems.append(f"epochs {[e.epoch for e in record.epochs]}, not 1..{epochs} once each")
    for e in record.epochs:  # after the last change + committed before it; the tail left over is < ranks
        if not SAMPLES - max(1, e.world_size) < e.samples + e.resumed_at_samples <= SAMPLES:
            problems.append(f"epoch {e.epoch} trained {e.samples + e.resumed_at_samples} of {SAMPLES} samples")
    digests = record.world.param_digests if record.world else []
    if len(set(digests)) != 1 or len(digests) != record.world.size:
        problems.append(f"parameters differ across ranks: {digests}")
    printed = [line.split("world: ", 1)[1].split(" ranks")[0] for line in log.splitlines() if "world: " in line]
    told = [f"{c.previous_size} -> {c.size}" for c in record.world_changes[1:]]
    if printed != told:
        problems.append(f"printed world changes {printed} but results.json has {told}")
    if not record.world_changes or record.world_changes[-1].size != 2:
        problems.append(f"world sizes {[c.size for c in record.world_changes]} do not end at 2 ranks")
    return problems


def describe(i: int, tries: int, t: Try) -> str:
    story = " -> ".join(map(str, t.sizes)) or "?"
    grow = ", ".join(f"{g:.1f} s" for g in t.grow_s) or "-"
    head = f"try {i}/{tries}: {'ok' if not t.problems else 'FAILED'} | ranks {story} | shrink {t.shrink_s:.1f} s " \
           f"after the kill | {t.note}grew {grow} after the host returned | {t.wall_s:.0f} s"
    return head + "".join(f"\n    {p}" for p in t.problems)


def bench_elastic(args):
    if args.epochs < 3:
        raise UserError(f"--epochs must be at least 3 (the fault comes in epoch 2, the job grows after it), "
                        f"got {args.epochs}")
    if not os.path.exists(DISCOVERY):
        raise UserError(f"{DISCOVERY} is missing: run from a checkout of hvd_mlp (pip install -e .)")
    grows, ok = [], 0
    with tempfile.TemporaryDirectory(prefix="hvd_mlp-elastic-") as tmp:
        base = args.keep or tmp
        for i in range(1, args.tries + 1):
            workdir = os.path.join(base, f"try{i}")
            os.makedirs(workdir, exist_ok=True)
            t = run_try(workdir, args.epochs, args.fault, args.grow_limit,
                        newcomer_dies_after=NEWCOMER_DIES_AFTER[(i - 1) % len(NEWCOMER_DIES_AFTER)])
            ok += not t.problems
            grows += t.grow_s
            print(describe(i, args.tries, t), flush=True)
    summary = f"median {statistics.median(grows):.1f} s, max {max(grows):.1f} s" if grows else "-"
    print(f"tries {args.tries} | successes {ok} | time to grow ({args.fault}): {summary} "
          f"(limit {args.grow_limit:.0f} s)", flush=True)
    if ok < args.tries:
        raise UserError(f"{args.tries - ok} of {args.tries} tries failed")


def add_parser(sub):
    e = sub.add_parser("elastic", help="kill a worker, take its host away and back: tries / successes / time to grow")
    e.add_argument("--tries", type=positive(), default=20, help="(default: 20)")
    e.add_argument("--fault", choices=("kill", "grow-kill", "commit-kill"), default="kill",
                   help="kill: rank 1 mid-epoch; grow-kill: also the new worker while the job grows; commit-kill: "
                        "rank 0 inside state.commit() (default: kill)")
    e.add_argument("--epochs", type=positive(), default=12, help="epochs of each try's job, at least 3 (default: 12)")
    e.add_argument("--grow-limit", type=positive(float), default=60,
                   help="seconds the job may take to grow (default: 60)")
    e.add_argument("--keep", default="", help="keep each try's log and run directory under this directory")
