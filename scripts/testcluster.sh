#!/usr/bin/env bash
# A real HDFS, YARN, ZooKeeper and Kafka on 127.0.0.1 for integration tests and demos.
#
#   testcluster.sh up [--ha] [zk|zk3|hdfs|yarn|kafka]...   start (default: zk3 hdfs yarn kafka)
#   testcluster.sh down                                    stop every process it started
#   testcluster.sh status                                  each process: alive or dead
#   testcluster.sh env                                     exports to `eval` in a shell
#   testcluster.sh kill NAME [SIGNAL] | restart NAME       one process (namenode, datanode1,
#                                                          nodemanager2, zk3, kafka, ...), for
#                                                          failure tests (SIGNAL: default KILL;
#                                                          TERM stops it as its operator would)
#   testcluster.sh pause NAME | resume NAME                SIGSTOP/SIGCONT one process (a server
#                                                          that accepts connections, answers none)
#   testcluster.sh failover                                with --ha: the active NameNode becomes
#                                                          standby, the other one active
#
# Every server is its own JVM (tests/minicluster, built with Maven on first use), bound to
# 127.0.0.1 on ports chosen when the cluster is first brought up. State lives in
# ${SLUICE_TESTCLUSTER_DIR:-/tmp/sluice-testcluster}: cluster.json (addresses, ports, pids),
# conf/ (a HADOOP_CONF_DIR), logs/<name>.log, data/<name>/ and run/<name>.{sh,pid}.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAUNCHER=$ROOT/tests/minicluster
DIR=${SLUICE_TESTCLUSTER_DIR:-/tmp/sluice-testcluster}
NUM_DATANODES=${SLUICE_TESTCLUSTER_DATANODES:-2}
NUM_NODEMANAGERS=${SLUICE_TESTCLUSTER_NODEMANAGERS:-2}
TIMEOUT=${SLUICE_TESTCLUSTER_TIMEOUT:-180}
JAVA=$(command -v "${JAVA_HOME:+$JAVA_HOME/bin/}java") || { echo "testcluster: java not found" >&2; exit 1; }
MAIN=io.sluice.minicluster.Launcher

