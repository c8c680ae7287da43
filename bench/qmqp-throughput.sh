#!/usr/bin/env bash
# bench/qmqp-throughput.sh: accepted messages/s, nullq serve vs Postfix qmqpd, same run.
#
# What it measures: the wall time of one `qmqp-source -s S -m M -l L 127.0.0.1:PORT` run (Postfix's
# QMQP load generator; one message per connection, S connections in parallel), turned into
# messages/s = M / seconds. Every message must be answered K and be in the server's queue
# afterwards (counted), or the run is marked FAIL. Both servers fsync:
#   - nullq serve --deliver none: fdatasync of the message file, rename into queue/,
#     group-committed fsync of queue/ before K (always on, no switch); `--deliver none` keeps
#     every message queued, like the Postfix below;
#   - Postfix qmqpd (bench/postfix-qmqpd.sh: a private instance that puts every message on hold,
#     i.e. queues and never delivers): cleanup fsyncs the queue file before qmqpd answers
#     (Postfix's default; it does not fsync the directory).
#   - qmqp-sink (Postfix's QMQP sink: answers K and stores nothing): the ceiling of this harness,
#     what qmqp-source can push through the loopback on this machine with no storage at all.
# Matrix: server {sink, nullq, postfix} x sessions {1,10,50,200} x size {1 KB, 100 KB}, REPS
# repetitions; within a repetition the servers take turns (the order rotates). The
# summary is the median of the repetitions. Both spools live in one temporary directory
# ($BENCH_TMP, default /var/tmp), so on the same filesystem. Every timed run starts a fresh server
# with an empty spool (a new `nullq serve` on a new data directory; a new Postfix instance in a
# new directory), after a `sync`.
#
# Why nothing is deleted until the end: on ext4 WITHOUT a journal (this machine's root fs), the
# inode allocator skips inodes freed in the last 60 s (360 s while their inode-table block is
# dirty), checking each one (ext4 `recently_deleted`); right after a run's 10,000 files are
# deleted, every file the next run creates pays a scan over them (seen with perf: half of nullq's
# CPU time). Both servers create one file per message, so deleting between runs adds noise that
# depends on the order. The spools are kept and removed on exit; the script checks that the
# filesystem has room for all of them first. Other deletions on the same filesystem in the 6
# minutes before or during a run (a previous run's cleanup, other people's builds) still cost
# both servers; -L avoids them.
#
# -L: put the spools on a new ext4 filesystem (with a journal, as production ext4 has) made for
# this run in a sparse file under $BENCH_TMP and loop-mounted; unmounted and removed on exit.
#
# -R (with -L): a fresh filesystem for every run instead of one for the whole matrix: a new
# ext4 image (4 GB, or more for a large -m2) made, mounted, used by one server's run and
# removed. Not with -D. Without it the later
# runs write into a filesystem that holds every earlier run's files (kept, see above; some
# 240,000 by the 100 KB runs, at 10,000 a run), and both servers pay for that (measured with
# bench/fs-population.sh: 100 KB messages at 50 sessions after 100,000 1 KB files on the same
# filesystem cost nullq 310-315 instead of 265 us a message; Postfix took 1,535 us in such a
# matrix against 1,310 alone; BENCHMARKS.md).
#
# -D: delivery under load, nullq only (the Postfix peer holds everything). `nullq serve` delivers
# to its default Maildir (DATA/delivered) while qmqp-source sends; bench/delivery_progress.py
# counts queue/ and delivered/new/ every 0.1 s. Per run: receiving time and rate, how many were
# delivered by the time receiving ended, the longest stall (the delivered count not growing while
# messages were queued) during receiving, the time to drain afterwards, end-to-end msgs/s, and
# the server's largest thread count while receiving (tokio's blocking pool grows up to 512).
# The server gets --max-sessions and --max-sessions-per-ip of SESSIONS + 100 (qmqp-source
# reconnects at once). Defaults with -D: -s 1000 -l 1024 -m1 20000. Bounded: qmqp-source 120 s,
# the sampler 240 s; a run that did not deliver everything is FAIL.
#
# Run (as root: Postfix needs it):
#   bench/qmqp-throughput.sh                    # builds nullq (cargo build --release -p nullq)
#   NULLQ=/path/to/nullq bench/qmqp-throughput.sh -r 3 -s "1 10 50" -l "1024 102400"
# nullq gets --max-sessions and --max-sessions-per-ip of SESSIONS + 100, and Postfix a
# default_process_limit of SESSIONS + 10 when that is over its default of 100, so that neither
# turns connections away or queues them at the listener at 200 sessions.
# -F MODE: nullq's --spool-flush (auto, files, filesystem); default: not given, i.e. auto, which
# with -L is filesystem (the spools' directory is the mount point) and without it files.
# -P FILE: also draw msgs/s against sessions (one line per server and size) as an SVG
# (bench/plot_throughput.py).
# Options: -L (spools on a fresh loop-mounted ext4, see above), -R (with -L: a fresh one for every run), -r REPS (3), -s "SESSIONS..." ("1 10 50 200"), -l "SIZES..." ("1024 102400"),
#          -m1 MSGS for sizes < 10 KB (10000), -m2 MSGS for larger sizes (2000),
#          -o FILE (also write the raw results and the summary there), -D (delivery, see above).
# Output: machine facts, one line per run (with the server's CPU time per message: user + system
# of the nullq process, or of every process of the Postfix instance), then a Markdown table of
# medians.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
# shellcheck source=bench/postfix-qmqpd.sh
source "$here/postfix-qmqpd.sh"

