#!/usr/bin/env bash
# One-command install of hvd_mlp: system packages, a venv, PyTorch, a patched Horovod 0.28.1 (built once, wheel
# cached), hvd_mlp itself, and a final `horovodrun --check-build`. Idempotent: a second run takes seconds.
#
#   scripts/install.sh [--gpu] [--no-mpi] [--system-torch] [--offline DIR]
#   scripts/install.sh --download DIR [--system-torch] [--no-mpi]
#
#   --gpu           build Horovod with NCCL (a CUDA build of torch, its nvidia-nccl package, and nvcc)
#   --no-mpi        Gloo only: no Open MPI, no mpi4py (machines without MPI)
#   --system-torch  use the torch that HVD_MLP_PYTHON already has instead of installing one: a venv with
#                   --system-site-packages plus a .pth naming that Python's site-packages
#   --offline DIR   no network: pip --no-index --find-links DIR for every package, the Horovod sdist from DIR,
#                   no apt (compiler, make, cmake, and Open MPI unless --no-mpi, must be on PATH)
#   --download DIR  fill DIR with what `--offline DIR` with the same flags will need (the one use of the network)
#
# Environment (all optional):
#   HVD_MLP_VENV        virtual environment path               (default: <repo>/.venv)
#   HVD_MLP_PYTHON      the Python the venv is made from; with --system-torch the one with torch (default: python3)
#   HVD_MLP_TORCH       pip requirement(s) for PyTorch         (default: "torch==2.14.1 torchvision==0.29.1")
#   HVD_MLP_TORCH_ARGS  extra pip arguments for that install   (e.g. "--index-url <a CPU-only index>")
#   HVD_MLP_CACHE       Horovod wheel cache and install logs   (default: ~/.cache/hvd_mlp)
#   HVD_CUDA_CC         --gpu only: CUDA compute capability    (default: 90)
#   HOROVOD_CUDA_HOME   --gpu only: the CUDA toolkit           (default: /usr/local/cuda, else nvcc's on PATH)
#   HVD_MLP_TARGET_PYTHON  --download for another machine: its Python version, e.g. 3.12 (x86-64 manylinux wheels)
#   HVD_MLP_TARGET_HAS     with it: a file naming the packages that machine has (`pip freeze`, or one name a line)
set -euo pipefail

HOROVOD_VERSION=0.28.1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HVD_MLP_VENV:-$REPO/.venv}
BASE_PY=${HVD_MLP_PYTHON:-python3}
TORCH_SPEC=${HVD_MLP_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
TORCH_ARGS=${HVD_MLP_TORCH_ARGS:-}
CACHE=${HVD_MLP_CACHE:-$HOME/.cache/hvd_mlp}
LOGS=$CACHE/logs
TARGET_PY=${HVD_MLP_TARGET_PYTHON:-}
TARGET_HAS=${HVD_MLP_TARGET_HAS:-}
GPU=0 MPI=1 SYSTEM_TORCH=0 OFFLINE="" DOWNLOAD=""
usage_error() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --gpu) GPU=1 ;;
    --no-mpi) MPI=0 ;;
    --system-torch) SYSTEM_TORCH=1 ;;
    --offline|--download)
      { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ]; } || usage_error "$1 needs a directory (try --help)"
      if [ "$1" = --offline ]; then OFFLINE=$2; else DOWNLOAD=$2; fi
      shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) usage_error "unknown option '$1' (try --help)" ;;
  esac
  shift
done
[ -z "$OFFLINE" ] || [ -z "$DOWNLOAD" ] || usage_error "--offline and --download exclude each other: fill DIR first, then install from it"
if [ -n "$OFFLINE" ]; then
  [ -d "$OFFLINE" ] || usage_error "--offline: no such directory: $OFFLINE"
  OFFLINE=$(cd "$OFFLINE" && pwd)
  [ -f "$OFFLINE/horovod-$HOROVOD_VERSION.tar.gz" ] \
    || usage_error "--offline: $OFFLINE has no horovod-$HOROVOD_VERSION.tar.gz (fill it with: scripts/install.sh --download DIR)"
  [ $SYSTEM_TORCH -eq 1 ] || compgen -G "$OFFLINE/torch-*.whl" >/dev/null \
    || usage_error "--offline: $OFFLINE holds no torch wheel; add --system-torch to use an installed torch"