die() {
    echo "testcluster: $*" >&2
    exit 1
}
log() { echo "testcluster: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Launcher build: Maven runs only when the sources changed; later starts use the classpath file.

build_launcher() {
    local jar=$LAUNCHER/target/sluice-minicluster-0.1.0.jar cp=$LAUNCHER/target/classpath.txt
    if [[ -f $jar && -f $cp ]] && [[ -z $(find "$LAUNCHER/pom.xml" "$LAUNCHER/src" -newer "$jar" -type f) ]]; then
        return
    fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to build $LAUNCHER"
    log "building the launcher (first use: Maven downloads Hadoop, ZooKeeper and Kafka)"
    if ! (cd "$LAUNCHER" && mvn -B -q package >"$DIR/logs/build.log" 2>&1); then
        tail -n 40 "$DIR/logs/build.log" >&2
        die "building $LAUNCHER failed (full log: $DIR/logs/build.log)"
    fi
    touch "$jar"
}

# ---------------------------------------------------------------------------------------------
# Layout: ports are chosen once and kept while any process runs, so a restarted server comes back
# on the same address.

alloc_layout() {
    local n=$((9 + 4 + 5 + 3 * NUM_NODEMANAGERS + 2)) i=0
    local ports
    mapfile -t ports < <("$JAVA" -cp "$LAUNCHER/target/classes" "$MAIN" free-ports "$n")
    [[ ${#ports[@]} -eq $n ]] || die "could not reserve $n free loopback ports"
    {
        echo "HA=$HA"
        echo "NUM_DATANODES=$NUM_DATANODES"
        echo "NUM_NODEMANAGERS=$NUM_NODEMANAGERS"
        for m in 1 2 3; do
            echo "ZK_CLIENT_$m=${ports[i]} ZK_PEER_$m=${ports[i + 1]} ZK_ELECT_$m=${ports[i + 2]}"
            i=$((i + 3))
        done
        echo "NN_RPC_1=${ports[i]} NN_HTTP_1=${ports[i + 1]} NN_RPC_2=${ports[i + 2]} NN_HTTP_2=${ports[i + 3]}"
        i=$((i + 4))
        echo "RM_PORT=${ports[i]} RM_SCHED=${ports[i + 1]} RM_TRACKER=${ports[i + 2]} RM_ADMIN=${ports[i + 3]} RM_WEB=${ports[i + 4]}"
        i=$((i + 5))
        for ((m = 1; m <= NUM_NODEMANAGERS; m++)); do
            echo "NM_PORT_$m=${ports[i]} NM_LOC_$m=${ports[i + 1]} NM_WEB_$m=${ports[i + 2]}"
            i=$((i + 3))
        done
        echo "KAFKA_PORT=${ports[i]} KAFKA_CTRL=${ports[i + 1]}"
    } >"$DIR/layout.env"
}

load_layout() {
    [[ -f $DIR/layout.env ]] || die "no cluster in $DIR (run: $0 up)"
    # shellcheck disable=SC1091
    source "$DIR/layout.env"
}

nn_url() { if [[ $HA == 1 ]]; then echo "hdfs://sluice"; else echo "hdfs://127.0.0.1:$NN_RPC_1"; fi; }
zk_mode() { cat "$DIR/zk.mode" 2>/dev/null || echo none; }
zk_count() { if [[ $(zk_mode) == zk3 ]]; then echo 3; else echo 1; fi; }
zk_quorum() {
    local q="" m p
    for ((m = 1; m <= $(zk_count); m++)); do
        p=ZK_CLIENT_$m
        q+="${q:+,}127.0.0.1:${!p}"
    done
    echo "$q"
}

prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }

write_conf() {
    local c=$DIR/conf
    mkdir -p "$c"
    {
        echo '<?xml version="1.0"?>'
        echo '<configuration>'
        prop fs.defaultFS "$(nn_url)"
        prop hadoop.tmp.dir "$DIR/data/tmp"
        # REST calls without a user name (e.g. application submission) act as this user.
        prop hadoop.http.staticuser.user "${USER:-root}"
        echo '</configuration>'
    } >"$c/core-site.xml"
    {
        echo '<?xml version="1.0"?>'
        echo '<configuration>'
        prop dfs.replication 2
        # Small blocks: the NameNode reserves a block's size on each target DataNode for every
        # block it hands out until the block arrives, and a block of a failed write never does
        # (the reservation lapses after 10 to 20 minutes). Fault tests fail thousands of
        # writes; with large blocks that would exhaust the test disk and refuse all writes.
        prop dfs.blocksize 1048576
        prop dfs.permissions.enabled false
        if [[ $HA == 1 ]]; then
            prop dfs.nameservices sluice
            prop dfs.ha.namenodes.sluice nn1,nn2
            prop dfs.namenode.rpc-address.sluice.nn1 "127.0.0.1:$NN_RPC_1"
            prop dfs.namenode.rpc-address.sluice.nn2 "127.0.0.1:$NN_RPC_2"
            prop dfs.namenode.http-address.sluice.nn1 "127.0.0.1:$NN_HTTP_1"
            prop dfs.namenode.http-address.sluice.nn2 "127.0.0.1:$NN_HTTP_2"
            prop dfs.client.failover.proxy.provider.sluice \
                org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider
        else
            prop dfs.namenode.rpc-address "127.0.0.1:$NN_RPC_1"
            prop dfs.namenode.http-address "127.0.0.1:$NN_HTTP_1"
        fi
        prop dfs.namenode.safemode.extension 0
        prop dfs.namenode.datanode.registration.ip-hostname-check false
        # A killed DataNode is declared dead after ~20 s instead of ~10 min.
        prop dfs.heartbeat.interval 1
        prop dfs.namenode.heartbeat.recheck-interval 5000
        # DataNodes take ephemeral ports: several share 127.0.0.1 and a restart may move.
        prop dfs.datanode.address 127.0.0.1:0
        prop dfs.datanode.http.address 127.0.0.1:0
        prop dfs.datanode.ipc.address 127.0.0.1:0
        prop dfs.datanode.hostname 127.0.0.1
        echo '</configuration>'
    } >"$c/hdfs-site.xml"
    {
        echo '<?xml version="1.0"?>'
        echo '<configuration>'
        prop yarn.resourcemanager.hostname 127.0.0.1
        prop yarn.resourcemanager.address "127.0.0.1:$RM_PORT"
        prop yarn.resourcemanager.scheduler.address "127.0.0.1:$RM_SCHED"
        prop yarn.resourcemanager.resource-tracker.address "127.0.0.1:$RM_TRACKER"
        prop yarn.resourcemanager.admin.address "127.0.0.1:$RM_ADMIN"
        prop yarn.resourcemanager.webapp.address "127.0.0.1:$RM_WEB"
        prop yarn.resourcemanager.recovery.enabled false
        prop yarn.resourcemanager.nodemanagers.heartbeat-interval-ms 500
        # A killed NodeManager is LOST after 10 s instead of 10 min.
        prop yarn.nm.liveness-monitor.expiry-interval-ms 10000
        # The AMRMToken master key rolls every 125 s instead of every day, so tests see an AM
        # take the rolled token. The RM requires the interval to exceed twice the activation
        # delay, 1.5 × the AM expiry (40 s → 60 s). The AM expiry stays above the AM's longest
        # pause between heartbeats: up to 30 s while it cancels a failing job.
        prop yarn.am.liveness-monitor.expiry-interval-ms 40000
        prop yarn.resourcemanager.am-rm-tokens.master-key-rolling-interval-secs 125
        prop yarn.timeline-service.enabled false
        prop yarn.webapp.ui2.enable false
        # The shaded minicluster jar has no capacity-scheduler.xml: one queue, spelled out here.
        prop yarn.resourcemanager.scheduler.class \
            org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler
        prop yarn.scheduler.capacity.root.queues default
        prop yarn.scheduler.capacity.root.default.capacity 100
        prop yarn.scheduler.capacity.root.default.maximum-capacity 100
        prop yarn.scheduler.capacity.root.default.state RUNNING
        prop yarn.scheduler.capacity.root.default.acl_submit_applications '*'
        prop yarn.scheduler.capacity.root.default.acl_administer_queue '*'
        prop yarn.scheduler.capacity.maximum-am-resource-percent 0.5
        prop yarn.scheduler.minimum-allocation-mb 64
        prop yarn.scheduler.maximum-allocation-mb 2048
        prop yarn.nodemanager.hostname 127.0.0.1
        prop yarn.nodemanager.resource.memory-mb 2048
        prop yarn.nodemanager.resource.cpu-vcores 4
        prop yarn.nodemanager.pmem-check-enabled false
        prop yarn.nodemanager.vmem-check-enabled false
        prop yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage 99.9
        prop yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb 100
        prop yarn.nodemanager.container-executor.class \
            org.apache.hadoop.yarn.server.nodemanager.DefaultContainerExecutor
        # Aggregated container logs go to the test HDFS (fs.defaultFS).
        prop yarn.log-aggregation-enable true
        prop yarn.nodemanager.remote-app-log-dir /tmp/logs
        prop yarn.nodemanager.remote-app-log-dir-suffix logs
        prop yarn.nodemanager.delete.debug-delay-sec 0
        echo '</configuration>'
    } >"$c/yarn-site.xml"
    # Metrics are published to JMX at most this many seconds old (Hadoop's default: 10), so a
    # test can read the NameNode's operation counters right after the operations.
    echo '*.period=1' >"$c/hadoop-metrics2.properties"
    # Every JVM has conf/ on its classpath, so this configures the servers' logging.
    cat >"$c/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=%d{HH:mm:ss,SSS} %-5p %c{1}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.metrics2=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
}

# ---------------------------------------------------------------------------------------------
# Processes. run/<name>.sh records the exact command so `restart` starts the same server again;
# it writes its own pid before exec'ing java, so the recorded pid is the JVM's.

JVM_OPTS=(
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=48m -Xss512k
    -XX:MaxMetaspaceSize=256m -Djava.net.preferIPv4Stack=true -Djava.awt.headless=true
    --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/sun.security.action=ALL-UNNAMED --add-exports=java.base/sun.net.dns=ALL-UNNAMED
    --add-exports=java.base/sun.net.util=ALL-UNNAMED
)

heap_for() {
    case $1 in
    zk*) echo 96m ;;
    namenode) echo 384m ;;
    datanode*) echo 160m ;;
    resourcemanager) echo 320m ;;
    nodemanager*) echo 192m ;;
    kafka) echo 320m ;;
    esac
}

