"""A real two-node Slurm cluster on the test hosts of hvd_mlp/netns.py: Debian's munged, slurmctld and one slurmd per node.

    with SlurmCluster(2, workdir) as cluster:
        job = cluster.slurm(0, "sbatch", "--parsable", "job.sbatch").stdout.strip()   # a client on node1
        cluster.wait_for_job(job, timeout=120)                                         # -> "COMPLETED"

On top of netns.Cluster (nodes node1, node2 at 10.199.77.1, .2, each with sshd): the controller `ctl` listens on
10.199.77.254, an address of the bridge in the switch namespace; each node's slurmd runs in that node's namespace
under its hostname, so a job's tasks run there too. One munged (in the switch namespace; its socket is a file in
the work directory, which every namespace sees) signs for all: it is one machine. Everything the daemons keep
(slurm.conf, cgroup.conf, state, spool, logs, the PMIx directories) lives in the work directory; clients find the
configuration through SLURM_CONF (`cluster.env`). Ports are Slurm's defaults, free by construction: each
namespace has its own. Close kills every daemon and job (netns.Cluster.close sweeps all namespaces).

Choices for one machine without systemd or a cgroup mount inside a namespace: proctrack/linuxproc (the step's
process tree), task/none, no accounting, and CgroupPlugin=cgroup/v1 in cgroup.conf (22.05's autodetect fails
where /sys/fs/cgroup is not mounted, which `ip netns exec` arranges). TmpFS names a directory per node (%n): the
PMIx plugin makes its per-step directory there, and two nodes sharing /tmp would collide on its name.
"""
import os
import shutil
import subprocess
import time

from hvd_mlp.netns import SUBNET, Cluster, namespaces_usable, sh

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "scontrol", "sinfo")
CONTROLLER = ("ctl", f"{SUBNET}.254")


def which(program: str):
    """Its path, also where PATH lacks the sbin directories that hold the daemons."""
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def slurm_usable() -> str:
    """'' when a Slurm cluster can be built here, else why not."""
    why = namespaces_usable()
    if why:
        return why
    missing = [p for p in PROGRAMS if not which(p)]
    if missing:
        return f"Slurm packages missing ({', '.join(missing)} not found): scripts/install.sh installs slurmctld, " \
               "slurmd, slurm-client and munge when run as root"
    return ""


class SlurmCluster(Cluster):
    def _start(self):
        super()._start()
        self.slurm_dir = os.path.join(self.dir, "slurm")
        os.makedirs(self.slurm_dir)
        self.env = {"SLURM_CONF": os.path.join(self.slurm_dir, "slurm.conf")}
        name, address = CONTROLLER
        sh("ip", "netns", "exec", self.switch, "ip", "addr", "add", f"{address}/24", "dev", "br0")
        sh("ip", "netns", "exec", self.switch, "ip", "link", "set", "lo", "up")
        for ns in self.names:
            with open(f"/etc/netns/{ns}/hosts", "a") as fh:
                fh.write(f"{address} {name}\n")
        self._munge()
        self._configure()
        self.daemon(self.switch, name, [which("slurmctld"), "-f", self.env["SLURM_CONF"]], self._path("slurmctld.pid"))
        for ns, host in zip(self.names, self.hostnames):
            for kind in ("spool", "tmp"):
                os.makedirs(self._path(f"{kind}-{host}"))
            self.daemon(ns, host, [which("slurmd"), "-f", self.env["SLURM_CONF"], "-N", host],
                        self._path(f"slurmd-{host}.pid"))
        self._wait_until_idle()

    def _path(self, name: str) -> str:
        return os.path.join(self.slurm_dir, name)

    def _munge(self):
        self.munge_socket = self._path("munge.socket")
        sh(which("mungekey"), "--create", "--keyfile", self._path("munge.key"))
        # --force: munged wants a socket every user can reach; pytest's directories are root's alone, as is every
        # daemon and job here
        self.daemon(self.switch, CONTROLLER[0], [
            which("munged"), "--force", f"--key-file={self._path('munge.key')}", f"--socket={self.munge_socket}",
            f"--pid-file={self._path('munged.pid')}", f"--log-file={self._path('munged.log')}",
            f"--seed-file={self._path('munged.seed')}"], self._path("munged.pid"))

    def _configure(self):
        d = self.slurm_dir
        nodes = "".join(f"NodeName={h} NodeAddr={a} CPUs={os.cpu_count()} State=UNKNOWN\n"
                        for h, a in zip(self.hostnames, self.addresses))
        with open(self.env["SLURM_CONF"], "w") as fh:
            fh.write(f"""# written by tests/slurmcluster.py
ClusterName=hvdtest
SlurmctldHost={CONTROLLER[0]}({CONTROLLER[1]})
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool-%n
TmpFS={d}/tmp-%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
{nodes}PartitionName=main Nodes={','.join(self.hostnames)} Default=YES MaxTime=INFINITE State=UP
""")
        with open(self._path("cgroup.conf"), "w") as fh:
            fh.write("CgroupPlugin=cgroup/v1\n")
        os.makedirs(f"{d}/state")

    def _wait_until_idle(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            states = self.slurm(0, "sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
            if states.count("idle") == self.n:
                return
            time.sleep(0.3)
        logs = "".join(open(self._path(f)).read()[-1500:] for f in sorted(os.listdir(self.slurm_dir))
                       if f.endswith(".log"))
        raise RuntimeError(f"the Slurm nodes did not become idle within {timeout} s (sinfo: {states})\n{logs}")

    # ------------------------------------------------------------------------------------------- use
    def slurm(self, node: int, *cmd, timeout=60, env=None) -> subprocess.CompletedProcess:
        """A Slurm client command (sbatch, scontrol, ...) on node `node`, with this cluster's configuration."""
        return self.run_on(node, list(cmd), timeout=timeout, env={**(env or os.environ), **self.env})

    def job_state(self, job_id: str) -> str:
        out = self.slurm(0, "scontrol", "show", "job", "-o", job_id).stdout
        return next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "")

    def wait_for_job(self, job_id: str, timeout: float) -> str:
        """The job's final state (COMPLETED, FAILED, CANCELLED, ...) once it has left the queue."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.job_state(job_id)
            if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", ""):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {state} after {timeout} s")
