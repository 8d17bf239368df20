#!/usr/bin/env bash
# Launch hvd_mlp training across hosts: check the hostfile, then run horovodrun (printing the command it runs).
#
#   scripts/launch.sh -np N --hostfile FILE [--gloo|--mpi] [--ssh-port P] [--ssh-key K] [--nic IF]
#                     [--start-timeout S] -- [hvd_mlp.train arguments]
#
# Every host needs the same venv path (or a shared filesystem) and passwordless ssh from this one; see
# docs/multinode.md. HVD_MLP_VENV names the venv (default: <repo>/.venv).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HVD_MLP_VENV:-$REPO/.venv}
PY=$VENV/bin/python
usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "launch.sh: error: $*" >&2; exit 2; }

NP="" HOSTFILE="" CONTROLLER="" EXTRA=() SSH_OPTS=() TIMEOUT=30
while [ $# -gt 0 ]; do
  case $1 in
    -np|--np) NP=${2:-}; shift 2 ;;
    --hostfile) HOSTFILE=${2:-}; shift 2 ;;
    --gloo|--mpi) CONTROLLER=$1; shift ;;
    --ssh-port) EXTRA+=(--ssh-port "${2:-}"); SSH_OPTS+=(-p "${2:-}"); shift 2 ;;
    --ssh-key) EXTRA+=(--ssh-identity-file "${2:-}"); SSH_OPTS+=(-i "${2:-}"); shift 2 ;;
    --nic) EXTRA+=(--network-interfaces "${2:-}"); shift 2 ;;
    --start-timeout) EXTRA+=(--start-timeout "${2:-}"); TIMEOUT=${2:-30}; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (train arguments go after --)" ;;
  esac
done
[[ $NP =~ ^[1-9][0-9]*$ ]] || die "-np needs a positive number"
[ -n "$HOSTFILE" ] || die "--hostfile is required"
[ -x "$PY" ] || die "no Python at $PY: run scripts/install.sh (or set HVD_MLP_VENV)"

# horovodrun crashes on comments and blank lines: check, then hand it a clean copy
CLEAN=$(mktemp "${TMPDIR:-/tmp}/hvd_mlp-hosts.XXXXXX")
trap 'rm -f "$CLEAN"' EXIT
"$PY" -m hvd_mlp.hostfile clean "$HOSTFILE" "$CLEAN" --np "$NP" >/dev/null || exit 2

# every remote host must answer ssh without a prompt; horovodrun would say so with a traceback, we say it in a line
LOCAL=" localhost $(hostname) $(hostname -I 2>/dev/null) "
while read -r host _; do
  [[ $host == 127.* || $LOCAL == *" $host "* ]] && continue
  if ! out=$(ssh -o BatchMode=yes -o ConnectTimeout="$TIMEOUT" "${SSH_OPTS[@]}" "$host" true 2>&1); then
    die "cannot reach $host over ssh within ${TIMEOUT} s: $(tail -n 1 <<<"$out")"
  fi
done <"$CLEAN"

CMD=("$VENV/bin/horovodrun" -np "$NP" --hostfile "$CLEAN" ${CONTROLLER:+"$CONTROLLER"} "${EXTRA[@]}"
     "$PY" -m hvd_mlp.train "$@")
echo "+ ${CMD[*]}" >&2
PATH=$VENV/bin:$PATH "${CMD[@]}"
