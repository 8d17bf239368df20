"""Hosts on this machine: network namespaces on a private bridge, each with its own hostname and sshd.

    with Cluster(2, workdir) as cluster:
        cluster.run_on(0, ["horovodrun", ...])   # the launcher runs on node1 (start_on: without waiting)
        cluster.lose(1); cluster.bring_back(1)   # node2 gone (every process, sshd too), then its sshd again
        cluster.shape(1e9)                       # every host's link at 1 Gbit/s each way (None: unshaped)

Layout: namespace <prefix>sw holds a bridge; each node namespace <prefix>nK holds one end of a veth pair (named
hvd0, address 10.199.77.K/24), the other end on the bridge. Nothing is added to the machine's own network
namespace. Whatever runs "on" node K (run_on, daemon) runs in its namespace under hostname nodeK (its own UTS
namespace) and sees a private ~/.ssh (a bind mount in its own mount namespace) holding a key made here and a config
that keeps known_hosts out of root's home. Each node runs sshd so, listening only on its address, root login by
that key, its own AuthorizedKeysFile. /etc/netns/<ns>/hosts (which `ip netns exec` mounts over /etc/hosts) names
the nodes. Everything is removed on exit, also after a failure: daemons and whatever still runs in a namespace.
The multi-node tests and `python -m hvd_mlp.bench links` build their hosts with it.

shape() puts a token bucket (tc tbf) on each node's hvd0, its egress: every byte from one host to another passes
exactly one, as a full-duplex NIC of that rate would. tbf counts whole frames (Ethernet + IP + TCP headers), so a
TCP stream's payload tops out ~4% below the rate. The burst is kept small (1 ms of the rate, at least 64 kB for
the veth's GSO frames): a bucket that refills during a step's compute would let a whole allreduce out unshaped.
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

SUBNET = "10.199.77"
SSHD = "/usr/sbin/sshd"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(map(str, cmd)), check=check, capture_output=True, text=True, **kw)


def namespaces_usable() -> str:
    """'' when this process may create namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip") or not shutil.which("unshare") or not os.path.exists(SSHD):
        return "needs iproute2, util-linux unshare and openssh-server (scripts/install.sh installs them)"
    probe = f"hvdprobe{os.getpid()}"
    proc = sh("ip", "netns", "add", probe, check=False)
    if proc.returncode:
        return f"cannot create a network namespace here: {proc.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return ""


def burst_bytes(rate_bps) -> int:
    """The token bucket shape() gives a link: 1 ms of its rate, at least 64 kB; 0 unshaped."""
    return max(int(rate_bps / 8 * 1e-3), 65536) if rate_bps else 0


