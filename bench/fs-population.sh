#!/usr/bin/env bash
# bench/fs-population.sh BIN PREFILL MODE SESSIONS MSGS BYTES: what a fuller filesystem costs
# `nullq serve` (the binary BIN). On a fresh loop-mounted 8 GB ext4 with a journal, one server
# first stores PREFILL 1 KB messages (qmqp-source, 50 sessions) in a spool of its own and stops;
# a second server, on a new spool of the same filesystem, then receives MSGS messages of BYTES
# from SESSIONS sessions. Prints that second run's messages/s and server CPU per message.
# PREFILL 0 is the fresh filesystem. MODE is --spool-flush. Why it exists: the matrix of
# bench/qmqp-throughput.sh -L keeps every run's spool on one filesystem, and later runs were
# slower than the same run alone (hence its -R). Run as root (mount).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
(($# == 6)) || { echo "usage: $0 BIN PREFILL MODE SESSIONS MSGS BYTES" >&2; exit 100; }
NULLQ_BIN=$1 prefill=$2 mode=$3 sessions=$4 msgs=$5 bytes=$6
top=$(mktemp -d "$BENCH_TMP/nullq-fs-population.XXXXXX")
cleanup() {
    nullq_stop
    loop_umount "$top"
    rm -rf "$top"
}
trap cleanup EXIT
loop_ext4 "$top" 8G
room=$((sessions + 100))
if ((prefill > 0)); then
    port=$(free_port)
    nullq_start "$top/fs/prefill" "$port" --deliver none --max-sessions 150 \
        --max-sessions-per-ip 150 --spool-flush "$mode"
    timeout 300 qmqp-source -s 50 -m "$prefill" -l 1024 "127.0.0.1:$port" > /dev/null 2>&1
    nullq_stop
fi
sync
port=$(free_port)
nullq_start "$top/fs/run" "$port" --deliver none --max-sessions "$room" \
    --max-sessions-per-ip "$room" --spool-flush "$mode"
c0=$(nullq_cpu)
s0=$EPOCHREALTIME
rc=0
timeout 120 qmqp-source -s "$sessions" -m "$msgs" -l "$bytes" "127.0.0.1:$port" > /dev/null 2>&1 || rc=$?
s1=$EPOCHREALTIME
c1=$(nullq_cpu)
nullq_stop
stored=$(find "$top/fs/run/queue" -type f | wc -l)
awk -v m="$msgs" -v a="$s0" -v b="$s1" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    -v p="$prefill" -v mode="$mode" -v rc="$rc" -v n="$stored" 'BEGIN {
    printf "prefill=%d mode=%s rc=%d stored=%d: %.0f msgs/s, server CPU %.0f us/msg\n",
        p, mode, rc, n, m / (b - a), c * 1e6 / hz / m }'