fi
[ -z "$TARGET_PY$TARGET_HAS" ] || [ -n "$DOWNLOAD" ] || usage_error "HVD_MLP_TARGET_PYTHON and HVD_MLP_TARGET_HAS are for --download only"
[ -z "$TARGET_HAS" ] || [ -n "$TARGET_PY" ] || usage_error "HVD_MLP_TARGET_HAS needs HVD_MLP_TARGET_PYTHON"
[ -z "$TARGET_HAS" ] || [ -f "$TARGET_HAS" ] || usage_error "HVD_MLP_TARGET_HAS: no such file: $TARGET_HAS"
command -v "$BASE_PY" >/dev/null || usage_error "HVD_MLP_PYTHON: no such Python: $BASE_PY"
if [ $SYSTEM_TORCH -eq 1 ] && [ -z "$TARGET_PY" ]; then
  "$BASE_PY" -c 'import importlib.util as u; assert u.find_spec("torch")' 2>/dev/null \
    || usage_error "--system-torch: $BASE_PY has no torch (point HVD_MLP_PYTHON at the Python that has it)"
fi
mkdir -p "$LOGS"
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check)
STEP=""
T0=$SECONDS
# What pip installs besides torch, mpi4py, Horovod and hvd_mlp: one list for the install and for --download
BUILD_TOOLS=("setuptools>=61" wheel)                        # the venv's, for building Horovod without isolation
HOROVOD_NEEDS=(cloudpickle psutil pyyaml packaging cffi numpy)  # Horovod's run-time needs, and numpy
EXTRAS=test,offline$([ $MPI -eq 1 ] && echo ,mpi || true)     # hvd_mlp's extras (setup.cfg)

say()  { printf '[install] %s\n' "$*"; }
fail() { printf '[install] FAILED at step "%s": %s\n' "$STEP" "$*" >&2; exit 1; }
# run LOGNAME CMD...: run quietly, keep the output in a log named after the step, point at it on failure
run() {
  local log=$LOGS/$1.log; shift
  "$@" >"$log" 2>&1 || fail "see $log"
}
# make_venv DIR: a venv from HVD_MLP_PYTHON. With --system-torch it must see HVD_MLP_PYTHON's packages, torch among
# them: --system-site-packages gives those of the *base* interpreter only (a venv made from a venv's python is made
# from its base), so a .pth also names the site-packages of HVD_MLP_PYTHON itself and the folder torch is in.
# Where the base has no ensurepip (Debian without python3-venv), the venv borrows pip from there the same way.
make_venv() {
  if [ $SYSTEM_TORCH -eq 0 ]; then run venv "$BASE_PY" -m venv "$1"; return; fi
  "$BASE_PY" -m venv --system-site-packages "$1" >"$LOGS/venv.log" 2>&1 \
    || run venv "$BASE_PY" -m venv --system-site-packages --without-pip "$1"
  see_system_torch "$1"
}
see_system_torch() {
  local site
  site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || fail "$1 has no working python"
  "$BASE_PY" -c 'import importlib.util, os, site
dirs = site.getsitepackages() + [os.path.dirname(os.path.dirname(importlib.util.find_spec("torch").origin))]
print("\n".join(dict.fromkeys(d for d in dirs if os.path.isdir(d))))' >"$site/_hvd_mlp_system_torch.pth" \
    || fail "cannot list the site-packages of $BASE_PY"
}