def launcher_env() -> dict:
    """The environment of a launcher across hosts: this venv first on PATH (HVD_MLP_VENV for the scripts), this
    checkout's hvd_mlp on every host, and no Horovod, Open MPI or Slurm settings leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_", "SLURM_"))}
    bin_dir = os.path.dirname(sys.executable)
    return {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}", "HVD_MLP_VENV": os.path.dirname(bin_dir),
            "PYTHONPATH": REPO}


class Cluster:
    def __init__(self, nodes: int, workdir, session_env=None):
        """session_env: {node index: {NAME: value}}, set by that node's sshd for everything started over ssh there
        (e.g. libfaketime: a host whose clock is off)."""
        self.n, self.dir, self.session_env = nodes, str(workdir), session_env or {}
        self.prefix = f"hvd{os.getpid() % 100000}"
        self.switch = f"{self.prefix}sw"
        self.names = [f"{self.prefix}n{k}" for k in range(1, nodes + 1)]
        self.addresses = [f"{SUBNET}.{k}" for k in range(1, nodes + 1)]
        self.hostnames = [f"node{k}" for k in range(1, nodes + 1)]
        self.daemon_pids = []

    # ------------------------------------------------------------------------------------------- set up
    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self):
        self._network()
        self._ssh()

    def __exit__(self, *exc):
        self.close()

    def _network(self):
        sh("ip", "netns", "add", self.switch)
        sh("ip", "netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for a, h in zip(self.addresses, self.hostnames))
        for k, (ns, addr) in enumerate(zip(self.names, self.addresses), 1):
            sh("ip", "netns", "add", ns)
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as fh:
                fh.write(hosts)
            # veth pair created inside the switch namespace, one end moved into the node
            sh("ip", "netns", "exec", self.switch, "ip", "link", "add", f"p{k}", "type", "veth", "peer", "name", "hvd0")
            sh("ip", "netns", "exec", self.switch, "ip", "link", "set", "hvd0", "netns", ns)
            sh("ip", "netns", "exec", self.switch, "ip", "link", "set", f"p{k}", "master", "br0", "up")
            for cmd in (["ip", "addr", "add", f"{addr}/24", "dev", "hvd0"], ["ip", "link", "set", "hvd0", "up"],
                        ["ip", "link", "set", "lo", "up"]):
                sh("ip", "netns", "exec", ns, *cmd)

    def _ssh(self):
        dot_ssh = os.path.join(self.dir, "dotssh")
        os.makedirs(dot_ssh, mode=0o700)
        self.key = os.path.join(dot_ssh, "id_ed25519")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key)
        shutil.copy(self.key + ".pub", os.path.join(self.dir, "authorized_keys"))
        with open(os.path.join(dot_ssh, "config"), "w") as fh:
            fh.write(f"Host *\n  IdentityFile {self.key}\n  UserKnownHostsFile /dev/null\n"
                     "  StrictHostKeyChecking no\n  LogLevel ERROR\n")
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        for k, addr in enumerate(self.addresses, 1):
            host_key = os.path.join(self.dir, f"host_key{k}")
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key)
            with open(os.path.join(self.dir, f"sshd{k}.conf"), "w") as fh:
                fh.write(f"ListenAddress {addr}\nPort 22\nHostKey {host_key}\nPidFile {self.dir}/sshd{k}.pid\n"
                         f"AuthorizedKeysFile {self.dir}/authorized_keys\nPermitRootLogin prohibit-password\n"
                         "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                         "AcceptEnv *\nPermitUserEnvironment no\n")
                env = self.session_env.get(k - 1)
                if env:
                    fh.write("SetEnv " + " ".join(f"{name}={value}" for name, value in env.items()) + "\n")
            self._start_sshd(k - 1)

    def _start_sshd(self, node: int) -> int:
        """Start node's sshd from its config (written by _ssh); its pid."""
        config, pid_file = os.path.join(self.dir, f"sshd{node + 1}.conf"), os.path.join(self.dir, f"sshd{node + 1}.pid")
        if os.path.exists(pid_file):
            os.remove(pid_file)  # a lost host's: daemon() waits for the new one
        return self.daemon(self.names[node], self.hostnames[node], [SSHD, "-f", config], pid_file)

    def daemon(self, ns: str, hostname: str, cmd: list, pid_file: str, timeout=10) -> int:
        """Start a self-daemonising server on a host (_on_host): everything it starts (an ssh session, a Slurm
        job) sees that host's hostname and ~/.ssh. Returns its pid, once its pid file names it."""
        sh(*self._on_host(ns, hostname, cmd))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(pid_file) and open(pid_file).read().strip():
                pid = int(open(pid_file).read())
                self.daemon_pids.append(pid)
                return pid
            time.sleep(0.1)
        raise RuntimeError(f"{os.path.basename(str(cmd[0]))} did not start in {ns} ({pid_file})")

    # ------------------------------------------------------------------------------------------- use
    def hostfile(self, slots=1) -> str:
        path = os.path.join(self.dir, "hostfile")
        with open(path, "w") as fh:
            fh.write("# written by hvd_mlp/netns.py\n\n")  # comments and blanks: launch.sh must cope
            fh.writelines(f"{a} slots={slots}\n" for a in self.addresses)
        return path

    def shape(self, rate_bps):
        """Every node's link at rate_bps bits/s each way (tc tbf on its hvd0); None: no shaping (replaces any)."""
        for ns in self.names:
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "hvd0", "root", check=False)
            if rate_bps:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "hvd0", "root", "tbf", "rate",
                   f"{int(rate_bps)}bit", "burst", burst_bytes(rate_bps), "latency", "50ms")

    def sent_bytes(self, node: int) -> int:
        """Bytes node `node` has sent on hvd0 so far: what went on the wire, headers included."""
        out = sh("ip", "netns", "exec", self.names[node], "ip", "-s", "-j", "link", "show", "dev", "hvd0").stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    def _on_host(self, ns: str, hostname: str, cmd: list) -> list:
        """The command line that runs cmd as on a host: in namespace ns, under its own hostname, with a private
        ~/.ssh (a bind mount in its own mount namespace) holding this cluster's key and ssh config."""
        home_ssh = os.path.expanduser("~/.ssh")
        os.makedirs(home_ssh, exist_ok=True)  # the bind mount needs a mount point
        command = shlex.join(map(str, cmd))
        script = f"hostname {hostname} && mount --bind {self.dir}/dotssh {home_ssh} && exec {command}"
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script]

    def run_on(self, node: int, cmd: list, timeout: int, env=None):
        """Run cmd on node `node` (_on_host), as the launcher there would."""
        return subprocess.run(self._on_host(self.names[node], self.hostnames[node], cmd),
                              capture_output=True, text=True, timeout=timeout, env=env)

    def start_on(self, node: int, cmd: list, log, env=None) -> subprocess.Popen:
        """run_on without waiting: output to the open file `log`."""
        return subprocess.Popen(self._on_host(self.names[node], self.hostnames[node], cmd),
                                stdout=log, stderr=subprocess.STDOUT, env=env)

    def lose(self, node: int):
        """The host is gone: every process in its namespace killed, its sshd included."""
        self._kill_all(self.names[node])

    def bring_back(self, node: int):
        """The host is back: its sshd answers again."""
        self._start_sshd(node)

    @staticmethod
    def _kill_all(ns: str):
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    # ------------------------------------------------------------------------------------------- tear down
    def close(self):
        for pid in self.daemon_pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for ns in [*self.names, self.switch]:  # anything still running in a namespace (a hung worker) goes too
            self._kill_all(ns)
        for ns in [*self.names, self.switch]:
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)

