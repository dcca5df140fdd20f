# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables below are used by the scripts that source this file
# Shared by the admin scripts (master.sh, worker.sh, historyserver.sh): paths, the -D override
# parsing, reading a key from conf/sluice.yaml, and process checks. Sourced, not run; the
# sourcing script sets USAGE (for errors) before calling parse_overrides.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_DIR=${SLUICE_CONF_DIR:-$ROOT/conf}
CONF_FILE=$CONF_DIR/sluice.yaml
LOG_DIR=${SLUICE_LOG_DIR:-$ROOT/log}
STOP_TIMEOUT=${SLUICE_STOP_TIMEOUT:-10}
OVERRIDES=()

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# Where the binaries are: $SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/release, else target/release.
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

# Whether process $1 exists, is not a zombie and is named $2 (comm is cut to 15 characters).
alive() {
    local out stat comm
    out=$(ps -p "$1" -o stat=,comm= 2>/dev/null) || return 1
    read -r stat comm <<<"$out"
    [[ $stat != Z* && $comm == "${2:0:15}" ]]
}

# Stops process $1 (named $NAME): SIGTERM, then SIGKILL once $STOP_TIMEOUT seconds have passed;
# returns once it is gone (or 5 s after the SIGKILL). $2 names it in the message on SIGKILL.
terminate() {
    local pid=$1 what=$2
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" "$NAME"; do
        if ((SECONDS >= deadline)); then
            echo "$(basename "$0"): $what (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while alive "$pid" "$NAME" && ((SECONDS < deadline)); do
                sleep 0.1
            done
            return 0
        fi
        sleep 0.1
    done
}

# Prints the pid recorded in pid file $1 if that process runs as $NAME; fails otherwise.
pid_from() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" "$NAME" || return 1
    echo "$pid"
}
