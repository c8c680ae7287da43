#!/usr/bin/env bash
# bench/delivery.sh: end-to-end delivery, nullq vs Postfix, same run: messages/s from
# qmqp-source's first byte to the last message delivered, and the time from K to delivery.
#
# Paths measured (1 KB messages from `qmqp-source -s S -m M -l 1024`, S in {10, 50}):
#   nullq-maildir  qmqp-source → nullq serve (spool, fsync) → Maildir (fsync file + new/)
#   nullq-smtp     qmqp-source → nullq serve → smtp://127.0.0.1:SINK → smtp-sink
#   postfix-smtp   qmqp-source → Postfix qmqpd → cleanup (fsync) → qmgr → smtp → the same smtp-sink
# Throughput: M / (time from starting qmqp-source to the M-th "delivered" in the server's log).
# Latency: nullq: per queue id, log time of the delivery line minus log time of the session's K
# line (microseconds); Postfix: the `delay=` of each `status=sent` line (arrival to delivery,
# 10 ms resolution). Median and p99 over all M messages.
#
# Run (as root: Postfix needs it):
#   bench/delivery.sh                       # builds nullq (cargo build --release -p nullq)
#   NULLQ=target/release/nullq bench/delivery.sh -m 5000 -s "10 50" -o bench/results/delivery.txt
# Needs: Debian's postfix (qmqp-source, smtp-sink, postfix), python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"

msgs=5000
sessions_list="10 50"
out=""
while (($#)); do
    case $1 in
        -m) msgs=$2; shift 2 ;;
        -s) sessions_list=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        *) echo "usage: $0 [-m MSGS] [-s SESSIONS] [-o FILE]" >&2; exit 100 ;;
    esac
done

top=$(mktemp -d "$BENCH_TMP/nullq-bench-delivery.XXXXXX")
SINK_PID=""
PFD=""
cleanup() {
    nullq_stop
    [[ -n $SINK_PID ]] && kill "$SINK_PID" 2>/dev/null
    [[ -n $PFD ]] && postfix -c "$PFD/conf" stop >/dev/null 2>&1
    sleep 1
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
NULLQ_BIN=$(nullq_binary)

# A private Postfix that takes QMQP and relays everything to the sink (no hold, no local mail).
pfd_start() {
    local dir=$1 port=$2 sink=$3
    PFD=$dir
    mkdir -p "$dir/conf"
    # Search permission added to the parent, never its mode replaced: the parent may be /var/tmp
    # itself (sticky, 1777), which 0755 would break for every other user.
    chmod 0755 "$dir"
    chmod a+x "$(dirname "$dir")"
    install -d -o root -g root -m 0755 "$dir/queue"
    install -d -o postfix -g postfix -m 0700 "$dir/data"
    cat > "$dir/conf/main.cf" <<EOF2
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
relayhost = [127.0.0.1]:$sink
smtp_tls_security_level = none
EOF2
    cp /etc/postfix/master.cf.proto "$dir/conf/master.cf"
    postconf -c "$dir/conf" -MX smtp/inet
    postconf -c "$dir/conf" -F '*/*/chroot = n'
    postconf -c "$dir/conf" -M "127.0.0.1:$port/inet = 127.0.0.1:$port inet n - n - - qmqpd"
    postfix -c "$dir/conf" check
    postfix -c "$dir/conf" start
    wait_port "$port"
}

# wait_count FILE PATTERN N: wait (at most 300 s) until FILE has N lines matching PATTERN.
wait_count() {
    local file=$1 pattern=$2 n=$3 i
    for ((i = 0; i < 3000; i++)); do
        (($(grep -c -- "$pattern" "$file" 2>/dev/null || true) >= n)) && return 0
        sleep 0.1
    done
    echo "bench: only $(grep -c -- "$pattern" "$file" || true) of $n in $file" >&2
    return 1
}

results=$top/results.tsv
printf 'path\tsessions\tmsgs\tseconds\tmsgs/s\tK-to-delivery median ms\tp99 ms\n' | tee "$results"

# stats_nullq LOG: "median p99" in ms, from the K and delivery lines of the same ids.
stats_nullq() {
    python3 - "$1" <<'EOF2'
import re, sys, datetime, statistics
k, d = {}, {}
ts = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+INFO\s+(\S+): .*?\bid=(\S+)", line)
    if not m:
        continue
    t, target, qid = ts(m.group(1)), m.group(2), m.group(3).strip('"')
    if target == "nullq::session" and "answer=K" in line:
        k[qid] = t
    elif target == "nullq::delivery" and 'result="delivered"' in line:
        d.setdefault(qid, t)
lat = sorted((d[i] - k[i]) * 1000 for i in d if i in k)
p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
print(f"{statistics.median(lat):.1f} {p99:.1f}")
EOF2
}

stats_postfix() {
    python3 - "$1" <<'EOF2'
import re, sys, statistics
lat = sorted(float(m.group(1)) * 1000 for m in (re.search(r"delay=([0-9.]+),.*status=sent", l) for l in open(sys.argv[1])) if m)
p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
print(f"{statistics.median(lat):.1f} {p99:.1f}")
EOF2
}

run() {
    local path=$1 sessions=$2 port t0 t1 log lat
    port=$(free_port)
    local data=$top/$path-$sessions
    case $path in
        nullq-maildir) nullq_start "$data" "$port" --deliver "maildir:$data/md"; log=$data.log ;;
        nullq-smtp) nullq_start "$data" "$port" --deliver "smtp://127.0.0.1:$SINK_PORT"; log=$data.log ;;
        postfix-smtp) port=$PF_PORT; log=$PFD/maillog; : > "$log" ;;
    esac
    sync
    t0=$EPOCHREALTIME
    timeout 300 qmqp-source -s "$sessions" -m "$msgs" -l 1024 -f jason@example.net \
        -t postmaster@example.net "127.0.0.1:$port" > "$top/qs.out" 2>&1
    if [[ $path == postfix-smtp ]]; then
        wait_count "$log" "status=sent" "$msgs"
    else
        wait_count "$log" 'result="delivered"' "$msgs"
    fi
    t1=$EPOCHREALTIME
    if [[ $path == postfix-smtp ]]; then lat=$(stats_postfix "$log"); else lat=$(stats_nullq "$log"); fi
    [[ $path == postfix-smtp ]] || { nullq_stop; rm -rf "$data"; }
    local secs rate
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rate=$(awk -v m="$msgs" -v s="$secs" 'BEGIN { printf "%.0f", m / s }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$sessions" "$msgs" "$secs" "$rate" ${lat% *} ${lat#* } | tee -a "$results"
}

{
    echo "# bench/delivery.sh -m $msgs -s \"$sessions_list\""
    machine_info "$top" | sed 's/^/# /'
} | tee "$top/head.txt"
SINK_PORT=$(free_port)
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 256 &
SINK_PID=$!
wait_port "$SINK_PORT"
PF_PORT=$(free_port)
pfd_start "$top/postfix" "$PF_PORT" "$SINK_PORT"
for sessions in $sessions_list; do
    for path in nullq-maildir nullq-smtp postfix-smtp; do
        run "$path" "$sessions"
    done
done
if [[ -n $out ]]; then
    cat "$top/head.txt" "$results" > "$out"
fi