# ---------------------------------------------------------------- --download DIR: fill it, and stop
if [ -n "$DOWNLOAD" ]; then
  STEP="download"
  mkdir -p "$DOWNLOAD" && DOWNLOAD=$(cd "$DOWNLOAD" && pwd)
  SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/hvd_mlp_download.XXXXXX")
  trap 'rm -rf "$SCRATCH"' EXIT
  DL=("$BASE_PY" -m pip --disable-pip-version-check download -q -d "$DOWNLOAD")
  WHEELS=()  # for another machine: binary wheels for its Python (sdists are version independent)
  if [ -n "$TARGET_PY" ]; then
    WHEELS=(--only-binary=:all: --implementation cp --python-version "$TARGET_PY")
    for n in 17 24 26 27 28 31 34 35; do WHEELS+=(--platform "manylinux_2_${n}_x86_64"); done
    WHEELS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  fi
  say "download: into $DOWNLOAD for Python ${TARGET_PY:-$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
  run download-horovod "${DL[@]}" --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION"
  if [ $SYSTEM_TORCH -eq 0 ]; then
    say "download: $TORCH_SPEC and what it needs (GBs)"
    # shellcheck disable=SC2086  # word lists on purpose
    run download-torch "${DL[@]}" "${WHEELS[@]}" $TORCH_ARGS $TORCH_SPEC
  fi
  readarray -t SETUP_CFG_NEEDS < <("$BASE_PY" - "$REPO/setup.cfg" "$EXTRAS" <<'PY'
import configparser, re, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
reqs = cfg["options"]["install_requires"].split("\n")
reqs += [r for extra in sys.argv[2].split(",") for r in cfg["options.extras_require"][extra].split("\n")]
skip = {"torch", "torchvision", "horovod", "mpi4py"}  # each has its own step
print("\n".join(r for r in map(str.strip, reqs) if r and re.split(r"[ <>=!~;\[]", r)[0].lower() not in skip))
PY
  )
  REQS=("${BUILD_TOOLS[@]}" "${HOROVOD_NEEDS[@]}" "${SETUP_CFG_NEEDS[@]}")
  # Which of them the offline install will take from DIR, decided by pip itself: in a venv made exactly as the
  # install will make it (it sees the same packages), or, for another machine, all it needs less what it has.
  if [ -z "$TARGET_PY" ]; then
    make_venv "$SCRATCH/venv"
    run download-resolve "$SCRATCH/venv/bin/python" -m pip install -q --dry-run --report "$SCRATCH/report.json" "${REQS[@]}"
    NEED_MPI4PY=$([ $MPI -eq 1 ] && ! "$SCRATCH/venv/bin/python" -c 'import mpi4py' 2>/dev/null && echo 1 || echo 0)
  else
    run download-resolve "$BASE_PY" -m pip install -q --dry-run --ignore-installed --target "$SCRATCH/target" \
      --report "$SCRATCH/report.json" "${WHEELS[@]}" "${REQS[@]}"
    NEED_MPI4PY=$([ $MPI -eq 1 ] && ! grep -qix 'mpi4py\([=<>~ ].*\)\{0,1\}' "${TARGET_HAS:-/dev/null}" && echo 1 || echo 0)
  fi
  readarray -t NEEDED < <("$BASE_PY" - "$SCRATCH/report.json" "$TARGET_HAS" <<'PY'
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
has = set()
if sys.argv[2]:
    has = {norm(re.split(r"[ <>=!~@;\[]", line.strip())[0]) for line in open(sys.argv[2])
           if line.strip() and not line.startswith("#")}
for item in json.load(open(sys.argv[1]))["install"]:
    if norm(item["metadata"]["name"]) not in has:
        print(f'{item["metadata"]["name"]}=={item["metadata"]["version"]}')
PY
  )
  [ ${#NEEDED[@]} -eq 0 ] || run download-wheels "${DL[@]}" --no-deps "${WHEELS[@]}" "${NEEDED[@]}"
  ISOLATED=("${BUILD_TOOLS[@]}")  # what pip's isolated builds (hvd_mlp's, mpi4py's) need, with what those need
  if [ "$NEED_MPI4PY" = 1 ]; then
    run download-mpi4py "${DL[@]}" --no-deps --no-binary :all: mpi4py
    ISOLATED+=("setuptools>=42" build)  # mpi4py's build-system.requires
  fi
  run download-build-tools "${DL[@]}" "${WHEELS[@]}" "${ISOLATED[@]}"
  say "download: $(find "$DOWNLOAD" -maxdepth 1 -type f | wc -l) files, $(du -sh "$DOWNLOAD" | cut -f1) in $DOWNLOAD ($((SECONDS - T0)) s);" \
      "install with: scripts/install.sh --offline $DOWNLOAD$([ $SYSTEM_TORCH -eq 1 ] && echo ' --system-torch' || true)$([ $MPI -eq 0 ] && echo ' --no-mpi' || true)"
  exit 0
fi
if [ -n "$OFFLINE" ]; then  # every pip below, and the isolated builds' own pips, read DIR only
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$OFFLINE
  say "offline: pip --no-index --find-links $OFFLINE"
fi

# ---------------------------------------------------------------- 1. system packages (Open MPI, compiler, cmake)
STEP="system packages"
DEBS=(g++ make cmake patch openssh-client openssh-server iproute2 faketime)
TOOLS=(c++ make cmake patch)
if [ $MPI -eq 1 ]; then DEBS=(openmpi-bin libopenmpi-dev "${DEBS[@]}"); TOOLS+=(mpicxx mpirun); fi
missing=()
if [ -n "$OFFLINE" ]; then  # no apt without a network: the build tools must be there, from wherever
  for tool in "${TOOLS[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] || fail "offline, and not on PATH: ${missing[*]} (install them from your site's packages)"
  say "system packages: offline, using ${TOOLS[*]} from PATH"
else
  for deb in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "system packages: present (${DEBS[*]})"
  elif [ "$(id -u)" -eq 0 ]; then
    say "system packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run apt-get apt-get update -q
    run apt-get apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "[install] missing system packages; run as root: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
# Slurm and munge serve one test file only (tests/test_slurm.py builds a two-node cluster from them): installed as
# root, else that file's tests skip and say why. On a systemd machine the packages enable their services; the
# tests start their own daemons with their own configuration and use none of them.
SLURM_DEBS=(slurmctld slurmd slurm-client munge)
installed=$(dpkg-query -W -f='${Status}\n' "${SLURM_DEBS[@]}" 2>/dev/null | grep -c 'install ok installed' || true)
if [ "$installed" -eq ${#SLURM_DEBS[@]} ]; then
  say "system packages for the Slurm tests: present (${SLURM_DEBS[*]})"
elif [ "$(id -u)" -eq 0 ]; then
  say "system packages for the Slurm tests: installing ${SLURM_DEBS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run apt-get-slurm-update apt-get update -q
  run apt-get-slurm apt-get install -y -q --no-install-recommends "${SLURM_DEBS[@]}"
else
  say "system packages for the Slurm tests: not root, not installed (${SLURM_DEBS[*]}); tests/test_slurm.py skips"
fi

# ---------------------------------------------------------------- 2. virtual environment
STEP="virtual environment"
if [ ! -x "$PY" ]; then
  say "venv: creating $VENV$([ $SYSTEM_TORCH -eq 1 ] && echo " (sees the packages of $BASE_PY)" || true)"
  make_venv "$VENV"
else
  say "venv: $VENV"
  [ $SYSTEM_TORCH -eq 0 ] || see_system_torch "$VENV"
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' || fail "Python >= 3.10 needed, $VENV has $("$PY" -V)"
run build-tools "${PIP[@]}" install -q "${BUILD_TOOLS[@]}"

# ---------------------------------------------------------------- 3. PyTorch
STEP="pytorch"
if [ $SYSTEM_TORCH -eq 1 ]; then
  say "pytorch: the one $BASE_PY has"
else
  say "pytorch: $TORCH_SPEC (minutes the first time, seconds after)"
  # shellcheck disable=SC2086  # TORCH_SPEC and TORCH_ARGS are word lists on purpose
  run pytorch "${PIP[@]}" install -q $TORCH_ARGS $TORCH_SPEC
fi
read -r TORCH_VERSION PY_TAG TORCH_DIR < <("$PY" -c 'import os, sys, torch
print(torch.__version__, f"cp{sys.version_info[0]}{sys.version_info[1]}", os.path.dirname(os.path.dirname(torch.__file__)))') \
  && [ -n "$TORCH_DIR" ] || fail "torch does not import in $VENV"
say "pytorch: torch $TORCH_VERSION ($PY_TAG) from $TORCH_DIR"

# ---------------------------------------------------------------- 4. Horovod's run-time dependencies, mpi4py
STEP="python dependencies"
run python-deps "${PIP[@]}" install -q "${HOROVOD_NEEDS[@]}"
if [ $MPI -eq 1 ] && ! "$PY" -c 'import mpi4py' 2>/dev/null; then
  # built from source so that it links the same Open MPI as Horovod
  say "mpi4py: building against the system Open MPI"
  run mpi4py "${PIP[@]}" install -q --no-binary mpi4py mpi4py
fi

# ---------------------------------------------------------------- 5. Horovod, patched, wheel cached
STEP="horovod"
FLAVOUR=$([ $GPU -eq 1 ] && echo nccl || echo cpu)$([ $MPI -eq 0 ] && echo -nompi || true)
PATCHES=p8  # bump when the patches below change: the cache key must name what was built
WHEEL_DIR=$CACHE/wheels/horovod-$HOROVOD_VERSION-torch-${TORCH_VERSION//+/_}-$PY_TAG-$FLAVOUR-$PATCHES
MARKER=$VENV/.hvd_mlp-horovod-wheel  # which cached wheel this venv holds
installed_horovod() { "$PY" -c 'import horovod.torch' 2>/dev/null && [ "$(cat "$MARKER" 2>/dev/null)" = "$WHEEL_DIR" ]; }
if [ -z "$(ls "$WHEEL_DIR"/horovod-*.whl 2>/dev/null)" ]; then
  say "horovod: building $HOROVOD_VERSION for torch $TORCH_VERSION ($FLAVOUR) — a few minutes"
  BUILD=$(mktemp -d "${TMPDIR:-/tmp}/hvd_mlp_build.XXXXXX")
  trap 'rm -rf "$BUILD"' EXIT
  if [ -n "$OFFLINE" ]; then
    cp "$OFFLINE/horovod-$HOROVOD_VERSION.tar.gz" "$BUILD/"
  else
    run horovod-download "${PIP[@]}" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD"
  fi
  tar -xzf "$BUILD/horovod-$HOROVOD_VERSION.tar.gz" -C "$BUILD"
  SRC=$BUILD/horovod-$HOROVOD_VERSION
  # The source changes, explained in docs/install.md:
  # (1) the core needs C++17 (torch's headers use it); (2) torch >= 2.10 headers need C++20 in the torch extension;
  sed -i 's/^set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$SRC/CMakeLists.txt"
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 20)/' "$SRC/horovod/torch/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 17)' "$SRC/CMakeLists.txt" && grep -q 'CMAKE_CXX_STANDARD 20)' "$SRC/horovod/torch/CMakeLists.txt" \
    || fail "the C++ standard patch no longer applies to this Horovod source"
  # (4) performance: once a timeline is enabled (DYNAMIC included) the writer thread spins on its empty queue with
  # yield() for the whole run; with as many ranks as cores that steals ~15% of the throughput. Sleep 1 ms instead
  # (the queue holds 1M records, so nothing is lost).
  sed -i 's|^\( *\)std::this_thread::yield();|\1if (record_queue_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));|' \
    "$SRC/horovod/common/timeline.cc"
  grep -q 'sleep_for(std::chrono::milliseconds(1))' "$SRC/horovod/common/timeline.cc" \
    || fail "the timeline writer patch no longer applies to timeline.cc"
  # (5) elastic: a host whose worker failed is blacklisted for good (unless --blacklist-cooldown-range), so a host
  # the discovery script drops and lists again (a preempted node back) is never used again. Listed again = a new
  # host: take it off the blacklist (a failure while it stays listed still blacklists it). docs/reliability.md
  sed -i '/^        host_slots = self._discovery.find_available_hosts_and_slots()$/a\
        for host in host_slots.keys() - prev_host_slots.keys():  # hvd_mlp: gone, now listed again: a new host\
            if self._hosts_state[host].is_blacklisted():\
                logging.info("whitelist host listed again by the discovery: %s", host)\
                self._hosts_state[host].whitelist()' "$SRC/horovod/runner/elastic/discovery.py"
  grep -q 'whitelist host listed again by the discovery' "$SRC/horovod/runner/elastic/discovery.py" \
    || fail "the elastic discovery patch no longer applies to discovery.py"
  # (6) elastic: a worker lost while the new world meets (Gloo's rendezvous after a reset) made the survivors' Gloo
  # setup throw in Horovod's background thread, uncaught: std::terminate, and the whole job was gone. Catch it, fail
  # hvd.init() cleanly (and let the next init start afresh), and let hvd.elastic.run's reset meet again without it
  OPS=$SRC/horovod/common/operations.cc
  CAUGHT='catch (const std::exception\& ex) { LOG(ERROR) << "Horovod could not be initialized: " << ex.what(); state.process_set_table.Get(0).Finalize(SHUT_DOWN_ERROR); global_gloo_context.Finalize(); state.initialization_failed = true; return; }'
  sed -i -e "s|^    global_gloo_context.Initialize(ParseGlooIface());\$|    try { global_gloo_context.Initialize(ParseGlooIface()); } $CAUGHT|" \
    -e "s|^    state.process_set_table.Initialize(global_gloo_context);\$|    try { state.process_set_table.Initialize(global_gloo_context); } $CAUGHT|" \
    -e 's|^    horovod_global.initialization_done = false;$|& horovod_global.initialization_failed = false;|' "$OPS"
  sed -i 's|^    init()$|    for attempt in range(3):  # hvd_mlp: init fails when a worker is lost as the new world meets: meet again\
        try:\
            return init()\
        except ValueError:\
            if attempt == 2:\
                raise\
            shutdown()|' "$SRC/horovod/torch/elastic/__init__.py"
  [ "$(grep -c 'Horovod could not be initialized: " << ex.what(); state.process_set_table.Get(0)' "$OPS")" = 2 ] \
    && [ "$(grep -c 'initialization_failed = false;' "$OPS")" = 2 ] \
    && grep -q 'meet again' "$SRC/horovod/torch/elastic/__init__.py" \
    || fail "the elastic init patch no longer applies to operations.cc or torch/elastic/__init__.py"
  # (7) performance, with as many ranks as cores: Horovod's background thread ran a negotiation round with the other
  # ranks every cycle (0.1 ms here) also while they compute with nothing queued, and synchronize() polled its handle
  # in a yield() loop; both took the core the rank computes on. The background thread now sleeps until a tensor is
  # queued, synchronize() until its handle is done (HOROVOD_IDLE_WAIT=0, HOROVOD_BLOCKING_WAIT=0: as before)
  patch -s -p1 -d "$SRC" <"$REPO/scripts/horovod-idle-wait.patch" \
    || fail "the idle-wait patch (scripts/horovod-idle-wait.patch) no longer applies to this Horovod source"
  export CMAKE_POLICY_VERSION_MINIMUM=3.5                    # CMake >= 4 rejects the bundled gloo's old minimum
  export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include string"  # GCC >= 13 no longer includes these transitively
  export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1
  if [ $MPI -eq 1 ]; then export HOROVOD_WITH_MPI=1; else export HOROVOD_WITHOUT_MPI=1; fi
  export MAKEFLAGS=${MAKEFLAGS:--j$(nproc)}
  if [ $GPU -eq 1 ]; then
    CUDA=${HOROVOD_CUDA_HOME:-$([ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda || dirname "$(dirname "$(command -v nvcc || echo /nvcc/none)")")}
    [ -x "$CUDA/bin/nvcc" ] || fail "--gpu needs nvcc: none in /usr/local/cuda or on PATH (set HOROVOD_CUDA_HOME)"
    # torch's own NCCL (the nvidia-nccl package of CUDA builds). Horovod's CMake looks for the unversioned
    # libnccl.so, which the package lacks: link it in a folder of our own (that torch may live read-only).
    NCCL=$("$PY" -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null) && [ -e "$NCCL/lib/libnccl.so.2" ] \
      || fail "--gpu needs the nvidia-nccl package that CUDA builds of torch bring (nvidia/nccl/lib/libnccl.so.2)"
    mkdir -p "$BUILD/nccl/lib" && ln -s "$NCCL/include" "$BUILD/nccl/include" && ln -s "$NCCL/lib/libnccl.so.2" "$BUILD/nccl/lib/libnccl.so"
    export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME=$BUILD/nccl HOROVOD_NCCL_LINK=SHARED
    export HOROVOD_CUDA_HOME=$CUDA CUDA_HOME=$CUDA HOROVOD_BUILD_CUDA_CC_LIST=${HVD_CUDA_CC:-90}
    say "horovod: NCCL from $NCCL, nvcc from $CUDA, compute capability ${HVD_CUDA_CC:-90}"
  else
    # (3) a CUDA build of torch plus a CUDA toolkit on disk would make Horovod compile CUDA code: say "no CUDA"
    sed -i 's/^\(execute_process(COMMAND ${PY_EXE} -c "import torch; from torch.utils.cpp_extension import CUDA_HOME; print(\)[^"]*"/\1False)"/' \
      "$SRC/cmake/Modules/FindPytorch.cmake"
    grep -q 'import CUDA_HOME; print(False)"' "$SRC/cmake/Modules/FindPytorch.cmake" \
      || fail "the CPU-only patch no longer applies to FindPytorch.cmake"
    export HOROVOD_WITHOUT_GLOO_CUDA=1 HOROVOD_GPU_OPERATIONS= HOROVOD_GPU=
  fi
  started=$SECONDS
  run horovod-build "${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$BUILD/wheel" "$SRC"
  mkdir -p "$WHEEL_DIR.tmp" && cp "$BUILD"/wheel/horovod-*.whl "$WHEEL_DIR.tmp/" && mv -T "$WHEEL_DIR.tmp" "$WHEEL_DIR"
  say "horovod: built in $((SECONDS - started)) s, wheel cached in $WHEEL_DIR"
fi
if ! installed_horovod; then
  run horovod-install "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/horovod-*.whl
  echo "$WHEEL_DIR" >"$MARKER"
fi
say "horovod: $HOROVOD_VERSION installed from $WHEEL_DIR"

# ---------------------------------------------------------------- 6. hvd_mlp itself
STEP="hvd_mlp"
run hvd_mlp "${PIP[@]}" install -q -e "$REPO[$EXTRAS]"
say "hvd_mlp: installed editable with extras ${EXTRAS//,/, }"

# ---------------------------------------------------------------- 7. check the build
STEP="check-build"
CHECK=$("$VENV/bin/horovodrun" --check-build 2>&1) || { echo "$CHECK" >"$LOGS/check-build.log"; fail "see $LOGS/check-build.log"; }
echo "$CHECK" >"$LOGS/check-build.log"
WANT=(PyTorch)
[ $MPI -eq 0 ] || WANT+=(MPI)
WANT+=(Gloo)
[ $GPU -eq 0 ] || WANT+=(NCCL)
for want in "${WANT[@]}"; do
  grep -q "\[X\] $want" <<<"$CHECK" || fail "horovodrun --check-build does not list $want (see $LOGS/check-build.log)"
done
say "OK: horovod $HOROVOD_VERSION + torch $TORCH_VERSION ($FLAVOUR) with $(printf '%s, ' "${WANT[@]}" | sed 's/, $//') in $VENV — $((SECONDS - T0)) s"
