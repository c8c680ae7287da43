#!/usr/bin/env bash
# bench/rss.sh: memory of `nullq serve` (and optionally Postfix qmqpd) under two loads.
#
# What it measures (from /proc/PID/status: VmRSS = resident now, VmHWM = peak resident):
#   (a) idle:  N (1000) connections held open, each having sent 3 bytes of a request
#              (bench/idle_clients.py). nullq runs with --max-sessions 2000
#              --max-sessions-per-ip 2000 --read-timeout 600 so all N are admitted and none times
#              out. Reported: RSS/HWM before, the largest VmRSS of 5 samples 1 s apart while all N
#              are held (the server must have N more descriptors open first), and VmHWM after.
#              (The server's defaults otherwise: with an empty queue its delivery runner idles.)
#   (b) big:   one 100,000,000-byte message (`qmqp-source -s 1 -m 1 -l 100000000`), nullq with
#              --databytes 200000000 --deliver none (receive only). Reported: VmHWM of a fresh
#              server, after one 1 KB message (warm), and after the 100 MB message; growth =
#              after - fresh. The stored file must hold the whole message.
#   (b2) the same with the default delivery (Maildir under DATA/delivered): VmHWM once the
#              message is in the Maildir and gone from the queue, minus the fresh server's.
#   With -p, the same for a private Postfix (bench/postfix-qmqpd.sh; default_process_limit raised
#   so qmqpd can hold N sessions): (a) the sum of VmRSS and of Pss (smaps_rollup: shared pages
#   split between the processes that map them) over all the instance's processes, since Postfix
#   runs one qmqpd process per session; (b) in a new instance, VmHWM of the qmqpd and cleanup
#   processes that handle the 100 MB message (started by a 1 KB message first; they stay and take
#   the next connection too).
#
# Run (as root for -p; nullq alone needs no root):
#   bench/rss.sh                      # builds nullq (cargo build --release -p nullq)
#   NULLQ=/path/to/nullq bench/rss.sh -n 1000 -p
# Options: -n N idle connections (1000), -p also measure Postfix qmqpd.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
# shellcheck source=bench/postfix-qmqpd.sh
source "$here/postfix-qmqpd.sh"

conns=1000
with_postfix=0
while (($#)); do
    case $1 in
        -n) conns=$2; shift 2 ;;
        -p) with_postfix=1; shift ;;
        *) echo "usage: $0 [-n CONNECTIONS] [-p]" >&2; exit 100 ;;
    esac
done
((conns >= 1 && conns <= 5000)) || { echo "rss: -n must be 1..5000" >&2; exit 100; }
big=100000000

# Room for the connections on both ends (the server and the client inherit this).
ulimit -n "$(( $(ulimit -Hn) < 8192 ? $(ulimit -Hn) : 8192 ))"