# write_run NAME ROLE ARGS...
write_run() {
    local name=$1 role=$2
    shift 2
    local cp
    cp="$DIR/conf:$LAUNCHER/target/sluice-minicluster-0.1.0.jar:$(cat "$LAUNCHER/target/classpath.txt")"
    {
        echo '#!/usr/bin/env bash'
        printf 'echo $$ >%q\n' "$DIR/run/$name.pid"
        printf 'exec %q' "$JAVA"
        printf ' %q' "-Xmx$(heap_for "$name")" "${JVM_OPTS[@]}" "-Dsluice.testcluster=$DIR/$name" \
            -cp "$cp" "$MAIN" "$role" "$@"
        echo
    } >"$DIR/run/$name.sh"
}

pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }

# Alive only if the pid still runs this cluster's launcher (guards against pid reuse).
alive() {
    local pid
    pid=$(pid_of "$1")
    [[ -n $pid ]] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "-Dsluice.testcluster=$DIR/$1 "
}

spawn() {
    local name=$1
    [[ -f $DIR/logs/$name.log ]] && mv "$DIR/logs/$name.log" "$DIR/logs/$name.log.prev"
    rm -f "$DIR/run/$name.pid"
    # 9>&-: the server must not inherit (and hold forever) the command lock.
    nohup bash "$DIR/run/$name.sh" >"$DIR/logs/$name.log" 2>&1 </dev/null 9>&- &
    local i
    for i in $(seq 50); do
        [[ -s $DIR/run/$name.pid ]] && return
        sleep 0.1
    done
    die "$name did not start (see $DIR/logs/$name.log)"
}