reps=3
sessions_list=""
sizes_list=""
msgs_small=""
msgs_large=2000
out=""
loopfs=0
freshfs=0
deliver=0
flush=""
picture=""
while (($#)); do
    case $1 in
        -L) loopfs=1; shift ;;
        -R) freshfs=1; shift ;;
        -D) deliver=1; shift ;;
        -r) reps=$2; shift 2 ;;
        -s) sessions_list=$2; shift 2 ;;
        -l) sizes_list=$2; shift 2 ;;
        -m1) msgs_small=$2; shift 2 ;;
        -m2) msgs_large=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        -F) flush=$2; shift 2 ;;
        -P) picture=$2; shift 2 ;;
        *) echo "usage: $0 [-L [-R]] [-D] [-F MODE] [-r REPS] [-s SESSIONS] [-l SIZES] [-m1 N] [-m2 N] [-o FILE] [-P FILE.svg]" >&2; exit 100 ;;
    esac
done
((freshfs == 0 || loopfs == 1)) || { echo "qmqp-throughput: -R needs -L" >&2; exit 100; }
((freshfs == 0 || deliver == 0)) || { echo "qmqp-throughput: -R is for the receiving matrix, not -D" >&2; exit 100; }
((reps >= 1 && reps <= 20)) || { echo "qmqp-throughput: -r must be 1..20" >&2; exit 100; }
if ((deliver)); then
    # The defaults of -D (the 1,000-session case of issue 12), unless given.
    sessions_list=${sessions_list:-1000}
    sizes_list=${sizes_list:-1024}
    msgs_small=${msgs_small:-20000}
fi
sessions_list=${sessions_list:-1 10 50 200}
sizes_list=${sizes_list:-1024 102400}
msgs_small=${msgs_small:-10000}

