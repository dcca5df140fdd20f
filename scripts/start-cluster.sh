#!/usr/bin/env bash
# Starts a standalone Sluice cluster on this machine: the master (scripts/master.sh start), then
# one worker (scripts/worker.sh start) for every localhost or 127.0.0.1 line of
# $SLUICE_CONF_DIR/workers (default conf/workers; without the file, one worker). Other hosts
# are skipped: workers on other machines are started there.
#
#   start-cluster.sh [-D key=value]...   the overrides go to the master and to every worker
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_DIR=${SLUICE_CONF_DIR:-$ROOT/conf}
WORKERS=$CONF_DIR/workers

"$ROOT/scripts/master.sh" start "$@"

hosts=()
if [[ -f $WORKERS ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        line=${line//[[:space:]]/}
        if [[ -n $line ]]; then
            hosts+=("$line")
        fi
    done <"$WORKERS"
else
    echo "start-cluster.sh: no $WORKERS; starting one local worker" >&2
    hosts=(localhost)
fi

started=0
for host in "${hosts[@]}"; do
    case $host in
        localhost | 127.0.0.1)
            "$ROOT/scripts/worker.sh" start "$@"
            started=$((started + 1))
            ;;
        *) echo "start-cluster.sh: skipping worker host '$host': only localhost and 127.0.0.1 are started from here" >&2 ;;
    esac
done
echo "cluster started: master and $started worker(s)"
