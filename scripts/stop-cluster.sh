#!/usr/bin/env bash
# Stops the standalone Sluice cluster on this machine that scripts/start-cluster.sh started:
# every worker (scripts/worker.sh stop), then the master (scripts/master.sh stop).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(($# == 0)) || {
    echo "usage: stop-cluster.sh" >&2
    exit 1
}

"$ROOT/scripts/worker.sh" stop
"$ROOT/scripts/master.sh" stop
