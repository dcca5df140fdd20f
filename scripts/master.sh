#!/usr/bin/env bash
# Starts, stops and reports the master (sluice-am) of a standalone Sluice cluster on this machine.
#
#   master.sh start [-D key=value]...   starts sluice-am in the background and returns once its
#                                       REST API answers GET /overview
#   master.sh stop                      SIGTERM, then SIGKILL if it has not exited after
#                                       $SLUICE_STOP_TIMEOUT seconds (default 10)
#   master.sh status                    whether it runs, and its pid
#
# Configuration: $SLUICE_CONF_DIR/sluice.yaml (default conf/sluice.yaml), passed as --config;
# -D overrides are passed through. Binary: $SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/release, else
# target/release. Pid file and log: ${SLUICE_LOG_DIR:-log}/sluice-am.{pid,log} (the previous log
# is kept as sluice-am.log.1). $SLUICE_START_TIMEOUT (default 60) bounds the wait for the REST API.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_DIR=${SLUICE_CONF_DIR:-$ROOT/conf}
CONF_FILE=$CONF_DIR/sluice.yaml
LOG_DIR=${SLUICE_LOG_DIR:-$ROOT/log}
START_TIMEOUT=${SLUICE_START_TIMEOUT:-60}
STOP_TIMEOUT=${SLUICE_STOP_TIMEOUT:-10}
NAME=sluice-am
PID_FILE=$LOG_DIR/$NAME.pid
LOG_FILE=$LOG_DIR/$NAME.log
USAGE="usage: master.sh start [-D key=value]... | stop | status"
OVERRIDES=()

die() {
    echo "master.sh: $*" >&2
    exit 1
}

bin_dir() {
    if [[ -n ${SLUICE_BIN_DIR:-} ]]; then
        echo "$SLUICE_BIN_DIR"
    elif [[ -n ${CARGO_TARGET_DIR:-} ]]; then
        echo "$CARGO_TARGET_DIR/release"
    else
        echo "$ROOT/target/release"
    fi
}

# Collects `-D key=value` and `-Dkey=value` arguments into OVERRIDES.
parse_overrides() {
    while (($#)); do
        case $1 in
            -D)
                (($# >= 2)) || die "-D needs key=value"
                OVERRIDES+=("$2")
                shift 2
                ;;
            -D*)
                OVERRIDES+=("${1#-D}")
                shift
                ;;
            *) die "unexpected argument '$1' ($USAGE)" ;;
        esac
    done
    local kv
    for kv in "${OVERRIDES[@]}"; do
        [[ $kv == ?*=* ]] || die "-D '$kv' is not key=value"
    done
}

# The value of a flat `key: value` line of the configuration file, or of a -D override, else $2.
conf_value() {
    local key=$1 value=$2 line kv
    if [[ -f $CONF_FILE ]]; then
        while IFS= read -r line || [[ -n $line ]]; do
            line=${line%%#*}
            if [[ $line =~ ^[[:space:]]*([^:[:space:]]+)[[:space:]]*:[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] &&
                [[ ${BASH_REMATCH[1]} == "$key" ]]; then
                value=${BASH_REMATCH[2]}
            fi
        done <"$CONF_FILE"
    fi
    for kv in "${OVERRIDES[@]}"; do
        if [[ ${kv%%=*} == "$key" ]]; then
            value=${kv#*=}
        fi
    done
    value=${value#[\"\']}
    value=${value%[\"\']}
    echo "$value"
}

# Whether process $1 exists, is not a zombie and is named $2.
alive() {
    local out stat comm
    out=$(ps -p "$1" -o stat=,comm= 2>/dev/null) || return 1
    read -r stat comm <<<"$out"
    [[ $stat != Z* && $comm == "$2" ]]
}

# Prints the pid of the running master; fails when none runs.
running_pid() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" "$NAME" || return 1
    echo "$pid"
}

start() {
    parse_overrides "$@"
    local pid
    if pid=$(running_pid); then
        echo "$NAME is already running (pid $pid)"
        return 0
    fi
    local bin
    bin=$(bin_dir)/$NAME
    [[ -x $bin ]] || die "no $NAME in $(bin_dir) (build it with 'cargo build --release -p sluice-am', or set SLUICE_BIN_DIR)"
    mkdir -p "$LOG_DIR"
    LOG_DIR=$(cd "$LOG_DIR" && pwd)
    PID_FILE=$LOG_DIR/$NAME.pid
    LOG_FILE=$LOG_DIR/$NAME.log
    if [[ -f $LOG_FILE ]]; then
        mv -f "$LOG_FILE" "$LOG_FILE.1"
    fi
    local args=() kv
    if [[ -f $CONF_FILE ]]; then
        args+=(--config "$CONF_FILE")
    fi
    for kv in "${OVERRIDES[@]}"; do
        args+=(-D "$kv")
    done
    SLUICE_LOG_DIR=$LOG_DIR nohup "$bin" "${args[@]}" >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    local host port url deadline
    host=$(conf_value rest.address "$(conf_value jobmanager.rpc.address 127.0.0.1)")
    port=$(conf_value rest.port 8081)
    url=http://$host:$port/overview
    deadline=$((SECONDS + START_TIMEOUT))
    until curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; do
        if ! alive "$pid" "$NAME"; then
            tail -n 30 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "$NAME exited while starting (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            die "$NAME (pid $pid) runs, but $url did not answer within ${START_TIMEOUT}s (log: $LOG_FILE)"
        fi
        sleep 0.2
    done
    echo "$NAME started (pid $pid), REST API at http://$host:$port, log $LOG_FILE"
}

stop() {
    (($# == 0)) || die "$USAGE"
    local pid
    if ! pid=$(running_pid); then
        echo "$NAME is not running"
        rm -f "$PID_FILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" "$NAME"; do
        if ((SECONDS >= deadline)); then
            echo "master.sh: $NAME (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while alive "$pid" "$NAME" && ((SECONDS < deadline)); do
                sleep 0.1
            done
            break
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE"
    echo "stopped $NAME (pid $pid)"
}

status() {
    (($# == 0)) || die "$USAGE"
    local pid
    if pid=$(running_pid); then
        echo "$NAME is running (pid $pid)"
    else
        echo "$NAME is not running"
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