top=$(mktemp -d "$BENCH_TMP/nullq-bench-throughput.XXXXXX")
spools=$top # where the spools go: $top, or the loop-mounted filesystem (-L)
SINK_PID=""
cleanup() {
    nullq_stop
    pf_stop
    [[ -n $SINK_PID ]] && kill "$SINK_PID" 2>/dev/null
    if ((loopfs)) && mountpoint -q "$top/fs"; then
        umount "$top/fs" # mount -o loop detaches the loop device on umount
    fi
    if ((freshfs)) && mountpoint -q "$top/run"; then
        umount "$top/run" 2>/dev/null || umount -l "$top/run" || true
    fi
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NULLQ_BIN=$(nullq_binary)
results=$top/results.tsv

# Room for every spool (kept until the end), with 4 KB of slack per file, plus 1 GB.
need_kb=1048576
for size in $sizes_list; do
    msgs=$msgs_small
    ((size >= 10240)) && msgs=$msgs_large
    for sessions in $sessions_list; do
        need_kb=$((need_kb + 2 * reps * msgs * (size + 4096) / 1024))
    done
done
have_kb=$(df -Pk "$top" | awk 'NR == 2 { print $4 }')
if ((have_kb < need_kb)); then
    echo "qmqp-throughput: needs $((need_kb / 1024)) MB free in $BENCH_TMP, has $((have_kb / 1024)) MB" >&2
    exit 1
fi
if ((loopfs && !freshfs)); then
    # A new ext4 (with its journal, as mkfs makes it) in a sparse file: no recently deleted inodes,
    # nobody else's files. Inode tables and journal initialised now, not by a background thread
    # during the runs.
    truncate -s "$((need_kb + 1048576))K" "$top/fs.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$top/fs.img"
    mkdir "$top/fs"
    mount -o loop "$top/fs.img" "$top/fs"
    chmod 0755 "$top" "$top/fs" # Postfix's daemons (user postfix) must reach their queue
    spools=$top/fs
fi

# server_cpu SERVER: CPU time (user + system, in clock ticks) used so far by the server: for
# nullq its process (all threads); for Postfix every live process of the instance plus what
# master's exited children used (cutime + cstime), so processes that exit mid-run still count.
server_cpu() {
    if [[ $1 == nullq ]]; then
        nullq_cpu
        return
    fi
    if [[ $1 == sink ]]; then
        awk '{ print $14 + $15 }' "/proc/$SINK_PID/stat"
        return
    fi
    local master pid total=0 t
    master=$(tr -d ' \n' < "$PF_DIR/queue/pid/master.pid")
    total=$(awk '{ print $16 + $17 }' "/proc/$master/stat")
    for pid in $(pf_pids); do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || true)
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# run_one SERVER SESSIONS SIZE MSGS REP: one timed qmqp-source run; appends a line to $results.
# Each run gets a fresh, empty spool (a new `nullq serve` or a new Postfix instance) and nothing is
# deleted until the script exits: see "Why nothing is deleted" above.
run_one() {
    local server=$1 sessions=$2 size=$3 msgs=$4 rep=$5 port stored rc=0 t0 t1 cpu0 cpu1
    if ((freshfs)); then
        # This run's own filesystem (-R), made now and removed at the end of the run.
        # 4 GB, or room for twice this run's messages (4 KB of slack each) and 1 GB.
        local run_kb=$((2 * msgs * (size + 4096) / 1024 + 1048576))
        ((run_kb > 4194304)) || run_kb=4194304
        truncate -s "${run_kb}K" "$top/run.img"
        mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$top/run.img"
        mkdir -p "$top/run"
        mount -o loop "$top/run.img" "$top/run"
        chmod 0755 "$top" "$top/run"
        spools=$top/run
    fi
    local dir=$spools/$server-$rep-$sessions-$size
    port=$(free_port)
    local room=$((sessions + 100))
    if [[ $server == nullq ]]; then
        nullq_start "$dir" "$port" --deliver none --max-sessions "$room" \
            --max-sessions-per-ip "$room" ${flush:+--spool-flush "$flush"}
    elif [[ $server == sink ]]; then
        qmqp-sink "127.0.0.1:$port" "$room" &
        SINK_PID=$!
        wait_port "$port"
    else
        local limit=""
        ((sessions + 10 > 100)) && limit="default_process_limit = $((sessions + 10))"
        pf_start "$dir" "$port" "$limit"
    fi
    sync
    cpu0=$(server_cpu "$server")
    t0=$EPOCHREALTIME
    timeout 120 qmqp-source -s "$sessions" -m "$msgs" -l "$size" "127.0.0.1:$port" \
        > "$top/qmqp-source.out" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    cpu1=$(server_cpu "$server")
    if [[ $server == nullq ]]; then
        nullq_stop
        stored=$(find "$dir/queue" -type f | wc -l)
    elif [[ $server == sink ]]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
        stored=$msgs # stores nothing: every K counts (qmqp-source fails on any other answer)
    else
        stored=$(pf_count)
        pf_stop
    fi
    local status=ok
    if ((rc != 0 || stored != msgs)); then
        status="FAIL(rc=$rc,stored=$stored)"
        sed 's/^/  qmqp-source: /' "$top/qmqp-source.out" | head -5 >&2
    fi
    local secs rate cpu_ms
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rate=$(awk -v m="$msgs" -v s="$secs" 'BEGIN { printf "%.1f", m / s }')
    cpu_ms=$(awk -v c=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v m="$msgs" \
        'BEGIN { printf "%.3f", c * 1000 / hz / m }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$sessions" "$size" "$rep" \
        "$msgs" "$secs" "$rate" "$cpu_ms" "$status" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$results"
    if ((freshfs)); then
        # A Postfix child still in its queue holds the mount: detach it lazily.
        umount "$top/run" 2>/dev/null || umount -l "$top/run"
        rm -f "$top/run.img"
    fi
}

# run_deliver SESSIONS SIZE MSGS REP: one run of -D (see the top); appends a line to $results.
run_deliver() {
    local sessions=$1 size=$2 msgs=$3 rep=$4 port rc=0 t0 t1 cpu0 cpu1 sampler
    local dir=$spools/deliver-$rep-$sessions-$size
    port=$(free_port)
    nullq_start "$dir" "$port" --max-sessions $((sessions + 100)) \
        --max-sessions-per-ip $((sessions + 100))
    sync
    python3 "$here/delivery_progress.py" "$dir/queue" "$dir/delivered/new" "$msgs" 240 \
        "$dir.progress" "$NULLQ_PID" &
    sampler=$!
    cpu0=$(server_cpu nullq)
    t0=$EPOCHREALTIME
    timeout 120 qmqp-source -s "$sessions" -m "$msgs" -l "$size" "127.0.0.1:$port" \
        > "$top/qmqp-source.out" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    wait "$sampler" || true # ends when all are delivered, or after 240 s
    cpu1=$(server_cpu nullq)
    nullq_stop
    ((rc == 0)) || sed 's/^/  qmqp-source: /' "$top/qmqp-source.out" | head -5 >&2
    python3 - "$dir.progress" "$t0" "$t1" "$msgs" "$rc" $((cpu1 - cpu0)) "$(getconf CLK_TCK)" \
        "$sessions" "$size" "$rep" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY' | tee -a "$results"
import sys
path, t0, t1, msgs, rc, ticks, hz, sess, size, rep, load = sys.argv[1:]
t0, t1, msgs, rc, ticks, hz = float(t0), float(t1), int(msgs), int(rc), int(ticks), int(hz)
rows = [tuple(float(x) for x in line.split()) for line in open(path) if line.strip()]
# During receiving: the longest time the delivered count stood still while something was queued.
stall, since, last = 0.0, None, None
for t, q, d, _ in rows:
    if t < t0 or t > t1:
        continue
    if last is None or d > last or q == 0:
        since, last = t, d
    else:
        stall = max(stall, t - since)
at_end = max([d for t, q, d, _ in rows if t <= t1], default=0)
done = [t for t, q, d, _ in rows if d >= msgs and q == 0]
threads = max([n for t, q, d, n in rows if t0 <= t <= t1], default=0)
final_q, final_d = (rows[-1][1], rows[-1][2]) if rows else (-1, -1)
ok = rc == 0 and done and final_d == msgs
recv = t1 - t0
drain = f"{done[0] - t1:.2f}" if done else "-"
e2e = f"{msgs / (done[0] - t0):.0f}" if done else "-"
status = "ok" if ok else f"FAIL(rc={rc},queued={final_q:.0f},delivered={final_d:.0f})"
print("\t".join(["nullq-deliver", sess, size, rep, str(msgs), f"{recv:.3f}", f"{msgs / recv:.0f}",
    f"{at_end:.0f}", f"{at_end / recv:.0f}", f"{stall:.2f}", drain, e2e, f"{threads:.0f}",
    f"{ticks * 1000 / hz / msgs:.3f}", status, load]))
PY
}

# The facts at the start of the run, printed now and again in the -o file.
header=$(
    echo "# bench/qmqp-throughput.sh$( ((loopfs)) && echo ' -L')$( ((freshfs)) && echo ' -R')$( ((deliver)) && echo ' -D')${flush:+ -F $flush} -r $reps -s \"$sessions_list\" -l \"$sizes_list\" -m1 $msgs_small -m2 $msgs_large"
    # With -R the spools are not under $spools but on each run's own filesystem: say so, rather
    # than describe the directory that holds the images.
    if ((freshfs)); then
        machine_info "$spools" | grep -v -e '^spool fs:' -e '^ext4 journal:' | sed 's/^/# /'
        echo "# spool fs:   a fresh loop-mounted ext4 for each run (mkfs.ext4's defaults: with a journal), its image under $spools ($(findmnt -n -o SOURCE,FSTYPE -T "$spools" | head -n 1 | tr -s ' '))"
    else
        machine_info "$spools" | sed 's/^/# /'
    fi
    echo "# nullq:      $NULLQ_BIN"
)
echo "$header"
if ((deliver)); then
    printf 'server\tsessions\tbytes\trep\tmsgs\trecv_s\trecv_msgs/s\tdelivered_at_recv_end\tdelivered/s_receiving\tmax_stall_s\tdrain_s\te2e_msgs/s\tmax_threads\tcpu_ms/msg\tstatus\tload1\n' | tee "$results"
    for ((rep = 1; rep <= reps; rep++)); do
        for size in $sizes_list; do
            msgs=$msgs_small
            ((size >= 10240)) && msgs=$msgs_large
            for sessions in $sessions_list; do
                run_deliver "$sessions" "$size" "$msgs" "$rep"
            done
        done
    done
    summary=$(python3 - "$results" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| message | sessions | msgs | receiving s | received msgs/s | delivered when receiving ended | delivered/s while receiving | longest delivery stall while receiving, s | drain after, s | end-to-end msgs/s | server threads, max | runs ok |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for size, sess in sorted({(int(r["bytes"]), int(r["sessions"])) for r in rows}):
    rs = [r for r in rows if int(r["bytes"]) == size and int(r["sessions"]) == sess]
    ok = [r for r in rs if r["status"] == "ok"]
    med = lambda c: statistics.median(float(r[c]) for r in ok) if ok else float("nan")
    label = f"{size // 1024} KB" if size % 1024 == 0 else f"{size} B"
    print(f"| {label} | {sess} | {rs[0]['msgs']} | {med('recv_s'):.2f} | {med('recv_msgs/s'):.0f} | {med('delivered_at_recv_end'):.0f} | {med('delivered/s_receiving'):.0f} | {med('max_stall_s'):.2f} | {med('drain_s'):.2f} | {med('e2e_msgs/s'):.0f} | {med('max_threads'):.0f} | {len(ok)} of {len(rs)} |")
print()
print("(medians of the runs that delivered everything; each run's line is above)")
EOF
)
else
printf 'server\tsessions\tbytes\trep\tmsgs\tseconds\tmsgs/s\tcpu_ms/msg\tstatus\tload1\n' | tee "$results"

for ((rep = 1; rep <= reps; rep++)); do
    for size in $sizes_list; do
        msgs=$msgs_small
        ((size >= 10240)) && msgs=$msgs_large
        for sessions in $sessions_list; do
            case $((rep % 3)) in
                1) order="sink nullq postfix" ;;
                2) order="nullq postfix sink" ;;
                *) order="postfix sink nullq" ;;
            esac
            for server in $order; do
                run_one "$server" "$sessions" "$size" "$msgs" "$rep"
            done
        done
    done
