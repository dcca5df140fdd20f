#!/usr/bin/env bash
# Starts, stops and reports the master (sluice-am) of a standalone Sluice cluster on this machine.
#
#   master.sh start [-D key=value]...   starts sluice-am in the background and returns once its
#                                       REST API answers GET /overview
#   master.sh stop                      SIGTERM, then SIGKILL if it has not exited after
#                                       $SLUICE_STOP_TIMEOUT seconds (default 10)
#   master.sh status                    whether it runs, and its pid
#
# With high-availability.type: zookeeper (in the file or a -D override), several masters may
# run side by side, numbered 1, 2, ...: each `start` starts one more (the first free number N),
# with its control port picked by the system (jobmanager.rpc.port=0; workers find the leader in
# ZooKeeper) and REST port rest.port + N - 1, and returns once it leads (its REST API answers)
# or stands by. `stop [N]` stops every master or master N; `status` lists them. Pid files and
# logs: ${SLUICE_LOG_DIR:-log}/sluice-am-N.{pid,log}.
#
# Configuration: $SLUICE_CONF_DIR/sluice.yaml (default conf/sluice.yaml), passed as --config;
# -D overrides are passed through. Binary: $SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/release, else
# target/release. Pid file and log: ${SLUICE_LOG_DIR:-log}/sluice-am.{pid,log} (the previous log
# is kept as sluice-am.log.1). $SLUICE_START_TIMEOUT (default 60) bounds the wait for the REST API.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A fixed glibc mmap threshold, so the large buffers the master frees in bursts (bundles, REST
# documents) go back to the system instead of staying in its heap (see AM_MALLOC_MMAP_THRESHOLD
# in yarn-submit/src/spec.rs).
MMAP_THRESHOLD=${MALLOC_MMAP_THRESHOLD_:-262144}
START_TIMEOUT=${SLUICE_START_TIMEOUT:-60}
NAME=sluice-am
PID_FILE=$LOG_DIR/$NAME.pid
LOG_FILE=$LOG_DIR/$NAME.log
USAGE="usage: master.sh start [-D key=value]... | stop [N] | status"

# Prints the pid of the running master; fails when none runs.
running_pid() {
    pid_from "$PID_FILE"
}

