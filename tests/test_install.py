"""The distributed stack itself: the patched Horovod build, real collectives under horovodrun, and the install
scripts: offline from a filled wheel directory onto an existing torch, and the GPU check's CPU dry run."""
import json
import os
import re
import subprocess
import sys
import urllib.request
from types import SimpleNamespace

import pytest

from conftest import HOROVODRUN, horovodrun


def test_check_build_lists_pytorch_mpi_gloo():
    out = subprocess.run([HOROVODRUN, "--check-build"], capture_output=True, text=True, timeout=120).stdout
    for name in ("PyTorch", "MPI", "Gloo"):
        assert re.search(rf"\[X\] {name}", out), out


def test_allreduce_and_broadcast_under_horovodrun(controller):
    script = os.path.join(os.path.dirname(__file__), "dist_smoke.py")
    proc = horovodrun(2, controller, [sys.executable, script], timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = sorted(re.findall(r"SMOKE rank=(\d) size=2 sum=3 avg=0.5 bcast=101 controller=(\w+)", proc.stdout))
    assert lines == [("0", controller), ("1", controller)], proc.stdout


def test_horovod_carries_the_elastic_patches():
    """Patches 5 and 6 of scripts/install.sh (docs/install.md): without them an elastic job does not grow back."""
    import inspect

    import horovod.runner.elastic.discovery as discovery
    import horovod.torch.elastic as torch_elastic
    why = "this venv's Horovod lacks install.sh's patch {}: run scripts/install.sh (its wheel cache key changed)"
    assert "whitelist host listed again by the discovery" in inspect.getsource(discovery), why.format(5)
    assert "meet again" in inspect.getsource(torch_elastic), why.format(6)


def test_horovod_waits_without_spinning(controller):
    """Patch 7 (docs/install.md): a thread waiting in synchronize() for a late peer, and ranks with nothing queued,
    burn (almost) no CPU; HOROVOD_IDLE_WAIT=0 HOROVOD_BLOCKING_WAIT=0 bring back the stock spinning, measured beside
    it. (The waiting thread's own CPU time: meanwhile Horovod's background thread may spin inside Open MPI.)"""
    script = os.path.join(os.path.dirname(__file__), "dist_waiting.py")
    cpu = {}
    for name, env in (("patched", {}), ("stock", {"HOROVOD_IDLE_WAIT": "0", "HOROVOD_BLOCKING_WAIT": "0"})):
        proc = horovodrun(2, controller, [sys.executable, script], timeout=180, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        found = re.findall(r"WAITING rank=(\d) wait_cpu=([\d.]+) idle_cpu=([\d.]+)", proc.stdout)
        assert len(found) == 2, proc.stdout
        ranks = {int(r): (float(w), float(i)) for r, w, i in found}
        cpu[name] = {"wait": ranks[0][0], "idle": ranks[0][1] + ranks[1][1]}
    patched, stock = cpu["patched"], cpu["stock"]
    assert patched["wait"] < 0.1 < 0.5 < stock["wait"], cpu  # stock: a yield() loop for the whole second
    assert patched["idle"] < 0.1 and patched["idle"] < stock["idle"] / 2, cpu  # stock: a negotiation every cycle


# ---------------------------------------------------------------- install.sh's own flags: offline, system torch, GPU
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = os.path.join(REPO, "scripts", "install.sh")
GPU_CHECK = os.path.join(REPO, "scripts", "gpu_check.sh")
PROXIES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
DEAD_PROXIES = {k: "http://127.0.0.1:9" for k in PROXIES}  # any use of the network fails


def script_env(**extra) -> dict:
    """This environment without Horovod, hvd_mlp or virtualenv settings, plus `extra`."""
    kept = {k: v for k, v in os.environ.items()
            if not k.startswith(("HOROVOD_", "HVD_MLP_", "HVD_CUDA")) and k not in ("VIRTUAL_ENV", "OUT", "EPOCHS")}
    return {**kept, **{k: str(v) for k, v in extra.items()}}


def script(args, env, timeout, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def pypi_unreachable() -> str:
    try:
        urllib.request.urlopen("https://pypi.org/simple/horovod/", timeout=20).close()
        return ""
    except OSError as e:
        return str(e)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """`install.sh --download DIR --system-torch` (the network's one use), then the GPU script's CPU dry run, whose
    first step is `install.sh --offline DIR --system-torch` into a new venv with every proxy pointing nowhere: torch
    comes from this test's own environment, Horovod's wheel from the cache that the normal install filled (its key
    must match: same torch, Python and flavour)."""
    reason = pypi_unreachable()
    if reason:
        pytest.skip(f"install.sh --download needs PyPI, unreachable from here: {reason}")
    root = tmp_path_factory.mktemp("offline")
    cache = root / "cache"
    cache.mkdir()
    wheels = os.path.join(os.environ.get("HVD_MLP_CACHE") or os.path.expanduser("~/.cache/hvd_mlp"), "wheels")
    os.makedirs(wheels, exist_ok=True)
    (cache / "wheels").symlink_to(wheels)  # the wheels shared, the logs our own
    env = script_env(HVD_MLP_PYTHON=sys.executable, HVD_MLP_CACHE=cache)
    download = script([INSTALL, "--download", root / "dir", "--system-torch"], env, timeout=600)
    assert download.returncode == 0, download.stdout + download.stderr
    dry = script([GPU_CHECK, "dry-run", root / "dir"],
                 {**env, **DEAD_PROXIES, "HVD_MLP_VENV": str(root / "venv"), "OUT": str(root / "out")}, timeout=900)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    return SimpleNamespace(root=root, dir=root / "dir", venv=root / "venv", out=root / "out", cache=cache, env=env,
                           download=download.stdout, dry_run=dry.stdout)


def test_download_then_offline_install_with_system_torch_trains(offline):
    import torch
    files = sorted(os.listdir(offline.dir))
    assert "horovod-0.28.1.tar.gz" in files, files
    assert not [f for f in files if f.startswith(("torch-", "nvidia", "torchvision"))], files  # torch not downloaded
    install = offline.dry_run
    assert "offline: pip --no-index --find-links" in install, install
    assert "system packages: offline" in install and "apt" not in install, install
    assert f"venv: creating {offline.venv} (sees the packages of {sys.executable})" in install, install
    patches = re.search(r"^PATCHES=(\w+)", open(INSTALL).read(), re.M).group(1)
    py_tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    key = f"horovod-0.28.1-torch-{torch.__version__.replace('+', '_')}-{py_tag}-cpu-{patches}"
    assert f"installed from {offline.cache}/wheels/{key}" in install, install
    assert "horovod: building" not in install, "the cache key did not match the wheel `make test` built"
    where = script([offline.venv / "bin" / "python", "-c", "import horovod, hvd_mlp; print(horovod.__file__, hvd_mlp.__file__)"],
                   offline.env, timeout=120, cwd=offline.root).stdout.split()
    assert where[0].startswith(str(offline.venv)) and where[1].startswith(REPO), where  # its Horovod, this hvd_mlp

    venv_bin = offline.venv / "bin"
    train = script([venv_bin / "horovodrun", "-np", 2, "-H", "localhost:2", venv_bin / "python", "-m", "hvd_mlp.train",
                    "--dataset", "synthetic", "--synthetic-size", 2000, "--epochs", 1, "--checkpoint-every", 0,
                    "--output-dir", offline.root / "run"],
                   {**offline.env, "PATH": f"{venv_bin}:{os.environ['PATH']}"}, timeout=300, cwd=offline.root)
    assert train.returncode == 0 and "done: 1 epochs" in train.stdout, train.stdout + train.stderr
    world = json.load(open(offline.root / "run" / "results.json"))["world"]
    assert world["size"] == 2 and world["controller"] == "mpi" and world["torch_version"] == torch.__version__, world


def test_gpu_check_dry_run(offline):
    """The GPU script as far as a CPU goes: the same offline install onto this torch, Gloo, --device cpu, the
    allreduce timeline and its summary; it says which install it would run on the GPU."""
    dry = offline.dry_run
    assert f"(on the GPU machine: scripts/install.sh --gpu --offline {offline.dir} --system-torch --no-mpi)" in dry
    assert "[X] Gloo" in dry and "check-build: lists Gloo" in dry, dry
    assert re.search(r"epoch 3/3 \| .* samples/s", dry), dry
    assert re.search(r"ALLREDUCE rank=0 size=1 device=cpu steps=200 tensors=8 bytes=2\.27 MB", dry), dry
    assert "timeline: GLOO_ALLREDUCE recorded" in dry and "[gpu_check] OK: dry-run" in dry, dry
    kept = sorted(os.listdir(offline.out))
    assert kept == ["allreduce_timeline.json", "check-build.txt", "gpu_check.log", "packages.txt",
                    "timeline_summary.txt", "train_results.json"], kept  # the device brings back at most 8 files
    assert "allreduce 1,680 tensor ops" in open(offline.out / "timeline_summary.txt").read()
    assert open(offline.out / "gpu_check.log").read().endswith(dry.splitlines()[-1] + "\n")


def test_gpu_check_fill_downloads_only_what_the_gpu_machine_lacks(tmp_path):
    reason = pypi_unreachable()
    if reason:
        pytest.skip(f"gpu_check.sh fill needs PyPI, unreachable from here: {reason}")
    gpu_dir = tmp_path / "gpu_wheels"
    fill = script([GPU_CHECK, "fill", gpu_dir], script_env(HVD_MLP_CACHE=tmp_path / "cache"), timeout=600)
    assert fill.returncode == 0, fill.stdout + fill.stderr
    assert f"install with: scripts/install.sh --offline {gpu_dir} --system-torch --no-mpi" in fill.stdout, fill.stdout
    files = sorted(os.listdir(gpu_dir))
    assert "horovod-0.28.1.tar.gz" in files and any(f.startswith("mlxtend-") for f in files), files
    assert [f for f in files if f.startswith("cffi-") and "-cp312-" in f and "manylinux" in f], files  # its Python's
    heavy = ("torch", "numpy", "scipy", "pandas", "matplotlib", "scikit_learn", "nvidia", "mpi4py")
    assert not [f for f in files if f.lower().startswith(heavy)], files  # the machine has those
    assert sum(os.path.getsize(gpu_dir / f) for f in files) < 32 * 2**20  # it travels with the working tree


@pytest.mark.parametrize("args, env, message", [
    (["--bogus"], {}, "unknown option '--bogus'"),
    (["--offline"], {}, "--offline needs a directory"),
    (["--download", "--gpu"], {}, "--download needs a directory"),
    (["--offline", "{missing}"], {}, "--offline: no such directory"),
    (["--offline", "{empty}"], {}, "has no horovod-0.28.1.tar.gz"),
    (["--offline", "{sdist}"], {}, "holds no torch wheel; add --system-torch"),
    (["--offline", "{sdist}", "--system-torch"], {"HVD_MLP_PYTHON": "{no_torch}"}, "has no torch"),
    (["--offline", "{sdist}", "--download", "{empty}"], {}, "exclude each other"),
    (["--gpu"], {"HVD_MLP_TARGET_PYTHON": "3.12"}, "for --download only"),
    (["--download", "{empty}"], {"HVD_MLP_TARGET_PYTHON": "3.12", "HVD_MLP_TARGET_HAS": "{missing}"}, "no such file"),
])
def test_install_bad_input_is_one_line_and_exit_2(tmp_path, args, env, message):
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "sdist": tmp_path / "sdist",
             "no_torch": tmp_path / "python-without-site"}
    paths["empty"].mkdir()
    paths["sdist"].mkdir()
    (paths["sdist"] / "horovod-0.28.1.tar.gz").write_bytes(b"")
    paths["no_torch"].write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, no torch
    paths["no_torch"].chmod(0o755)
    fill = lambda text: text.format(**paths)
    proc = script([INSTALL, *map(fill, args)], script_env(**{k: fill(v) for k, v in env.items()}), timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, message", [
    ([], "which mode"), (["bogus"], "unknown mode 'bogus'"), (["run"], "run needs one argument"),
    (["dry-run", "/nonexistent/dir"], "no such directory"),
])
def test_gpu_check_bad_input_is_one_line_and_exit_2(args, message):
    proc = script([GPU_CHECK, *args], script_env(), timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_help_names_every_option_and_variable():
    for path in (INSTALL, GPU_CHECK):
        text = open(path).read()
        body = text[text.index("set -euo pipefail"):]
        shown = script([path, "--help"], script_env(), timeout=60)
        assert shown.returncode == 0, shown.stderr
        options = {o for case in re.findall(r"^\s+([a-z|-]+)\)", body, re.M) for o in case.split("|")} - {"-h", "--help"}
        variables = {v for v in re.findall(r"\$\{([A-Z_]+):-", body)  # what it reads from the environment
                     if v.startswith(("HVD_", "HOROVOD_")) or v in ("OUT", "EPOCHS")}
        for name in options | variables:
            assert name in shown.stdout, f"{os.path.basename(path)} --help does not mention {name}"
