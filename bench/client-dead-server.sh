#!/usr/bin/env bash
# bench/client-dead-server.sh: the null client's time per message when the first server in
# qmqpservers is dead (a black hole: its SYNs are dropped, so every connect waits the whole
# timeoutconnect) and the second one is up, without and with the memory of failed servers
# (issue 13, part 1; crates/nullq-client/src/server_memory.rs), in the same run with the same
# binary:
#   before   control/qmqpbackoff = 0: the memory off, i.e. the client as it was before it
#            (qmqpservers order for every message: each one waits for the dead server)
#   after    the memory on (default backoff 30 s doubling to 600 s, a fresh 1777 directory):
#            the first message waits once, the others go straight to the live server
# Each message is `sendmail -t` of a small message, one process each, timed with bash's
# $EPOCHREALTIME; every one must exit 0 and the live server (`nullq serve --deliver none`) must
# have stored them all.
#
# The dead server is a loopback listener whose accept queue is full (listen(0), filled, never
# accepted), so Linux drops new SYNs: what a host that is down or unroutable costs.
#
# Run:
#   bench/client-dead-server.sh                  # 20 messages each, timeoutconnect 2 s
#   bench/client-dead-server.sh -n 20 -t 2 -o /var/tmp/client-dead-server.txt
# Bounded: -n at most 50, -t at most 10; each sendmail run under `timeout 60`.
# Needs: python3 (the black hole), cargo (builds nullq --release unless NULLQ is set).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/client-common.sh
source "$here/client-common.sh"

count=20
connect=2
out=""
while (($#)); do
    case $1 in
        -n) count=$2; shift 2 ;;
        -t) connect=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        *) echo "usage: $0 [-n MESSAGES] [-t TIMEOUTCONNECT] [-o FILE]" >&2; exit 100 ;;
    esac
done
((count >= 2 && count <= 50)) || { echo "client-dead-server: -n must be 2..50" >&2; exit 100; }
((connect >= 1 && connect <= 10)) || { echo "client-dead-server: -t must be 1..10" >&2; exit 100; }

top=$(mktemp -d "$BENCH_TMP/nullq-bench-client-dead.XXXXXX")
hole_pid=""
cleanup() {
    nullq_stop
    [[ -n $hole_pid ]] && kill "$hole_pid" 2>/dev/null || true
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NULLQ_BIN=$(nullq_binary)
port=$(free_port)
nullq_start "$top/nullq" "$port" --deliver none

# The black hole: prints its port, then holds the full queue until killed.
python3 -u - > "$top/hole.port" <<'EOF' &
import socket, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(0)
fillers = []
for _ in range(4):
    s = socket.socket()
    s.settimeout(0.3)
    try:
        s.connect(l.getsockname())
        fillers.append(s)
    except OSError:
        pass
print(l.getsockname()[1])
while True:
    time.sleep(3600)
EOF
hole_pid=$!
for ((i = 0; i < 100; i++)); do
    [[ -s $top/hole.port ]] && break
    sleep 0.05
done
hole=$(cat "$top/hole.port")
[[ -n $hole ]] || { echo "client-dead-server: the black hole did not start" >&2; exit 1; }

# One configuration: N messages, one time (seconds) a line in $top/$name.times.
run() {
    local name=$1 backoff=$2 i t0
    local home=$top/$name
    client_home "$home" "$port"
    printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$hole" "$port" > "$home/control/qmqpservers"
    echo "$connect" > "$home/control/timeoutconnect"
    echo "$backoff" > "$home/control/qmqpbackoff"
    echo servers > "$home/control/qmqpstate"
    install -d -m 1777 "$home/servers"
    : > "$top/$name.times"
    for ((i = 1; i <= count; i++)); do
        t0=$EPOCHREALTIME
        printf 'To: bob\nSubject: %s %s\n\nbody\n' "$name" "$i" |
            NULLQ_HOME=$home timeout 60 "$home/bin/sendmail" -t ||
            { echo "client-dead-server: $name message $i failed" >&2; exit 1; }
        secs_since "$t0" >> "$top/$name.times"
        echo >> "$top/$name.times"
    done
}

summary() {
    local name=$1
    python3 - "$top/$name.times" "$name" <<'EOF'
import statistics, sys
t = [float(x) for x in open(sys.argv[1]) if x.strip()]
rest = t[1:]
print(f"| {sys.argv[2]} | {len(t)} | {sum(t):.2f} | {statistics.mean(t)*1000:.1f} | "
      f"{t[0]*1000:.1f} | {statistics.median(rest)*1000:.1f} | {max(rest)*1000:.1f} |")
EOF
}

run before 0
run after "30 600"
stored=$(find "$top/nullq/queue" -type f | wc -l)
((stored == 2 * count)) || { echo "client-dead-server: $stored stored, not $((2 * count))" >&2; exit 1; }

{
    machine_info "$top"
    echo "nullq:      $NULLQ_BIN ($(cd "$BENCH_ROOT" && git rev-parse --short HEAD))"
    echo "servers:    127.0.0.1:$hole (full accept queue: SYNs dropped), 127.0.0.1:$port (nullq serve --deliver none)"
    echo "timeoutconnect: $connect s; $count messages each; $stored stored"
    echo
    echo "| memory | messages | total, s | mean, ms/msg | 1st, ms | median of the rest, ms | max of the rest, ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    summary before
    summary after
} | tee "${out:-/dev/null}"