fail_with_log() {
    local name=$1 why=$2
    echo "---- last lines of $DIR/logs/$name.log ----" >&2
    tail -n 30 "$DIR/logs/$name.log" >&2 || true
    die "$name $why"
}

deadline() { echo $(($(date +%s) + TIMEOUT)); }

# wait_until DEADLINE NAME WHAT CMD...: poll CMD until it succeeds; fail if NAME dies or time's up.
wait_until() {
    local until=$1 name=$2 what=$3
    shift 3
    while ! "$@"; do
        alive "$name" || fail_with_log "$name" "exited while waiting for: $what"
        (($(date +%s) < until)) || fail_with_log "$name" "not ready after ${TIMEOUT}s: $what"
        sleep 0.3
    done
}

ready_line() { grep -q '^READY ' "$DIR/logs/$1.log" 2>/dev/null; }

zk_serving() {
    local port=$1 out
    out=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; printf srvr >&3; cat <&3" 2>/dev/null) || return 1
    [[ $out == *"Mode: "* ]]
}

nn_jmx() { curl -fsS --max-time 2 "http://127.0.0.1:$NN_HTTP_1/jmx?qry=Hadoop:service=NameNode,name=$1" 2>/dev/null; }
hdfs_ready() {
    local state info
    state=$(nn_jmx FSNamesystemState) || return 1
    info=$(nn_jmx NameNodeInfo) || return 1
    [[ $state =~ \"NumLiveDataNodes\"\ :\ ([0-9]+) ]] || return 1
    ((BASH_REMATCH[1] >= NUM_DATANODES)) || return 1
    [[ $info == *'"Safemode" : ""'* ]]
}

yarn_ready() {
    local m
    m=$(curl -fsS --max-time 2 "http://127.0.0.1:$RM_WEB/ws/v1/cluster/metrics" 2>/dev/null) || return 1
    [[ $m =~ \"activeNodes\":([0-9]+) ]] && ((BASH_REMATCH[1] >= NUM_NODEMANAGERS))
}

# ---------------------------------------------------------------------------------------------
# Components

names_of() {
    local m
    case $1 in
    zk) for ((m = 1; m <= $(zk_count); m++)); do echo "zk$m"; done ;;
    hdfs)
        echo namenode
        for ((m = 1; m <= NUM_DATANODES; m++)); do echo "datanode$m"; done
        ;;
    yarn)
        echo resourcemanager
        for ((m = 1; m <= NUM_NODEMANAGERS; m++)); do echo "nodemanager$m"; done
        ;;
    kafka) echo kafka ;;
    esac
}
all_names() { local c; for c in zk hdfs yarn kafka; do names_of "$c"; done; }
component_of() {
    case $1 in
    zk*) echo zk ;; namenode | datanode*) echo hdfs ;; resourcemanager | nodemanager*) echo yarn ;; kafka) echo kafka ;;
    *) die "unknown process '$1' (expected zkN, namenode, datanodeN, resourcemanager, nodemanagerN, kafka)" ;;
    esac
}
component_alive() {
    local n
    for n in $(names_of "$1"); do alive "$n" && return 0; done
    return 1
}

