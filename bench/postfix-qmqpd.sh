#!/usr/bin/env bash
# bench/postfix-qmqpd.sh: a private, queue-only Postfix qmqpd to benchmark nullq against.
#
# What it is: a Postfix instance that lives entirely in a temporary directory (its own main.cf and
# master.cf, queue and data directories, log file). It never reads or touches /etc/postfix/main.cf
# or /etc/postfix/master.cf (only Debian's master.cf.proto, which it copies). It listens for QMQP on
# 127.0.0.1:PORT only, accepts 127.0.0.0/8 (qmqpd_authorized_clients), and puts EVERY message on
# hold (header_checks `/^/ HOLD`): cleanup writes and fsyncs the queue file, then files it in
# hold/, and nothing is delivered. That is a fair queue-only peer for `nullq serve`.
#
# Two ways to use it:
#   sudo bench/postfix-qmqpd.sh [PORT]    # self-check: start, send 100 qmqp-source messages,
#                                         # check 100 are on hold, stop, remove the directory
#   source bench/postfix-qmqpd.sh         # from another bench script: pf_start, pf_count,
#                                         # pf_clear, pf_pids, pf_stop (see below)
#
# Needs: root (Postfix runs as mail_owner=postfix and setgid_group=postdrop; root may use any
# `postfix -c DIR`, so nothing has to be listed in the default main.cf's
# alternate_config_directories), Debian's postfix package (postfix, postconf, postsuper,
# qmqp-source), and python3 (to find a free port). Helpers come from bench/common.sh.
#
# Why the settings:
#   - chroot is turned off for every service (master.cf.proto chroots most of them into
#     queue_directory, which would need /etc files copied into the temporary queue).
#   - the stock `smtp inet` service is removed: the instance listens on nothing but its qmqpd port.
#   - maillog_file (through the postlog service) keeps the log in the temporary directory: Postfix
#     logs like nullq does (one file, no syslog daemon needed).

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Functions take their state from these globals, set by pf_start.
PF_DIR=""    # the instance's temporary directory: conf/, queue/, data/, maillog
PF_PORT=""   # its QMQP port on 127.0.0.1

# pf_start DIR PORT [MAIN_CF_LINES]: create and start an instance in DIR (must not exist or be
# empty); MAIN_CF_LINES are appended to its main.cf (e.g. "default_process_limit = 1100").
pf_start() {
    local dir=$1 port=$2 extra=${3:-}
    # PF_HOLD=0: no hold, for an instance that relays what it takes (bench/e2e.sh).
    local hold="header_checks = regexp:$dir/conf/hold"
    [[ ${PF_HOLD:-1} == 0 ]] && hold=""
    PF_DIR=$dir
    PF_PORT=$port
    mkdir -p "$dir/conf"
    # Postfix's daemons run as postfix and must reach queue/ and data/: every directory above
    # them must be searchable by others (mktemp -d makes 0700 directories).
    # Search permission added to the parent, never its mode replaced: the parent may be /var/tmp
    # itself (sticky, 1777), which 0755 would break for every other user.
    chmod 0755 "$dir"
    chmod a+x "$(dirname "$dir")"
    # queue_directory must be owned by root; Postfix creates its subdirectories (postfix:postdrop).
    install -d -o root -g root -m 0755 "$dir/queue"
    install -d -o postfix -g postfix -m 0700 "$dir/data"
    printf '/^/ HOLD\n' > "$dir/conf/hold"
    cat > "$dir/conf/main.cf" <<EOF
# Written by bench/postfix-qmqpd.sh: a private queue-only instance for benchmarks.
compatibility_level = 3.6
config_directory = $dir/conf
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = $dir/maillog
myhostname = postfix-bench.localdomain
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
qmqpd_authorized_clients = 127.0.0.0/8
message_size_limit = 210000000
$hold
$extra
EOF
    cp /etc/postfix/master.cf.proto "$dir/conf/master.cf"
    postconf -c "$dir/conf" -MX smtp/inet
    postconf -c "$dir/conf" -F '*/*/chroot = n'
    postconf -c "$dir/conf" -M "127.0.0.1:$port/inet = 127.0.0.1:$port inet n - n - - qmqpd"
    postfix -c "$dir/conf" check
    if ! postfix -c "$dir/conf" start; then
        tail -5 "$dir/maillog" >&2
        return 1
    fi
    if ! wait_port "$port"; then
        tail -5 "$dir/maillog" >&2
        return 1
    fi
}

# pf_count: the number of messages in the instance's queue (all queues: incoming, active,
# deferred, hold, ...). Every accepted message ends up in hold/.
pf_count() {
    find "$PF_DIR/queue/incoming" "$PF_DIR/queue/active" "$PF_DIR/queue/deferred" \
        "$PF_DIR/queue/hold" -type f 2>/dev/null | wc -l
}

# pf_clear: delete every message on hold (and anywhere else), so the next run starts empty.
pf_clear() {
    postsuper -c "$PF_DIR/conf" -d ALL 2>/dev/null || true
    local n
    n=$(pf_count)
    if ((n != 0)); then
        echo "postfix-qmqpd: $n messages left after postsuper -d ALL" >&2
        return 1
    fi
}

# pf_pids [NAME]: the process ids of the instance's processes (only those named NAME, e.g.
# qmqpd, if given). Several Postfix instances may run on this machine: ours are those whose
# environment has MAIL_CONFIG=our config directory (master passes it to every daemon).
pf_pids() {
    local name=${1:-} proc pid
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        if [[ -n $name && $(cat "$proc/comm" 2>/dev/null) != "$name" ]]; then
            continue
        fi
        if grep -qxzF "MAIL_CONFIG=$PF_DIR/conf" "$proc/environ" 2>/dev/null; then
            echo "$pid"
        fi
    done
}

# pf_stop: stop the instance (if started) and wait (at most 20 s) for its master to exit.
pf_stop() {
    [[ -n $PF_DIR && -f $PF_DIR/conf/main.cf ]] || return 0
    local pidfile=$PF_DIR/queue/pid/master.pid master="" i
    if [[ -r $pidfile ]]; then
        master=$(tr -d ' \n' < "$pidfile")
    fi
    postfix -c "$PF_DIR/conf" stop >/dev/null 2>&1 || true
    if [[ -n $master ]]; then
        for ((i = 0; i < 200; i++)); do
            kill -0 "$master" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

pf_selfcheck() {
    set -euo pipefail
    local port=${1:-$(free_port)}
    local top
    top=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nullq-bench-postfix.XXXXXX")
    # shellcheck disable=SC2064  # expand $top now
    trap "pf_stop; rm -rf '$top'" EXIT
    pf_start "$top/postfix" "$port"
    echo "postfix-qmqpd: instance in $top/postfix, qmqpd on 127.0.0.1:$port"
    timeout 120 qmqp-source -s 5 -m 100 -l 1024 "127.0.0.1:$port"
    local n
    n=$(pf_count)
    echo "postfix-qmqpd: $n messages queued (expected 100); hold queue has $(find "$PF_DIR/queue/hold" -type f | wc -l)"
    ((n == 100))
    pf_clear
    echo "postfix-qmqpd: OK"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    pf_selfcheck "$@"
fi
