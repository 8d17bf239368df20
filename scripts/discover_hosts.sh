#!/usr/bin/env bash
# Host discovery for elastic training: horovodrun calls this every few seconds and reads `host:slots` lines.
# It reads a hostfile in horovodrun's format (comments allowed), so growing or shrinking the job is editing a file:
#
#   HVD_MLP_HOSTFILE=myhosts horovodrun -np 2 --min-np 1 --max-np 4 \
#       --host-discovery-script scripts/discover_hosts.sh python -m hvd_mlp.train --elastic
set -euo pipefail
FILE=${HVD_MLP_HOSTFILE:-$(dirname "$0")/../hostfiles/localhost}
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$FILE" | awk '{ split($2, s, "="); print $1 ":" s[2] }'