done

summary=$(python3 - "$results" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
keys = sorted({(int(r["bytes"]), int(r["sessions"])) for r in rows})
def med(server, size, sess, col="msgs/s"):
    rs = [r for r in rows if r["server"] == server and int(r["bytes"]) == size and int(r["sessions"]) == sess]
    ok = [float(r[col]) for r in rs if r["status"] == "ok"]
    runs = [f"{float(r[col]):.0f}" if r["status"] == "ok" else "FAIL" for r in rs]
    return (statistics.median(ok) if len(ok) == len(rs) and ok else None), runs
print("| message | sessions | qmqp-sink msgs/s | nullq msgs/s | Postfix qmqpd msgs/s | nullq / Postfix | nullq / qmqp-sink | nullq runs | Postfix runs | server CPU µs/msg, nullq / Postfix / sink |")
print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
for size, sess in keys:
    k, _ = med("sink", size, sess)
    n, nr = med("nullq", size, sess)
    p, pr = med("postfix", size, sess)
    cpu = [med(x, size, sess, "cpu_ms/msg")[0] for x in ("nullq", "postfix", "sink")]
    ratio = f"{n / p:.2f}x" if n and p else "n/a"
    share = f"{100 * n / k:.0f} %" if n and k else "n/a"
    label = f"{size // 1024} KB" if size % 1024 == 0 else f"{size} B"
    fmt = lambda v: f"{v:.0f}" if v else "FAIL"
    cpus = " / ".join(f"{c * 1000:.0f}" if c is not None else "n/a" for c in cpu)
    print(f"| {label} | {sess} | {fmt(k)} | {fmt(n)} | {fmt(p)} | {ratio} | {share} | {', '.join(nr)} | {', '.join(pr)} | {cpus} |")
EOF
)
fi
echo
echo "$summary"
if [[ -n $picture ]] && ((!deliver)); then
    python3 "$here/plot_throughput.py" "$results" "$picture" "$(head -1 <<< "$header" | sed 's/^# //')"
    echo "picture: $picture"
fi
if [[ -n $out ]]; then
    {
        echo "$header"
        echo "# finished:   $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
        cat "$results"
        echo
        echo "$summary"
    } > "$out"
fi
