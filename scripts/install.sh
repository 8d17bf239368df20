#!/usr/bin/env bash
# One-command install of hvd_mlp: system packages, a venv, PyTorch, a patched Horovod 0.28.1 (built once, wheel
# cached), hvd_mlp itself, and a final `horovodrun --check-build`. Idempotent: a second run takes seconds.
#
#   scripts/install.sh [--gpu]
#
# Environment (all optional):
#   HVD_MLP_VENV        virtual environment path               (default: <repo>/.venv)
#   HVD_MLP_TORCH       pip requirement(s) for PyTorch         (default: "torch==2.14.1 torchvision==0.29.1")
#   HVD_MLP_TORCH_ARGS  extra pip arguments for that install   (e.g. "--index-url <a CPU-only index>")
#   HVD_MLP_CACHE       Horovod wheel cache and install logs   (default: ~/.cache/hvd_mlp)
#   HVD_CUDA_CC         --gpu only: CUDA compute capability    (default: 90)
set -euo pipefail

HOROVOD_VERSION=0.28.1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HVD_MLP_VENV:-$REPO/.venv}
TORCH_SPEC=${HVD_MLP_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
TORCH_ARGS=${HVD_MLP_TORCH_ARGS:-}
CACHE=${HVD_MLP_CACHE:-$HOME/.cache/hvd_mlp}
LOGS=$CACHE/logs
GPU=0
for arg in "$@"; do
  case $arg in
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$LOGS"
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check)
STEP=""
T0=$SECONDS

say()  { printf '[install] %s\n' "$*"; }
fail() { printf '[install] FAILED at step "%s": %s\n' "$STEP" "$*" >&2; exit 1; }
# run LOGNAME CMD...: run quietly, keep the output in a log named after the step, point at it on failure
run() {
  local log=$LOGS/$1.log; shift
  "$@" >"$log" 2>&1 || fail "see $log"
}

# ---------------------------------------------------------------- 1. system packages (Open MPI, compiler, cmake)
STEP="system packages"
DEBS=(openmpi-bin libopenmpi-dev g++ make cmake openssh-client openssh-server iproute2 faketime)
missing=()
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

# ---------------------------------------------------------------- 2. virtual environment
STEP="virtual environment"
if [ ! -x "$PY" ]; then
  say "venv: creating $VENV"
  run venv python3 -m venv "$VENV"
else
  say "venv: $VENV"
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' || fail "Python >= 3.10 needed, $VENV has $("$PY" -V)"
run build-tools "${PIP[@]}" install -q "setuptools>=61" wheel

# ---------------------------------------------------------------- 3. PyTorch
STEP="pytorch"
say "pytorch: $TORCH_SPEC (minutes the first time, seconds after)"
# shellcheck disable=SC2086  # TORCH_SPEC and TORCH_ARGS are word lists on purpose
run pytorch "${PIP[@]}" install -q $TORCH_ARGS $TORCH_SPEC
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)') || fail "torch does not import"
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
say "pytorch: torch $TORCH_VERSION ($PY_TAG)"

# ---------------------------------------------------------------- 4. Horovod's run-time dependencies, mpi4py
STEP="python dependencies"
# mpi4py is built from source so that it links the same Open MPI as Horovod
run python-deps "${PIP[@]}" install -q cloudpickle psutil pyyaml packaging cffi numpy
if ! "$PY" -c 'import mpi4py' 2>/dev/null; then
  say "mpi4py: building against the system Open MPI"
  run mpi4py "${PIP[@]}" install -q --no-binary mpi4py mpi4py
fi

# ---------------------------------------------------------------- 5. Horovod, patched, wheel cached
STEP="horovod"
FLAVOUR=$([ $GPU -eq 1 ] && echo nccl || echo cpu)
PATCHES=p4  # bump when the patches below change: the cache key must name what was built
WHEEL_DIR=$CACHE/wheels/horovod-$HOROVOD_VERSION-torch-${TORCH_VERSION//+/_}-$PY_TAG-$FLAVOUR-$PATCHES
MARKER=$VENV/.hvd_mlp-horovod-wheel  # which cached wheel this venv holds
installed_horovod() { "$PY" -c 'import horovod.torch' 2>/dev/null && [ "$(cat "$MARKER" 2>/dev/null)" = "$WHEEL_DIR" ]; }
if [ -z "$(ls "$WHEEL_DIR"/horovod-*.whl 2>/dev/null)" ]; then
  say "horovod: building $HOROVOD_VERSION for torch $TORCH_VERSION ($FLAVOUR) — a few minutes"
  BUILD=$(mktemp -d "${TMPDIR:-/tmp}/hvd_mlp_build.XXXXXX")
  trap 'rm -rf "$BUILD"' EXIT
  run horovod-download "${PIP[@]}" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD"
  tar -xzf "$BUILD/horovod-$HOROVOD_VERSION.tar.gz" -C "$BUILD"
  SRC=$BUILD/horovod-$HOROVOD_VERSION
  # The three source changes, explained in docs/install.md:
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
  export CMAKE_POLICY_VERSION_MINIMUM=3.5                    # CMake >= 4 rejects the bundled gloo's old minimum
  export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include string"  # GCC >= 13 no longer includes these transitively
  export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
  export MAKEFLAGS=${MAKEFLAGS:--j$(nproc)}
  if [ $GPU -eq 1 ]; then
    NCCL_HOME=$("$PY" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])') \
      || fail "--gpu needs the nvidia-nccl package that CUDA builds of torch bring"
    [ -e "$NCCL_HOME/lib/libnccl.so" ] || ln -s libnccl.so.2 "$NCCL_HOME/lib/libnccl.so"
    export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME=$NCCL_HOME
    export HOROVOD_CUDA_HOME=${HOROVOD_CUDA_HOME:-/usr/local/cuda} HOROVOD_BUILD_CUDA_CC_LIST=${HVD_CUDA_CC:-90}
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
run hvd_mlp "${PIP[@]}" install -q -e "$REPO[test,offline]"
say "hvd_mlp: installed editable with extras test, offline"

# ---------------------------------------------------------------- 7. check the build
STEP="check-build"
CHECK=$("$VENV/bin/horovodrun" --check-build 2>&1) || { echo "$CHECK" >"$LOGS/check-build.log"; fail "see $LOGS/check-build.log"; }
echo "$CHECK" >"$LOGS/check-build.log"
for want in PyTorch MPI Gloo; do
  grep -q "\[X\] $want" <<<"$CHECK" || fail "horovodrun --check-build does not list $want (see $LOGS/check-build.log)"
done
say "OK: horovod $HOROVOD_VERSION + torch $TORCH_VERSION ($FLAVOUR) with PyTorch, MPI, Gloo in $VENV — $((SECONDS - T0)) s"
