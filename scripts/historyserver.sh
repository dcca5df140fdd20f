#!/usr/bin/env bash
# Starts, stops and reports the HistoryServer (sluice-historyserver), which serves the archives
# of finished jobs (historyserver.archive.fs.dir) read-only on historyserver.web.port (8082).
#
#   historyserver.sh start [-D key=value]...             starts it in the background and returns
#                                                        once GET /config answers
#   historyserver.sh start-foreground [-D key=value]...  runs it in this shell (for containers)
#   historyserver.sh stop                                SIGTERM, then SIGKILL if it has not exited
#                                                        after $SLUICE_STOP_TIMEOUT seconds (10)
#   historyserver.sh status                              whether it runs, and its pid
#
# Configuration: $SLUICE_CONF_DIR/sluice.yaml (default conf/sluice.yaml), passed as --config;
# -D overrides are passed through. Binary: $SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/release, else
# target/release. Pid file and log: ${SLUICE_LOG_DIR:-log}/sluice-historyserver.{pid,log} (the
# previous log is kept as .log.1). $SLUICE_START_TIMEOUT (default 60) bounds the wait.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
START_TIMEOUT=${SLUICE_START_TIMEOUT:-60}
NAME=sluice-historyserver
PID_FILE=$LOG_DIR/$NAME.pid
LOG_FILE=$LOG_DIR/$NAME.log
USAGE="usage: historyserver.sh start [-D key=value]... | start-foreground [-D key=value]... | stop | status"

running_pid() {
    pid_from "$PID_FILE"
}

# The command line: the binary, --config if the file exists, and the -D overrides.
command_line() {
    local bin
    bin=$(bin_dir)/$NAME
    [[ -x $bin ]] || die "no $NAME in $(bin_dir) (build it with 'cargo build --release -p sluice-historyserver', or set SLUICE_BIN_DIR)"
    CMD=("$bin")
    if [[ -f $CONF_FILE ]]; then
        CMD+=(--config "$CONF_FILE")
    fi
    local kv
    for kv in "${OVERRIDES[@]}"; do
        CMD+=(-D "$kv")
    done
}

start_foreground() {
    parse_overrides "$@"
    command_line
    exec "${CMD[@]}"
}

start() {
    parse_overrides "$@"
    local pid
    if pid=$(running_pid); then
        echo "$NAME is already running (pid $pid)"
        return 0
    fi
    command_line
    mkdir -p "$LOG_DIR"
    LOG_DIR=$(cd "$LOG_DIR" && pwd)
    PID_FILE=$LOG_DIR/$NAME.pid
    LOG_FILE=$LOG_DIR/$NAME.log
    if [[ -f $LOG_FILE ]]; then
        mv -f "$LOG_FILE" "$LOG_FILE.1"
    fi
    nohup "${CMD[@]}" >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    local host port url deadline
    host=$(conf_value historyserver.web.address 127.0.0.1)
    [[ $host == 0.0.0.0 ]] && host=127.0.0.1
    port=$(conf_value historyserver.web.port 8082)
    url=http://$host:$port/config
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
    echo "$NAME started (pid $pid) at http://$host:$port, log $LOG_FILE"
}

stop() {
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
    start-foreground) start_foreground "$@" ;;
    stop) stop "$@" ;;
    status) status "$@" ;;
    *) die "$USAGE" ;;
esac