start() {
    parse_overrides "$@"
    if ha_enabled; then
        ha_start
        return
    fi
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
    MALLOC_MMAP_THRESHOLD_=$MMAP_THRESHOLD SLUICE_LOG_DIR=$LOG_DIR nohup "$bin" "${args[@]}" >"$LOG_FILE" 2>&1 </dev/null &
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
    if ha_present; then
        ha_stop "$@"
        if ! running_pid >/dev/null; then
            return 0
        fi
    fi
    (($# == 0)) || die "$USAGE"
    local pid
    if ! pid=$(running_pid); then
        echo "$NAME is not running"
        rm -f "$PID_FILE"
        return 0
    fi
    terminate "$pid" "$NAME"
    rm -f "$PID_FILE"
    echo "stopped $NAME (pid $pid)"
}

status() {
    (($# == 0)) || die "$USAGE"
    if ha_present; then
        ha_status
        running_pid >/dev/null || return 0
    fi
    local pid
    if pid=$(running_pid); then
        echo "$NAME is running (pid $pid)"
    else
        echo "$NAME is not running"
    fi
}


# Whether high-availability.type (or Flink's older key high-availability) is zookeeper.
ha_enabled() {
    local t
    t=$(conf_value high-availability.type "$(conf_value high-availability none)")
    [[ ${t,,} == zookeeper ]]
}

ha_pid_file() { echo "$LOG_DIR/$NAME-$1.pid"; }
ha_log_file() { echo "$LOG_DIR/$NAME-$1.log"; }

# Prints the pid of HA master $1; fails when it does not run.
ha_running_pid() {
    local f pid
    f=$(ha_pid_file "$1")
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" "$NAME" || return 1
    echo "$pid"
}

# The numbers of the HA masters with a pid file, ascending.
ha_numbers() {
    local f n
    for f in "$LOG_DIR/$NAME"-*.pid; do
        [[ -e $f ]] || continue
        n=${f##*/"$NAME"-}
        n=${n%.pid}
        [[ $n =~ ^[1-9][0-9]*$ ]] && echo "$n"
    done | sort -n
}

ha_start() {
    local bin
    bin=$(bin_dir)/$NAME
    [[ -x $bin ]] || die "no $NAME in $(bin_dir) (build it with 'cargo build --release -p sluice-am', or set SLUICE_BIN_DIR)"
    mkdir -p "$LOG_DIR"
    LOG_DIR=$(cd "$LOG_DIR" && pwd)
    local n=1
    while ha_running_pid "$n" >/dev/null; do
        n=$((n + 1))
    done
    local log pid base_port port host
    log=$(ha_log_file "$n")
    if [[ -f $log ]]; then
        mv -f "$log" "$log.1"
    fi
    base_port=$(conf_value rest.port 8081)
    [[ $base_port =~ ^[0-9]+$ ]] || die "rest.port '$base_port' is not a port number"
    port=$((base_port + n - 1))
    host=$(conf_value rest.address "$(conf_value jobmanager.rpc.address 127.0.0.1)")
    local args=() kv
    if [[ -f $CONF_FILE ]]; then
        args+=(--config "$CONF_FILE")
    fi
    for kv in "${OVERRIDES[@]}"; do
        args+=(-D "$kv")
    done
    args+=(-D jobmanager.rpc.port=0 -D "rest.port=$port")
    MALLOC_MMAP_THRESHOLD_=$MMAP_THRESHOLD SLUICE_LOG_DIR=$LOG_DIR nohup "$bin" "${args[@]}" >"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$(ha_pid_file "$n")"
    local url=http://$host:$port/overview deadline=$((SECONDS + START_TIMEOUT))
    while true; do
        if curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; then
            echo "master $n: $NAME started (pid $pid) and leads, REST API at http://$host:$port, log $log"
            return 0
        fi
        if grep -q "standing by behind" "$log" 2>/dev/null; then
            echo "master $n: $NAME started (pid $pid) and stands by; REST API at http://$host:$port once it leads, log $log"
            return 0
        fi
        if ! alive "$pid" "$NAME"; then
            tail -n 30 "$log" >&2 || true
            rm -f "$(ha_pid_file "$n")"
            die "master $n exited while starting (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            die "master $n (pid $pid) runs, but neither leads nor stands by after ${START_TIMEOUT}s (log: $log)"
        fi
        sleep 0.2
    done
}

# Stops HA master $1 if it runs and removes its pid file.
ha_stop_one() {
    local n=$1 pid
    if ! pid=$(ha_running_pid "$n"); then
        echo "master $n is not running"
        rm -f "$(ha_pid_file "$n")"
        return 0
    fi
    terminate "$pid" "master $n"
    rm -f "$(ha_pid_file "$n")"
    echo "stopped master $n (pid $pid)"
}

ha_stop() {
    if (($# == 1)); then
        [[ $1 =~ ^[1-9][0-9]*$ ]] || die "stop: '$1' is not a master number ($USAGE)"
        ha_running_pid "$1" >/dev/null || die "master $1 is not running"
        ha_stop_one "$1"
        return 0
    fi
    local numbers n
    mapfile -t numbers < <(ha_numbers)
    for n in "${numbers[@]}"; do
        ha_stop_one "$n"
    done
}

# Any HA master pid files? (`stop` and `status` then speak of the numbered masters.)
ha_present() {
    [[ -d $LOG_DIR ]] && [[ -n $(ha_numbers) ]]
}

ha_status() {
    local numbers n pid role log
    mapfile -t numbers < <(ha_numbers)
    for n in "${numbers[@]}"; do
        if pid=$(ha_running_pid "$n"); then
            log=$(ha_log_file "$n")
            role="standing by"
            if grep -q "published at" "$log" 2>/dev/null; then
                role="leading"
            fi
            echo "master $n is running (pid $pid, $role)"
        else
            echo "master $n is not running (stale pid file $(ha_pid_file "$n"))"
        fi
    done
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