# prepare NAME [ARGS...]: writes run/NAME.sh; extra arguments go to the NameNode's launcher.
prepare() {
    local name=$1 m
    case $name in
    zk*)
        m=${name#zk}
        # tickTime is 500 ms, which caps sessions at 10 s by default; a master's session may
        # be set long enough to outlive a lost quorum (high-availability tests).
        local args=("dataDir=$DIR/data/$name" "clientPort=$(eval echo "\$ZK_CLIENT_$m")"
            "maxSessionTimeout=60000")
        if [[ $(zk_mode) == zk3 ]]; then
            args+=("myid=$m")
            for k in 1 2 3; do
                args+=("server.$k=127.0.0.1:$(eval echo "\$ZK_PEER_$k"):$(eval echo "\$ZK_ELECT_$k")")
            done
        fi
        write_run "$name" zk "${args[@]}"
        ;;
    namenode) write_run namenode namenode "dir=$DIR/data/namenode" "${@:2}" ;;
    datanode*) write_run "$name" datanode "dfs.datanode.data.dir=$DIR/data/$name" ;;
    resourcemanager) write_run resourcemanager resourcemanager ;;
    nodemanager*)
        m=${name#nodemanager}
        write_run "$name" nodemanager \
            "yarn.nodemanager.address=127.0.0.1:$(eval echo "\$NM_PORT_$m")" \
            "yarn.nodemanager.localizer.address=127.0.0.1:$(eval echo "\$NM_LOC_$m")" \
            "yarn.nodemanager.webapp.address=127.0.0.1:$(eval echo "\$NM_WEB_$m")" \
            "yarn.nodemanager.local-dirs=$DIR/data/$name/local" \
            "yarn.nodemanager.log-dirs=$DIR/data/$name/logs"
        ;;
    kafka) write_run kafka kafka "dir=$DIR/data/kafka" "port=$KAFKA_PORT" "controllerPort=$KAFKA_CTRL" ;;
    esac
}

# Readiness of one process, beyond its READY line.
wait_process() {
    local name=$1 until=$2 m
    wait_until "$until" "$name" "its READY line" ready_line "$name"
    case $name in
    zk*)
        m=${name#zk}
        wait_until "$until" "$name" "srvr answered with a mode" zk_serving "$(eval echo "\$ZK_CLIENT_$m")"
        ;;
    namenode | datanode*)
        wait_until "$until" "$name" "NameNode out of safe mode with $NUM_DATANODES live DataNodes" hdfs_ready
        ;;
    resourcemanager | nodemanager*)
        wait_until "$until" "$name" "$NUM_NODEMANAGERS NodeManagers RUNNING" yarn_ready
        ;;
    esac
}

