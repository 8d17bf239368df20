#!/usr/bin/env bash
# Host discovery for elastic training: horovodrun calls this every few seconds and reads `host:slots` lines.
# It reads a hostfile in horovodrun's format (comments allowed), so growing or shrinking the job is editing a file:
#
#   HVD_MLP_HOSTFILE=hostfiles/elastic-local horovodrun -np 2 --min-np 1 --max-np 2 --network-interfaces lo \
#       --host-discovery-script scripts/discover_hosts.sh python -m hvd_mlp.train --elastic --threads 1
#
# Without HVD_MLP_HOSTFILE it reads hostfiles/elastic-local: this machine under two host names, one slot each.
set -euo pipefail
FILE=${HVD_MLP_HOSTFILE:-$(dirname "$0")/../hostfiles/elastic-local}
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$FILE" | awk '{ split($2, s, "="); print $1 ":" s[2] }'
