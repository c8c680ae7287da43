#!/usr/bin/env bash
# bench/journal-commits.sh BIN SESSIONS MSGS BYTES [SERVE FLAGS...]: one `nullq serve --deliver
# none` (the binary BIN) on a fresh loop-mounted ext4 with a journal, fed by `qmqp-source -s
# SESSIONS -m MSGS -l BYTES`; prints messages/s, the server's CPU per message, and how many
# journal commits (jbd2 transactions, from /proc/fs/jbd2/DEV/info) the run took: how many
# messages one journal commit carried. For comparing builds and --spool-flush modes (issue 14).
# Then where the machine's CPU went during the run: how busy its cores were (/proc/stat), and per
# message the server's, qmqp-source's (its rusage) and the rest's (the kernel's threads: jbd2,
# the loop device, softirqs; anything else running). A machine well short of busy is waiting on
# the device or on latency, not short of CPU.
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
# cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
read -r _ u0 n0 y0 i0 w0 q0 f0 z0 _ < /proc/stat
s0=$EPOCHREALTIME
rc=0
/usr/bin/time -f "%U %S" -o "$top/source-cpu" \
    timeout 120 qmqp-source -s "$sessions" -m "$msgs" -l "$bytes" "127.0.0.1:$port" > /dev/null 2>&1 || rc=$?
s1=$EPOCHREALTIME
read -r _ u1 n1 y1 i1 w1 q1 f1 z1 _ < /proc/stat
c1=$(nullq_cpu)
t1=$(awk 'NR == 1 { print $1 }' "$jbd")
nullq_stop
stored=$(find "$top/fs/spool/queue" -type f | wc -l)
source_cpu=$(awk 'END { print $1 + $2 }' "$top/source-cpu") # the last line: time's own
busy=$(((u1 + n1 + y1 + q1 + f1 + z1) - (u0 + n0 + y0 + q0 + f0 + z0)))
idle=$(((i1 + w1) - (i0 + w0)))
awk -v m="$msgs" -v a="$s0" -v b="$s1" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    -v t=$((t1 - t0)) -v n="$stored" -v rc="$rc" -v busy="$busy" -v idle="$idle" \
    -v src="$source_cpu" -v cores="$(nproc)" 'BEGIN {
    printf "qmqp-source rc=%d stored=%d: %.0f msgs/s, server CPU %.0f us/msg, %d journal commits (%.1f msgs a commit)",
        rc, n, m / (b - a), c * 1e6 / hz / m, t, (t ? m / t : 0)
    printf "; machine busy %.0f %% of %d cores, us/msg: qmqp-source %.0f, the rest %.0f\n",
        100 * busy / (busy + idle), cores, src * 1e6 / m, (busy / hz - c / hz - src) * 1e6 / m }'
