#!/usr/bin/env bash
# bench/delivery-cpu.sh: what one `nullq serve` costs per message, receiving alone or receiving
# and delivering: its CPU time (user and system, from /proc/PID/stat), the journal commits of
# the filesystem (jbd2), how busy the machine was, and msgs/s, on a fresh loop-mounted ext4
# with a journal (as bench/e2e.sh -L). One run per invocation; interleave the builds you
# compare and take medians (this 2-vCPU machine varies by tens of percent between runs).
#
#   NULLQ=target/release/nullq bench/delivery-cpu.sh maildir 50 5000
#   NULLQ=target/release/nullq bench/delivery-cpu.sh none 50 5000 --spool-flush filesystem
#   STRACE=1 ... : the server's system calls counted instead (strace -c -f; slow, not timed)
#   THREADS=1 ... : first one line per thread name: its context switches and CPU per message
#                   (threads that ended during the run are not in these lines; the last line
#                   counts them)
#   PERF=FILE ... : the server sampled by `perf record --call-graph dwarf` while it receives
#                   and delivers (into FILE), then bench/perf_ops.py's lines: each thread's and
#                   each kind of work's share of its CPU (perf's own cost makes the run slower:
#                   its msgs/s and CPU lines are not figures to quote)
#
# Arguments: TARGET (none | maildir | cgp), SESSIONS, MESSAGES, then more flags for nullq serve.
# Output: one line, e.g. `maildir s=50 m=5000 recv=1572/s e2e=1503/s cpu_us/msg user=150
# sys=400 jbd2=415 machine_busy=73%` (busy: not idle and not iowait, both cores).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
target=${1:?usage: delivery-cpu.sh none|maildir|cgp SESSIONS MESSAGES [nullq serve flags]}
sessions=${2:?sessions}
msgs=${3:?messages}
shift 3
BIN=$(nullq_binary)

top=$(mktemp -d "$BENCH_TMP/nullq-bench-cpu.XXXXXX")
PID=""
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    loop_umount "$top"
    rm -rf "$top"
}
trap cleanup EXIT
loop_ext4 "$top" 4G
jbd=$(jbd2_info "$top/fs")
d=$top/fs/run
mkdir -p "$d"
case $target in
    none) deliver=none ;;
    maildir) deliver=maildir:$d/md ;;
    cgp) mkdir -p "$d/cgp"; deliver=cgp:$d/cgp ;;
    *) echo "delivery-cpu: target none, maildir or cgp" >&2; exit 100 ;;
esac
port=$(free_port)
"$BIN" serve --listen "127.0.0.1:$port" --data "$d/spool" --error-delay 0 --deliver "$deliver" \
    --max-sessions 500 --max-sessions-per-ip 500 "$@" 2>"$top/log" &
PID=$!
wait_port "$port"
sync
delivered() { grep -c 'result="delivered"' "$top/log" || true; }
cpu() { awk '{ print $14 + $15, $14, $15 }' "/proc/$PID/stat"; }
stat_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat; }
if [[ -n ${STRACE:-} ]]; then
    strace -c -f -p "$PID" -o "$top/strace" &
    spid=$!
    sleep 1 # strace attaches to every thread: nothing to wait for that says it has
fi
# threads: "NAME SWITCHES CPU_TICKS" per thread name, from /proc/PID/task/*.
threads() {
    local t
    for t in /proc/"$PID"/task/*; do
        printf '%s %s %s\n' "$(tr ' ' _ < "$t/comm")" \
            "$(awk '/ctxt_switches/ { n += $2 } END { print n }' "$t/status")" \
            "$(awk '{ print $14 + $15 }' "$t/stat")"
    done | awk '{ c[$1] += $2; u[$1] += $3 } END { for (k in c) print k, c[k], u[k] }'
}
[[ -n ${THREADS:-} ]] && threads0=$(threads)
j0=$(awk 'NR == 1 { print $1 }' "$jbd")
read -r _ u0 s0 < <(cpu)
read -r b0 i0 < <(stat_busy)
if [[ -n ${PERF:-} ]]; then
    perf record -q -F 499 --call-graph dwarf,16384 -p "$PID" -o "$PERF" 2>/dev/null &
    ppid=$!
    # perf says nothing when it has attached: wait until its output file has its header.
    for ((i = 0; i < 100; i++)); do [[ -s $PERF ]] && break; sleep 0.05; done
fi
t0=$EPOCHREALTIME
timeout 300 qmqp-source -s "$sessions" -m "$msgs" -l 1024 -f a@example.net -t b@example.net \
    "127.0.0.1:$port" >/dev/null
t1=$EPOCHREALTIME
if [[ $target != none ]]; then
    # At most 60 s for the deliveries after the last message is in.
    for ((i = 0; i < 600; i++)); do (($(delivered) >= msgs)) && break; sleep 0.1; done
fi
t2=$EPOCHREALTIME
read -r _ u1 s1 < <(cpu)
read -r b1 i1 < <(stat_busy)
j1=$(awk 'NR == 1 { print $1 }' "$jbd")
if [[ -n ${THREADS:-} ]]; then
    python3 - "$threads0" "$(threads)" "$msgs" "$(getconf CLK_TCK)" <<'PY'
import sys
before, after = ({l.split()[0]: l.split()[1:] for l in a.splitlines()} for a in sys.argv[1:3])
m, tick = int(sys.argv[3]), int(sys.argv[4])
for name, (c1, u1) in sorted(after.items()):
    c0, u0 = before.get(name, (0, 0))
    print(f"{name:18} switches/msg={(int(c1) - int(c0)) / m:.2f} "
          f"cpu_us/msg={(int(u1) - int(u0)) * 1e6 / tick / m:.0f}")
PY
fi
if [[ -n ${PERF:-} ]]; then
    kill -INT "$ppid"
    wait "$ppid" || true
    python3 "$here/perf_ops.py" "$PERF"
fi
if [[ -n ${STRACE:-} ]]; then
    kill -INT "$spid"
    wait "$spid" || true
    cat "$top/strace"
fi
tick=$(getconf CLK_TCK)
python3 - "$target" "$sessions" "$msgs" "$t0" "$t1" "$t2" "$u0" "$u1" "$s0" "$s1" "$tick" \
    "$j0" "$j1" "$b0" "$b1" "$i0" "$i1" <<'PY'
import sys
a = sys.argv[1:]
target, s, m = a[0], int(a[1]), int(a[2])
t0, t1, t2 = map(float, a[3:6])
u0, u1, s0, s1, tick = map(int, a[6:11])
j0, j1, b0, b1, i0, i1 = map(int, a[11:17])
us = lambda ticks: round(ticks * 1e6 / tick / m)
busy = round(100 * (b1 - b0) / max(1, (b1 - b0) + (i1 - i0)))
print(f"{target} s={s} m={m} recv={round(m / (t1 - t0))}/s e2e={round(m / (t2 - t0))}/s "
      f"cpu_us/msg user={us(u1 - u0)} sys={us(s1 - s0)} jbd2={j1 - j0} machine_busy={busy}%")
PY