write_json() {
    local out=$DIR/cluster.json.tmp n first=1 zkm
    zkm=$(zk_mode)
    {
        echo "{"
        echo "  \"dir\": \"$DIR\","
        echo "  \"conf_dir\": \"$DIR/conf\","
        echo "  \"launcher_classpath\": \"$DIR/conf:$LAUNCHER/target/sluice-minicluster-0.1.0.jar:$(cat "$LAUNCHER/target/classpath.txt")\","
        echo "  \"java\": \"$JAVA\","
        echo "  \"zookeeper\": {\"mode\": \"$zkm\", \"quorum\": \"$(zk_quorum)\"},"
        echo "  \"hdfs\": {\"url\": \"$(nn_url)\", \"ha\": $([[ $HA == 1 ]] && echo true || echo false),"
        echo "           \"namenode_http\": \"http://127.0.0.1:$NN_HTTP_1\", \"datanodes\": $NUM_DATANODES},"
        echo "  \"yarn\": {\"rm_address\": \"127.0.0.1:$RM_PORT\", \"rm_scheduler_address\": \"127.0.0.1:$RM_SCHED\","
        echo "           \"rm_web\": \"http://127.0.0.1:$RM_WEB\", \"nodemanagers\": $NUM_NODEMANAGERS},"
        echo "  \"kafka\": {\"bootstrap\": \"127.0.0.1:$KAFKA_PORT\", \"controller_port\": $KAFKA_CTRL},"
        echo "  \"processes\": ["
        for n in $(all_names); do
            [[ -f $DIR/run/$n.sh ]] || continue
            ((first)) || echo ","
            first=0
            printf '    {"name": "%s", "component": "%s", "pid": %s, "alive": %s, "log": "%s"}' \
                "$n" "$(component_of "$n")" "$(pid_of "$n" | grep . || echo null)" \
                "$(alive "$n" && echo true || echo false)" "$DIR/logs/$n.log"
        done
        echo
        echo "  ]"
        echo "}"
    } >"$out"
    mv "$out" "$DIR/cluster.json"
}

