#!/usr/bin/env bash
# bench/journal-commits.sh BIN SESSIONS MSGS BYTES [SERVE FLAGS...]: one `nullq serve --deliver
# none` (the binary BIN) on a fresh loop-mounted ext4 with a journal, fed by `qmqp-source -s
# SESSIONS -m MSGS -l BYTES`; prints messages/s, the server's CPU per message, and how many
# journal commits (jbd2 transactions, from /proc/fs/jbd2/DEV/info) the run took: how many
# messages one journal commit carried. For comparing builds and --spool-flush modes (issue 14).
# Run as root (mount).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
(($# >= 4)) || { echo "usage: $0 BIN SESSIONS MSGS BYTES [SERVE FLAGS...]" >&2; exit 100; }
NULLQ_BIN=$1 sessions=$2 msgs=$3 bytes=$4
shift 4
top=$(mktemp -d "$BENCH_TMP/nullq-journal-commits.XXXXXX")
cleanup() {
    nullq_stop
    loop_umount "$top"
    rm -rf "$top"
}
trap cleanup EXIT
loop_ext4 "$top" 4G
jbd=$(jbd2_info "$top/fs")
port=$(free_port)
nullq_start "$top/fs/spool" "$port" --deliver none --max-sessions $((sessions + 100)) \
    --max-sessions-per-ip $((sessions + 100)) "$@"
sync
t0=$(awk 'NR == 1 { print $1 }' "$jbd")
c0=$(nullq_cpu)
s0=$EPOCHREALTIME
rc=0
timeout 120 qmqp-source -s "$sessions" -m "$msgs" -l "$bytes" "127.0.0.1:$port" > /dev/null 2>&1 || rc=$?
s1=$EPOCHREALTIME
c1=$(nullq_cpu)
t1=$(awk 'NR == 1 { print $1 }' "$jbd")
nullq_stop
stored=$(find "$top/fs/spool/queue" -type f | wc -l)
awk -v m="$msgs" -v a="$s0" -v b="$s1" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    -v t=$((t1 - t0)) -v n="$stored" -v rc="$rc" 'BEGIN {
    printf "qmqp-source rc=%d stored=%d: %.0f msgs/s, server CPU %.0f us/msg, %d journal commits (%.1f msgs a commit)\n",
        rc, n, m / (b - a), c * 1e6 / hz / m, t, (t ? m / t : 0) }'
