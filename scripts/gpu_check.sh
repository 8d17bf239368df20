#!/usr/bin/env bash
# The GPU path on a real GPU, as one script: install hvd_mlp offline with --gpu onto the machine's own torch, check
# that Horovod has NCCL, train on the GPU with the timeline window on (`horovodrun -np 1 --gloo`), allreduce the
# MLP's gradient through NCCL with a timeline (one rank's training allreduces nothing), and summarise that timeline.
# Everything it prints goes to $OUT/gpu_check.log too; $OUT ends with at most 6 files.
#
#   scripts/gpu_check.sh fill DIR      here, with PyPI: the Horovod sdist and the few wheels the GPU machine lacks
#                                      (for its Python 3.12, less what scripts/gpu_machine_packages.txt lists)
#   scripts/gpu_check.sh run DIR       on the GPU machine (no network), from the repo root:
#                                      install.sh --gpu --offline DIR --system-torch --no-mpi, then the checks
#   scripts/gpu_check.sh dry-run DIR   on a CPU, the same steps as far as a CPU goes: install.sh --offline DIR
#                                      --system-torch (Horovod's CPU build with MPI), Gloo, --device cpu
#
# Environment (all optional):
#   OUT             where the log and the results go     (default: runs/gpu_check)
#   HVD_MLP_PYTHON  the Python whose torch is used        (default: python3)
#   HVD_MLP_VENV    the venv the check installs into      (default: /tmp/hvd_mlp_gpu_venv)
#   HVD_MLP_CACHE   install.sh's wheel cache and logs     (default: ~/.cache/hvd_mlp)
#   HVD_CUDA_CC     CUDA compute capability to build for  (default: 90, Hopper)
#   EPOCHS          epochs of the training run            (default: 3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage_error() { echo "gpu_check.sh: $*" >&2; exit 2; }
case ${1:-} in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  fill|run|dry-run) MODE=$1 ;;
  "") usage_error "which mode: fill, run or dry-run? (try --help)" ;;
  *) usage_error "unknown mode '$1' (try --help)" ;;
