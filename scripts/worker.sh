#!/usr/bin/env bash
# Starts, stops and reports the worker daemons (sluice-worker) of a standalone Sluice cluster on
# this machine; several may run side by side, numbered 1, 2, ...
#
#   worker.sh start [-D key=value]...   starts one more worker and returns once it registered
#                                       with the master
#   worker.sh stop [N]                  stops every worker, or worker N: SIGTERM, then SIGKILL
#                                       if it has not exited after $SLUICE_STOP_TIMEOUT s (10)
#   worker.sh status                    every worker: running (with its pid) or not
#
# Configuration: $SLUICE_CONF_DIR/sluice.yaml (default conf/sluice.yaml), passed as --config;
# -D overrides are passed through. Binary: $SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/release, else
# target/release. Pid files and logs: ${SLUICE_LOG_DIR:-log}/sluice-worker-N.{pid,log}; the job
# processes a worker starts write job-<job>-<worker>.out there too. $SLUICE_START_TIMEOUT
# (default 30) bounds the wait for the registration.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
START_TIMEOUT=${SLUICE_START_TIMEOUT:-30}
NAME=sluice-worker
USAGE="usage: worker.sh start [-D key=value]... | stop [N] | status"

pid_file() { echo "$LOG_DIR/$NAME-$1.pid"; }
log_file() { echo "$LOG_DIR/$NAME-$1.log"; }

# Prints the pid of worker $1 if it runs; fails otherwise.
running_pid() {
    pid_from "$(pid_file "$1")"
}

# The numbers of all workers with a pid file, ascending.
numbers() {
    local f n
    for f in "$LOG_DIR/$NAME"-*.pid; do
        if [[ -e $f ]]; then
            n=${f##*/"$NAME"-}
            n=${n%.pid}
            if [[ $n =~ ^[1-9][0-9]*$ ]]; then
                echo "$n"
            fi
        fi
    done | sort -n
}

# The worker id from worker $1's log, once it registered.
worker_id() {
    local line
    line=$(grep -m1 -E "^$NAME [^ ]+ registered with " "$(log_file "$1")" 2>/dev/null) || return 1
    line=${line#"$NAME "}
    echo "${line%% *}"
}

start() {
    parse_overrides "$@"
    local bin
    bin=$(bin_dir)/$NAME
    [[ -x $bin ]] || die "no $NAME in $(bin_dir) (build it with 'cargo build --release -p sluice-worker --bin sluice-worker', or set SLUICE_BIN_DIR)"
    mkdir -p "$LOG_DIR"
    LOG_DIR=$(cd "$LOG_DIR" && pwd)
    local n=1
    while running_pid "$n" >/dev/null; do
        n=$((n + 1))
    done
    local log pid
    log=$(log_file "$n")
    if [[ -f $log ]]; then
        mv -f "$log" "$log.1"
    fi
    local args=() kv
    if [[ -f $CONF_FILE ]]; then
        args+=(--config "$CONF_FILE")
    fi
    for kv in "${OVERRIDES[@]}"; do
        args+=(-D "$kv")
    done
    SLUICE_LOG_DIR=$LOG_DIR nohup "$bin" "${args[@]}" >"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$(pid_file "$n")"

    local deadline=$((SECONDS + START_TIMEOUT)) line
    until line=$(grep -m1 -E "^$NAME [^ ]+ registered with " "$log" 2>/dev/null); do
        if ! alive "$pid" "$NAME"; then
            tail -n 30 "$log" >&2 || true
            rm -f "$(pid_file "$n")"
            die "worker $n exited while starting (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            die "worker $n (pid $pid) runs, but did not register within ${START_TIMEOUT}s (log: $log)"
        fi
        sleep 0.1
    done
    echo "worker $n: $line (pid $pid, log $log)"
}

# Stops worker $1 if it runs and removes its pid file.
stop_one() {
    local n=$1 pid
    if ! pid=$(running_pid "$n"); then
        if [[ -f $(pid_file "$n") ]]; then
            echo "worker $n is not running"
        fi
        rm -f "$(pid_file "$n")"
        return 0
    fi
    terminate "$pid" "worker $n"
    rm -f "$(pid_file "$n")"
    echo "stopped worker $n (pid $pid)"
}

stop() {
    if (($# == 1)); then
        [[ $1 =~ ^[1-9][0-9]*$ ]] || die "stop: '$1' is not a worker number ($USAGE)"
        if ! running_pid "$1" >/dev/null; then
            rm -f "$(pid_file "$1")"
            die "worker $1 is not running"
        fi
        stop_one "$1"
        return 0
    fi
    (($# == 0)) || die "$USAGE"
    local numbers n
    mapfile -t numbers < <(numbers)
    if ((${#numbers[@]} == 0)); then
        echo "no $NAME is running"
        return 0
    fi
    for n in "${numbers[@]}"; do
        stop_one "$n"
    done
}

status() {
    (($# == 0)) || die "$USAGE"
    local numbers n pid id
    mapfile -t numbers < <(numbers)
    local running=0
    for n in "${numbers[@]}"; do
        if pid=$(running_pid "$n"); then
            id=$(worker_id "$n") || id="(not registered yet)"
            echo "worker $n is running (pid $pid, worker id $id)"
            running=$((running + 1))
        else
            echo "worker $n is not running (stale pid file $(pid_file "$n"))"
        fi
    done
    if ((running == 0)); then
        echo "no $NAME is running"
    fi
}

(($# >= 1)) || die "$USAGE"
command=$1
shift
case $command in
    start) start "$@" ;;
    stop) stop "$@" ;;
    status) status "$@" ;;
    *) die "$USAGE" ;;
esac
