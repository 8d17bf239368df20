"""Test hosts on this machine: network namespaces on a private bridge, each with its own hostname and sshd.

    with Cluster(2, workdir) as cluster:
        cluster.run_on(0, ["horovodrun", ...])   # the launcher runs on node1

Layout: namespace <prefix>sw holds a bridge; each node namespace <prefix>nK holds one end of a veth pair (named
hvd0, address 10.199.77.K/24), the other end on the bridge. Nothing is added to the machine's own network
namespace. Each node runs sshd under `unshare --uts` with hostname nodeK, listening only on its address, root login
by a key made here, its own AuthorizedKeysFile. /etc/netns/<ns>/hosts (which `ip netns exec` mounts over
/etc/hosts) names the nodes. The launcher's ssh client sees a private ~/.ssh (a bind mount in its own mount
namespace) holding the key and a config that keeps known_hosts out of root's home. Everything is removed on exit,
also after a failure.
"""
import os
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
        self.sshd_pids = []

    # ------------------------------------------------------------------------------------------- set up
    def __enter__(self):
        try:
            self._network()
            self._ssh()
        except BaseException:
            self.close()
            raise
        return self

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
        for k, (ns, addr, host) in enumerate(zip(self.names, self.addresses, self.hostnames), 1):
            host_key = os.path.join(self.dir, f"host_key{k}")
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key)
            config = os.path.join(self.dir, f"sshd{k}.conf")
            pid_file = os.path.join(self.dir, f"sshd{k}.pid")
            with open(config, "w") as fh:
                fh.write(f"ListenAddress {addr}\nPort 22\nHostKey {host_key}\nPidFile {pid_file}\n"
                         f"AuthorizedKeysFile {self.dir}/authorized_keys\nPermitRootLogin prohibit-password\n"
                         "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                         "AcceptEnv *\nPermitUserEnvironment no\n")
                env = self.session_env.get(k - 1)
                if env:
                    fh.write("SetEnv " + " ".join(f"{name}={value}" for name, value in env.items()) + "\n")
            # its own UTS namespace: hostname nodeK for everything started through this sshd
            sh("ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", f"hostname {host} && exec {SSHD} -f {config}")
            self.sshd_pids.append(self._wait_for_pid(pid_file))

    @staticmethod
    def _wait_for_pid(pid_file, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(pid_file) and open(pid_file).read().strip():
                return int(open(pid_file).read())
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not start ({pid_file})")

    # ------------------------------------------------------------------------------------------- use
    def hostfile(self, slots=1) -> str:
        path = os.path.join(self.dir, "hostfile")
        with open(path, "w") as fh:
            fh.write("# written by tests/netns.py\n\n")  # comments and blanks: launch.sh must cope
            fh.writelines(f"{a} slots={slots}\n" for a in self.addresses)
        return path

    def run_on(self, node: int, cmd: list, timeout: int, env=None):
        """Run cmd inside node's namespace, hostname and a private ~/.ssh, as the launcher there would."""
        home_ssh = os.path.expanduser("~/.ssh")
        os.makedirs(home_ssh, exist_ok=True)  # the bind mount needs a mount point
        inner = " ".join(f"'{c}'" for c in map(str, cmd))
        script = f"hostname {self.hostnames[node]} && mount --bind {self.dir}/dotssh {home_ssh} && exec {inner}"
        return subprocess.run(["ip", "netns", "exec", self.names[node], "unshare", "--uts", "--mount",
                               "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def train(self, controller: str, out, timeout: int = 300):
        """2 epochs of a small synthetic set across the nodes, the timeline window on: scripts/launch.sh on node1
        with this cluster's hostfile, as a user would launch it."""
        return self.run_on(0, [
            f"{REPO}/scripts/launch.sh", "-np", str(self.n), "--hostfile", self.hostfile(), f"--{controller}",
            "--nic", "hvd0", "--start-timeout", "60", "--",
            "--dataset", "synthetic", "--synthetic-size", "4000", "--epochs", "2", "--log-every", "0",
            "--timeline-mode", "window", "--timeline-steps", "10", "--output-dir", out], timeout, launcher_env())

    # ------------------------------------------------------------------------------------------- tear down
    def close(self):
        for pid in self.sshd_pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for ns in self.names:  # anything still running in a node (a hung worker) goes too
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in [*self.names, self.switch]:
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def launcher_env() -> dict:
    """This environment for scripts/launch.sh: the test's venv first, no Horovod or Open MPI settings of its own."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOROVOD_", "OMPI_"))}
    return {**env, "HVD_MLP_VENV": venv, "PATH": f"{venv}/bin:{env['PATH']}"}