# Whether any process of the recorded layout still runs (loads the layout).
any_alive() {
    local n
    [[ -f $DIR/layout.env ]] || return 1
    load_layout
    for n in $(all_names); do alive "$n" && return 0; done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_up() {
    local start wanted=() comps=() c n until
    start=$(date +%s%3N)
    HA=0
    for c in "$@"; do
        case $c in
        --ha) HA=1 ;;
        zk | zk3 | hdfs | yarn | kafka) wanted+=("$c") ;;
        *) die "unknown component '$c' (expected zk, zk3, hdfs, yarn, kafka)" ;;
        esac
    done
    ((${#wanted[@]})) || wanted=(zk3 hdfs yarn kafka)
    # Aggregated YARN logs are written to HDFS.
    [[ " ${wanted[*]} " == *" yarn "* && " ${wanted[*]} " != *" hdfs "* ]] && wanted=(hdfs "${wanted[@]}")

    mkdir -p "$DIR/logs" "$DIR/run" "$DIR/data"
    build_launcher
    local ha=$HA
    if any_alive; then
        [[ $ha == "$HA" ]] || log "HDFS HA setting of the running cluster kept (HA=$HA)"
    else
        HA=$ha NUM_DATANODES=${SLUICE_TESTCLUSTER_DATANODES:-2} NUM_NODEMANAGERS=${SLUICE_TESTCLUSTER_NODEMANAGERS:-2}
        rm -rf "$DIR/data" "$DIR/run" "$DIR/zk.mode"
        mkdir -p "$DIR/run" "$DIR/data"
        alloc_layout
        load_layout
    fi

    for c in "${wanted[@]}"; do
        local comp=$c
        if [[ $c == zk || $c == zk3 ]]; then
            comp=zk
            if component_alive zk; then
                [[ $(zk_mode) == "$c" ]] || log "ZooKeeper already runs as $(zk_mode); $c not started"
                continue
            fi
            echo "$c" >"$DIR/zk.mode"
        elif component_alive "$comp"; then
            log "$comp already running"
            continue
        fi
        comps+=("$comp")
    done
    write_conf

    # DataNodes start once the NameNode serves: MiniDFSCluster's start-up waits for exactly its
    # own DataNodes (none) to register and would hang if ours registered first.
    until=$(deadline)
    local later=()
    for c in "${comps[@]}"; do
        for n in $(names_of "$c"); do
            rm -rf "${DIR:?}/data/$n"
            prepare "$n"
            if [[ $n == datanode* ]]; then later+=("$n"); else spawn "$n"; fi
        done
    done
    if ((${#later[@]})); then
        wait_until "$until" namenode "its READY line" ready_line namenode
        for n in "${later[@]}"; do spawn "$n"; done
    fi
    write_json
    for c in "${comps[@]}"; do
        for n in $(names_of "$c"); do wait_process "$n" "$until"; done
        log "$c ready"
    done
    write_json
    local ms=$(($(date +%s%3N) - start))
    log "up in $((ms / 1000)).$((ms % 1000 / 100)) s: ${wanted[*]} ($DIR/cluster.json)"
}

# stop_group NAME...: SIGTERM to all (SIGCONT first, in case one is paused), wait up to 30 s,
# then SIGKILL the rest.
stop_group() {
    local n waited=0
    for n in "$@"; do
        if alive "$n"; then kill -CONT "$(pid_of "$n")" 2>/dev/null || true; fi
        if alive "$n"; then kill -TERM "$(pid_of "$n")" 2>/dev/null || true; fi
    done
    for n in "$@"; do
        while alive "$n"; do
            if ((waited >= 300)); then
                log "$n did not stop on SIGTERM within 30 s, killing it"
                kill -9 "$(pid_of "$n")" 2>/dev/null || true
                sleep 0.5
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
    done
}

cmd_down() {
    [[ -f $DIR/layout.env ]] || {
        log "nothing to stop in $DIR"
        return
    }
    load_layout
    local stopped=() group n
    # In dependency order: NodeManagers unregister from the ResourceManager and flush logs to
    # HDFS; DataNodes go before their NameNode; ZooKeeper last.
    for group in "$(names_of yarn | grep node)" "resourcemanager kafka" "$(names_of hdfs | grep data)" \
        namenode "$(names_of zk)"; do
        local running=()
        for n in $group; do alive "$n" && running+=("$n"); done
        ((${#running[@]})) || continue
        stop_group "${running[@]}"
        stopped+=("${running[@]}")
    done
    rm -f "$DIR"/run/*.pid
    write_json
    log "stopped ${stopped[*]:-nothing}"
}

cmd_status() {
    [[ -f $DIR/layout.env ]] || {
        echo "no cluster in $DIR"
        return
    }
    load_layout
    local n
    for n in $(all_names); do
        [[ -f $DIR/run/$n.sh ]] || continue
        if alive "$n"; then
            printf '%-16s alive  pid %s\n' "$n" "$(pid_of "$n")"
        else
            printf '%-16s dead\n' "$n"
        fi
    done
}

cmd_env() {
    load_layout
    echo "export SLUICE_TESTCLUSTER_DIR=$DIR"
    echo "export HADOOP_CONF_DIR=$DIR/conf"
    echo "export SLUICE_HDFS_URL=$(nn_url)"
    echo "export SLUICE_ZK_QUORUM=$(zk_quorum)"
    echo "export SLUICE_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
    echo "export SLUICE_YARN_RM_WEB=http://127.0.0.1:$RM_WEB"
}

cmd_kill() {
    local name=${1:?usage: $0 kill NAME} signal=${2:-KILL}
    load_layout
    component_of "$name" >/dev/null
    alive "$name" || die "$name is not running"
    kill "-$signal" "$(pid_of "$name")"
    while alive "$name"; do sleep 0.1; done
    write_json
    log "$name stopped (SIG$signal)"
}

cmd_restart() {
    local name=${1:?usage: $0 restart NAME} start
    start=$(date +%s)
    load_layout
    component_of "$name" >/dev/null
    [[ -f $DIR/run/$name.sh ]] || die "$name was never started in $DIR"
    alive "$name" && cmd_kill "$name" KILL
    # The NameNode formats on `up`; a restart loads the namespace it left behind, and the
    # running DataNodes register with it again.
    [[ $name != namenode ]] || prepare namenode format=false
    spawn "$name"
    wait_process "$name" "$(deadline)"
    write_json
    log "$name restarted in $(($(date +%s) - start)) s"
}

# pause NAME | resume NAME: SIGSTOP/SIGCONT; a paused server keeps its sockets open but answers
# nothing, like one stuck in a long GC pause.
cmd_signal() {
    local name=${1:?usage: $0 pause|resume NAME} signal=$2 what=$3
    load_layout
    component_of "$name" >/dev/null
    alive "$name" || die "$name is not running"
    local pid
    pid=$(pid_of "$name")
    kill "-$signal" "$pid"
    # The signal stops each thread as it next enters or leaves the kernel; on a busy machine
    # that can lag the kill. Return only once every thread is stopped, so a caller's next
    # request finds a server that answers nothing.
    [[ $signal != STOP ]] || wait_stopped "$name" "$pid"
    log "$name $what (SIG$signal)"
}

# wait_stopped NAME PID: until every thread of PID is in the stopped state (T), at most 10 s.
wait_stopped() {
    local name=$1 pid=$2 until=$((SECONDS + 10)) stat line running
    while :; do
        running=0
        for stat in /proc/"$pid"/task/*/stat; do
            line=$(cat "$stat" 2>/dev/null) || continue
            line=${line##*) }
            [[ ${line:0:1} == [Tt] ]] || running=$((running + 1))
        done
        ((running == 0)) && return
        ((SECONDS < until)) || die "$name (pid $pid): $running threads still running 10 s after SIGSTOP"
        sleep 0.05
    done
}

# DFSHAAdmin (`hdfs haadmin`) from the launcher's classpath, configured by conf/.
haadmin() {
    "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -cp "$DIR/conf:$LAUNCHER/target/sluice-minicluster-0.1.0.jar:$(cat "$LAUNCHER/target/classpath.txt")" \
        org.apache.hadoop.hdfs.tools.DFSHAAdmin "$@"
}

# failover: a manual failover of the HA pair, as `hdfs haadmin -transitionToStandby` and
# `-transitionToActive` do it (automatic failover is off). Prints "<nn> standby", "<nn> active".
cmd_failover() {
    local from to state
    load_layout
    [[ $HA == 1 ]] || die "failover needs an HA NameNode pair (down, then up --ha hdfs)"
    alive namenode || die "the NameNodes are not running"
    state=$(haadmin -getServiceState nn1 2>/dev/null) || die "nn1 did not tell its HA state"
    if [[ $state == active ]]; then from=nn1 to=nn2; else from=nn2 to=nn1; fi
    haadmin -transitionToStandby "$from" >&2 || die "$from did not become standby"
    haadmin -transitionToActive "$to" >&2 || die "$to did not become active"
    log "failover: $from standby, $to active"
    echo "$from standby"
    echo "$to active"
}

# One command at a time per cluster dir: concurrent tests may call `up` together.
lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
}

case ${1:-} in
up | down | kill | restart | pause | resume | failover) lock ;;
esac
case ${1:-} in
up) cmd_up "${@:2}" ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
kill) cmd_kill "${@:2}" ;;
restart) cmd_restart "${@:2}" ;;
failover) cmd_failover ;;
pause) cmd_signal "${2:-}" STOP paused ;;
resume) cmd_signal "${2:-}" CONT resumed ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