top=$(mktemp -d "$BENCH_TMP/nullq-bench-rss.XXXXXX")
clients_pid=""
cleanup() {
    if [[ -n $clients_pid ]]; then
        kill "$clients_pid" 2>/dev/null || true
        wait "$clients_pid" 2>/dev/null || true
    fi
    nullq_stop
    pf_stop
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NULLQ_BIN=$(nullq_binary)
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

# hold_idle PORT FD_PID...: open $conns idle connections; wait until the processes FD_PID...
# hold $conns more descriptors between them (or, given `pf_all`, until the Postfix instance runs
# $conns qmqpd processes); then run "$SAMPLE" 5 times, 1 s apart, while they are held.
hold_idle() {
    local port=$1
    shift
    local fds0=0 fds i pid
    if [[ $1 != pf_all ]]; then
        for pid in "$@"; do fds0=$((fds0 + $(ls "/proc/$pid/fd" | wc -l))); done
    fi
    python3 "$here/idle_clients.py" "$port" "$conns" 20 > "$top/idle.out" 2>&1 &
    clients_pid=$!
    for ((i = 0; i < 600; i++)); do
        grep -q '^connected' "$top/idle.out" && break
        kill -0 "$clients_pid" 2>/dev/null || { cat "$top/idle.out" >&2; return 1; }
        sleep 0.1
    done
    grep -q '^connected' "$top/idle.out" || { echo "rss: clients did not connect in 60 s" >&2; return 1; }
    for ((i = 0; i < 300; i++)); do
        fds=0
        if [[ $1 == pf_all ]]; then
            fds=$(pf_pids qmqpd | wc -l)
            ((fds >= conns)) && break
        else
            for pid in "$@"; do fds=$((fds + $(ls "/proc/$pid/fd" | wc -l))); done
            ((fds - fds0 >= conns)) && break
        fi
        sleep 0.1
    done
    echo "server side: $fds (descriptors, or qmqpd processes for Postfix) after $((i / 10)) s"
    sleep 2
    for ((i = 0; i < 5; i++)); do
        $SAMPLE
        sleep 1
    done
    wait "$clients_pid"
    clients_pid=""
    cat "$top/idle.out"
    grep -qx 'closed 0' "$top/idle.out" || { echo "rss: the server closed idle connections" >&2; return 1; }
}

echo "# bench/rss.sh -n $conns$( ((with_postfix)) && echo ' -p')"
machine_info "$top" | sed 's/^/# /'
echo "# nullq:      $NULLQ_BIN"

echo
echo "== (a) nullq serve, $conns idle connections"
port=$(free_port)
# Idle on purpose: without a long first-byte timeout they would be closed after 10 s.
nullq_start "$top/nullq-idle" "$port" --max-sessions 2000 --max-sessions-per-ip 2000 --read-timeout 600 \
    --first-byte-timeout 600
sleep 1
echo "before:  VmRSS $(mb "$(proc_kb "$NULLQ_PID" VmRSS)"), VmHWM $(mb "$(proc_kb "$NULLQ_PID" VmHWM)"), threads $(proc_kb "$NULLQ_PID" Threads)"
max_rss=0
sample_nullq() {
    local r
    r=$(proc_kb "$NULLQ_PID" VmRSS)
    ((r > max_rss)) && max_rss=$r
    echo "  held:  VmRSS $(mb "$r"), threads $(proc_kb "$NULLQ_PID" Threads)"
}
SAMPLE=sample_nullq hold_idle "$port" "$NULLQ_PID"
pss=$(awk '/^Pss:/ { print $2 }' "/proc/$NULLQ_PID/smaps_rollup")
echo "RESULT nullq idle: max VmRSS while held $(mb "$max_rss"); VmHWM $(mb "$(proc_kb "$NULLQ_PID" VmHWM)"); Pss now $(mb "$pss")"
nullq_stop

echo
echo "== (b) nullq serve --deliver none, one $big-byte message"
port=$(free_port)
nullq_start "$top/nullq-big" "$port" --databytes 200000000 --deliver none
sleep 1
fresh=$(proc_kb "$NULLQ_PID" VmHWM)
echo "fresh:   VmRSS $(mb "$(proc_kb "$NULLQ_PID" VmRSS)"), VmHWM $(mb "$fresh")"
timeout 120 qmqp-source -s 1 -m 1 -l 1024 "127.0.0.1:$port"
warm=$(proc_kb "$NULLQ_PID" VmHWM)
echo "1 KB:    VmRSS $(mb "$(proc_kb "$NULLQ_PID" VmRSS)"), VmHWM $(mb "$warm")"
t0=$EPOCHREALTIME
timeout 300 qmqp-source -s 1 -m 1 -l "$big" "127.0.0.1:$port"
t1=$EPOCHREALTIME
after=$(proc_kb "$NULLQ_PID" VmHWM)
echo "100 MB:  VmRSS $(mb "$(proc_kb "$NULLQ_PID" VmRSS)"), VmHWM $(mb "$after") ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)"
largest=$(find "$top/nullq-big/queue" -type f -printf '%s\n' | sort -n | tail -1)
echo "stored:  largest queue file $largest bytes"
((largest > big)) || { echo "rss: the 100 MB message is not in the queue" >&2; exit 1; }
echo "RESULT nullq 100 MB received: VmHWM growth $(mb $((after - fresh))) from fresh, $(mb $((after - warm))) from warm"
nullq_stop

echo
echo "== (b2) nullq serve (default delivery: Maildir under DATA/delivered), one $big-byte message"
port=$(free_port)
nullq_start "$top/nullq-big2" "$port" --databytes 200000000
sleep 1
fresh=$(proc_kb "$NULLQ_PID" VmHWM)
echo "fresh:   VmRSS $(mb "$(proc_kb "$NULLQ_PID" VmRSS)"), VmHWM $(mb "$fresh")"
timeout 300 qmqp-source -s 1 -m 1 -l "$big" "127.0.0.1:$port"
# Wait (at most 120 s) until the message is delivered: in the Maildir and gone from the queue.
for ((i = 0; i < 1200; i++)); do
    # (delivered/ appears with the first delivery: until then find fails, and that is 0.)
    delivered=$({ find "$top/nullq-big2/delivered" -path '*/new/*' -type f -size +90M 2>/dev/null || true; } | wc -l)
    queued=$(find "$top/nullq-big2/queue" -type f | wc -l)
    ((delivered == 1 && queued == 0)) && break
    sleep 0.1
done
after=$(proc_kb "$NULLQ_PID" VmHWM)
echo "100 MB:  delivered $delivered, queued $queued after $((i / 10)) s; VmRSS $(mb "$(proc_kb "$NULLQ_PID" VmRSS)"), VmHWM $(mb "$after")"
((delivered == 1)) || { echo "rss: the 100 MB message was not delivered to the Maildir" >&2; exit 1; }
echo "RESULT nullq 100 MB received and delivered: VmHWM growth $(mb $((after - fresh))) from fresh"
nullq_stop

((with_postfix)) || exit 0

echo
echo "== (c) Postfix qmqpd, $conns idle connections"
pf_start "$top/postfix" "$(free_port)" "default_process_limit = $((conns + 100))"
pf_sum() {
    local field=$1 pid total=0 v
    for pid in $(pf_pids); do
        if [[ $field == Pss ]]; then
            v=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        else
            v=$(proc_kb "$pid" "$field" 2>/dev/null || echo 0)
        fi
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
echo "before:  $(pf_pids | wc -l) processes, sum VmRSS $(mb "$(pf_sum VmRSS)"), sum Pss $(mb "$(pf_sum Pss)")"
max_rss=0
max_pss=0
sample_postfix() {
    local r p
    r=$(pf_sum VmRSS)
    p=$(pf_sum Pss)
    ((r > max_rss)) && max_rss=$r
    ((p > max_pss)) && max_pss=$p
    echo "  held:  $(pf_pids | wc -l) processes, sum VmRSS $(mb "$r"), sum Pss $(mb "$p")"
}
SAMPLE=sample_postfix hold_idle "$PF_PORT" pf_all
echo "RESULT postfix idle: max sum VmRSS $(mb "$max_rss"), max sum Pss $(mb "$max_pss")"

echo
echo "== (d) Postfix qmqpd, one $big-byte message"
# A new instance, so that one qmqpd and one cleanup process exist: started by a 1 KB message, they
# stay (idle) and take the next connection too.
pf_stop
pf_start "$top/postfix-big" "$(free_port)"
timeout 120 qmqp-source -s 1 -m 1 -l 1024 "127.0.0.1:$PF_PORT"
declare -A hwm0
for pid in $(pf_pids qmqpd) $(pf_pids cleanup); do
    hwm0[$pid]=$(proc_kb "$pid" VmHWM 2>/dev/null || echo 0)
done
echo "1 KB:    qmqpd pids $(pf_pids qmqpd | tr '\n' ' '), cleanup pids $(pf_pids cleanup | tr '\n' ' ')"
timeout 300 qmqp-source -s 1 -m 1 -l "$big" "127.0.0.1:$PF_PORT"
for name in qmqpd cleanup; do
    for pid in $(pf_pids "$name"); do
        h=$(proc_kb "$pid" VmHWM 2>/dev/null || echo 0)
        echo "RESULT postfix 100 MB: $name (pid $pid): VmHWM $(mb "$h") (after 1 KB: $(mb "${hwm0[$pid]:-0}"))"
    done
done
echo "stored:  $(pf_count) messages on hold, largest $(find "$PF_DIR/queue/hold" -type f -printf '%s\n' | sort -n | tail -1) bytes"
