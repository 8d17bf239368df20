"""CPU cgroups for tests: slow one rank from the outside with a CPU quota, or keep other sessions' load off the ranks
with a large CPU weight.

    with CpuGroup("fast", weight=16) as fast, CpuGroup("slow", weight=16, quota=0.2) as slow:
        wrapper = launch_in_groups(tmp_path, {0: fast, 1: slow})   # horovodrun ... wrapper python -m ...

Why not `nice`: with autogroup scheduling (the default of most distributions) the kernel first shares the CPUs
between sessions, so a process's nice value only ranks it inside its own session. Why not a busy process on a rank's
core: a rank that blocks while it waits (Gloo) wakes with the scheduler's sleeper credit and preempts it; measured
here, one busy process made a Gloo rank only 1.3-1.7x slower, an MPI rank (which polls) 3x. A quota is exact for both.
Uses the cgroup v1 cpu controller, or cgroup v2 with the cpu controller enabled; needs root.
"""
import os
import time

V1 = "/sys/fs/cgroup/cpu"
V2 = "/sys/fs/cgroup"
PERIOD_US = 10_000  # a short period: the quota throttles within each step, not in 100 ms bursts


def _root():
    if os.path.exists(os.path.join(V1, "cpu.cfs_quota_us")):
        return V1, 1
    try:
        if "cpu" in open(os.path.join(V2, "cgroup.subtree_control")).read().split():
            return V2, 2
    except OSError:
        pass
    return None, 0


def cgroups_usable() -> str:
    """'' when this process can make CPU cgroups, else why not."""
    root, version = _root()
    if os.geteuid() != 0:
        return "CPU cgroups need root"
    if not version:
        return "no cgroup cpu controller here (v1 cpu, or v2 with +cpu in cgroup.subtree_control)"
    probe = os.path.join(root, f"hvd_mlp-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        return f"cannot create a cgroup under {root}: {e.strerror}"
    return ""


class CpuGroup:
    def __init__(self, name: str, weight: float = 1.0, quota: float = 0.0):
        self.root, self.version = _root()
        self.path = os.path.join(self.root, f"hvd_mlp-{name}-{os.getpid()}")
        self.weight, self.quota = weight, quota
        self.procs = os.path.join(self.path, "cgroup.procs")

    def __enter__(self):
        os.mkdir(self.path)
        if self.version == 1:
            self._set("cpu.shares", int(1024 * self.weight))
            if self.quota:
                self._set("cpu.cfs_period_us", PERIOD_US)
                self._set("cpu.cfs_quota_us", int(self.quota * PERIOD_US))
        else:
            self._set("cpu.weight", int(min(10_000, 100 * self.weight)))
            if self.quota:
                self._set("cpu.max", f"{int(self.quota * PERIOD_US)} {PERIOD_US}")
        return self

    def _set(self, name, value):
        with open(os.path.join(self.path, name), "w") as fh:
            fh.write(str(value))

    def __exit__(self, *exc):
        for _ in range(50):  # the ranks have exited, but the kernel may need a moment to empty the group
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def launch_in_groups(directory, groups: dict) -> str:
    """A wrapper for horovodrun's command: it puts its rank (HOROVOD_RANK under Gloo, OMPI_COMM_WORLD_RANK under
    MPI) into groups[rank], then execs the command."""
    path = os.path.join(str(directory), "in-cgroup.sh")
    cases = "".join(f"  {rank}) echo $$ > {group.procs} ;;\n" for rank, group in groups.items())
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\n"
                 'case "${HOROVOD_RANK:-$OMPI_COMM_WORLD_RANK}" in\n' + cases + "esac\n"
                 'exec "$@"\n')
    os.chmod(path, 0o755)
    return path
