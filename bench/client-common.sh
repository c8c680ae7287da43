# bench/client-common.sh: helpers for the null-client benchmarks (sourced by bench/client-*.sh,
# not run). On top of bench/common.sh (nullq_binary, nullq_start/stop, free_port, machine_info)
# and bench/postfix-qmqpd.sh (pf_start/stop/clear/count: a private Postfix whose cleanup puts
# every message on HOLD):
#
#   client_home DIR PORT   a qmail home for nullq's client: DIR/control/{me,defaulthost,
#                          qmqpservers = 127.0.0.1:PORT} and DIR/bin/{sendmail,mailq,
#                          qmail-inject,qmail-qmqpc} -> $NULLQ_BIN; with CLIENT_SYSLOG=off,
#                          also control/syslog = off (no syslog line per message)
#   pf_hold                the number of messages in the private Postfix's hold queue
#   pf_wait_hold N SECS    wait (at most SECS) until N messages are on hold; 0 if so, 1 if not
#   secs_since T0          seconds since $EPOCHREALTIME was T0, to the millisecond

# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=bench/postfix-qmqpd.sh
source "$(dirname "${BASH_SOURCE[0]}")/postfix-qmqpd.sh"

client_home() {
    local dir=$1 port=$2 name
    mkdir -p "$dir/control" "$dir/bin"
    echo client.example.net > "$dir/control/me"
    echo example.net > "$dir/control/defaulthost"
    echo "127.0.0.1:$port" > "$dir/control/qmqpservers"
    if [[ ${CLIENT_SYSLOG:-} == off ]]; then
        echo off > "$dir/control/syslog"
    fi
    for name in sendmail mailq qmail-inject qmail-qmqpc; do
        ln -sfn "$NULLQ_BIN" "$dir/bin/$name"
    done
}

pf_hold() {
    find "$PF_DIR/queue/hold" -type f 2>/dev/null | wc -l
}

pf_wait_hold() {
    local want=$1 limit=$2 i
    for ((i = 0; i < limit * 20; i++)); do
        (($(pf_hold) >= want)) && return 0
        sleep 0.05
    done
    return 1
}

secs_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}