esac
{ [ $# -eq 2 ] && [ -n "$2" ]; } || usage_error "$MODE needs one argument, the wheel directory (try --help)"
DIR=$2
TARGET_PYTHON=3.12  # the lent GPU machines' python3 (/opt/torch/.venv: torch 2.11.0+cu130)

if [ "$MODE" = fill ]; then
  exec env HVD_MLP_TARGET_PYTHON=$TARGET_PYTHON HVD_MLP_TARGET_HAS="$REPO/scripts/gpu_machine_packages.txt" \
    "$REPO/scripts/install.sh" --download "$DIR" --system-torch --no-mpi
fi

[ -d "$DIR" ] || usage_error "no such directory: $DIR (fill it with: scripts/gpu_check.sh fill $DIR)"
[ -f "$DIR/horovod-0.28.1.tar.gz" ] || usage_error "$DIR has no horovod-0.28.1.tar.gz (fill it with: scripts/gpu_check.sh fill $DIR)"
DIR=$(cd "$DIR" && pwd)
export HVD_MLP_PYTHON=${HVD_MLP_PYTHON:-$(command -v python3)}
export HVD_MLP_VENV=${HVD_MLP_VENV:-/tmp/hvd_mlp_gpu_venv} HVD_CUDA_CC=${HVD_CUDA_CC:-90}
OUT=${OUT:-$REPO/runs/gpu_check}
EPOCHS=${EPOCHS:-3}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
GPU_FLAGS=(--gpu --offline "$DIR" --system-torch --no-mpi)
if [ "$MODE" = run ]; then
  FLAGS=("${GPU_FLAGS[@]}") DEVICE=cuda WANT=NCCL TRAIN_EXTRA=()
else  # MPI kept: the CPU wheel `make test` built is reused instead of a 3-minute Gloo-only build; a smaller set
  FLAGS=(--offline "$DIR" --system-torch) DEVICE=cpu WANT=Gloo TRAIN_EXTRA=(--synthetic-size 3000)
fi
VENV=$HVD_MLP_VENV
RUN=$(mktemp -d "${TMPDIR:-/tmp}/hvd_mlp_gpu_check.XXXXXX")  # the training run; its results.json is kept in OUT
trap 'rm -rf "$RUN"' EXIT

say() { printf '[gpu_check] %s\n' "$*" | tee -a "$LOG"; }
fail() { say "FAILED: $* (log: $LOG)"; exit 1; }
# logged CMD...: run it, its output to the screen and the log
logged() { "$@" 2>&1 | tee -a "$LOG"; }

# ---------------------------------------------------------------- 1. the machine
say "$MODE on $HOSTNAME, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
if [ "$MODE" = run ]; then
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) || fail "nvidia-smi found no GPU"
  logged nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  logged nvcc --version || fail "no nvcc on PATH"
else
  GPU_NAME="none (dry run)"
fi
say "GPU: $GPU_NAME"
"$HVD_MLP_PYTHON" -c 'import sys, torch
print(f"[gpu_check] python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}")' 2>&1 | tee -a "$LOG" || fail "$HVD_MLP_PYTHON cannot import torch"
say "cmake: $(cmake --version | head -1)"

# ---------------------------------------------------------------- 2. the carried directory
say "DIR $DIR: $(find "$DIR" -maxdepth 1 -type f | wc -l) files, $(du -sh "$DIR" | cut -f1)"
for f in "$DIR"/*; do say "  $(basename "$f")"; done

# ---------------------------------------------------------------- 3. install (offline, onto this machine's torch)
say "install: scripts/install.sh ${FLAGS[*]}"
[ "$MODE" = run ] || say "  (on the GPU machine: scripts/install.sh ${GPU_FLAGS[*]})"
started=$SECONDS
logged "$REPO/scripts/install.sh" "${FLAGS[@]}" || fail "install.sh failed"
BUILD=$(grep -o 'horovod: built in [0-9]* s' "$LOG" | sed 's/.* in //' || echo "none (cached wheel)")
say "install: $((SECONDS - started)) s, Horovod build: $BUILD"

# ---------------------------------------------------------------- 4. the build has what it must
# install.sh ran `horovodrun --check-build` last (with --gpu it insists on NCCL): keep what it printed
cp "${HVD_MLP_CACHE:-$HOME/.cache/hvd_mlp}/logs/check-build.log" "$OUT/check-build.txt"
tee -a "$LOG" <"$OUT/check-build.txt"
grep -q "\[X\] $WANT" "$OUT/check-build.txt" || fail "horovodrun --check-build does not list $WANT"
say "check-build: lists $WANT"

# ---------------------------------------------------------------- 5. train with the timeline window on
say "train: horovodrun -np 1 --gloo python -m hvd_mlp.train --device $DEVICE --dataset synthetic --epochs $EPOCHS --timeline-mode ${TRAIN_EXTRA[*]}"
PATH=$VENV/bin:$PATH logged "$VENV/bin/horovodrun" -np 1 -H localhost:1 --gloo "$VENV/bin/python" -m hvd_mlp.train \
  --device "$DEVICE" --dataset synthetic --epochs "$EPOCHS" --timeline-mode --checkpoint-every 0 --output-dir "$RUN" \
  "${TRAIN_EXTRA[@]}" || fail "training failed"
cp "$RUN/results.json" "$OUT/train_results.json"

# ---------------------------------------------------------------- 6. the collective's timeline
# One rank's training allreduces nothing (Horovod's DistributedOptimizer skips a world of one), so the collective
# path gets its own run: the MLP's gradient allreduced through Horovod, a full timeline, and its summary.
say "allreduce: horovodrun -np 1 --gloo --timeline-filename allreduce_timeline.json python scripts/allreduce_timeline.py --device $DEVICE"
rm -f "$OUT/allreduce_timeline.json"
PATH=$VENV/bin:$PATH logged "$VENV/bin/horovodrun" -np 1 -H localhost:1 --gloo --timeline-filename "$OUT/allreduce_timeline.json" \
  "$VENV/bin/python" "$REPO/scripts/allreduce_timeline.py" --device "$DEVICE" || fail "the allreduce run failed"
grep -q "\"${WANT^^}_ALLREDUCE\"" "$OUT/allreduce_timeline.json" || fail "the timeline holds no ${WANT^^}_ALLREDUCE"
"$VENV/bin/python" -m hvd_mlp.timeline summarize "$OUT/allreduce_timeline.json" >"$OUT/timeline_summary.txt" 2>&1 \
  || { cat "$OUT/timeline_summary.txt"; fail "the timeline summary failed"; }
tee -a "$LOG" <"$OUT/timeline_summary.txt"
say "timeline: ${WANT^^}_ALLREDUCE recorded, summary in $OUT/timeline_summary.txt"
"$HVD_MLP_PYTHON" -m pip list --format=freeze >"$OUT/packages.txt" 2>/dev/null || true  # to refresh gpu_machine_packages.txt
DIGEST=$("$VENV/bin/python" - "$OUT/train_results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
w, last = r["world"], r["epochs"][-1]
print(f"torch {w['torch_version']} on {w['device']}, {w['controller']}, last epoch {last['samples_per_s']:,.0f} samples/s")
PY
)
say "OK: $MODE, GPU $GPU_NAME, Horovod build $BUILD, $DIGEST; files in $OUT"
