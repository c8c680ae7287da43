#!/usr/bin/env bash
# bench/e2e.sh: receive-only and end-to-end throughput, and the time from K to delivery, for
# nullq (Maildir, CommuniGate Pro folder, SMTP) and Postfix, in the same run (issue 15).
#
# Paths (1 KB messages from `qmqp-source -s S -m M -l 1024`, one message per connection):
#   nullq-none     nullq serve --deliver none: receiving alone (spool, group-committed fsync)
#   nullq-maildir  nullq serve --deliver maildir:DIR (file fsync, new/ fsync, then the spool's removal)
#   nullq-cgp      nullq serve --deliver cgp:DIR (a CommuniGate Pro Submitted folder, written the same way)
#   nullq-smtp     nullq serve --deliver smtp://127.0.0.1:SINK, to smtp-sink
#   postfix-hold   Postfix qmqpd, every message put on hold (bench/postfix-qmqpd.sh): receiving alone
#   postfix-smtp   Postfix qmqpd → cleanup → qmgr → smtp → the same smtp-sink (relayhost)
# Per run: recv msgs/s = M / wall time of qmqp-source; e2e msgs/s = M / (time from starting
# qmqp-source to the M-th delivery: nullq's log time of the last `result="delivered"` line,
# Postfix's: polled every 0.1 s until its log has M `status=sent` lines); K-to-delivery: nullq, per
# queue id, the delivery line's log time minus the session's K line's (microseconds); Postfix,
# the `delay=` of each `status=sent` line (arrival to delivery, 10 ms steps). Median and p99.
# Every run starts a fresh server on a fresh directory after a `sync`; nothing is deleted until
# the script exits (see bench/qmqp-throughput.sh: "Why nothing is deleted").
#
# -L: everything on a new ext4 with its journal, in a sparse file under $BENCH_TMP, loop-mounted;
#     jbd2's commit count for each run (from /proc/fs/jbd2/LOOP-8/info) goes in the jbd2 column.
#
# Run (as root: Postfix needs it):
#   NULLQ=target/release/nullq bench/e2e.sh -L -r 3 -s "1 10 50 200" -o bench/results/e2e-loop.txt
# Options: -L, -r REPS (1), -s "SESSIONS..." ("1 10 50 200"), -m MSGS (5000; 1,000 at 1 session),
#          -p "PATHS..." (all six), -o FILE (raw lines and the summary), -x "ARGS" (more flags for
#          every nullq serve, e.g. "--config FILE").
# Output: one line per run, then a Markdown table of medians; bench/plot_e2e.py draws the picture.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
# shellcheck source=bench/postfix-qmqpd.sh
source "$here/postfix-qmqpd.sh"

reps=1
sessions_list="1 10 50 200"
msgs=5000
paths="nullq-none nullq-maildir nullq-cgp nullq-smtp postfix-hold postfix-smtp"
out=""
loopfs=0
extra=""
while (($#)); do
    case $1 in
        -L) loopfs=1; shift ;;
        -r) reps=$2; shift 2 ;;
        -s) sessions_list=$2; shift 2 ;;
        -m) msgs=$2; shift 2 ;;
        -p) paths=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        -x) extra=$2; shift 2 ;;
        *) echo "usage: $0 [-L] [-r REPS] [-s SESSIONS] [-m MSGS] [-p PATHS] [-o FILE] [-x ARGS]" >&2; exit 100 ;;
    esac
done
((reps >= 1 && reps <= 10)) || { echo "e2e: -r must be 1..10" >&2; exit 100; }

top=$(mktemp -d "$BENCH_TMP/nullq-bench-e2e.XXXXXX")
where=$top
SINK_PID=""
PFR="" # the relaying Postfix's directory
cleanup() {
    nullq_stop
    pf_stop
    [[ -n $PFR ]] && postfix -c "$PFR/conf" stop >/dev/null 2>&1
    if [[ -n $SINK_PID ]]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true # its status is the signal's
    fi
    # A straggler (a Postfix daemon still exiting) must not leave the mount behind.
    ((loopfs)) && loop_umount "$top"
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
NULLQ_BIN=$(nullq_binary)

if ((loopfs)); then
    # Room for every run's spool and delivered copy, 8 KB per message each, plus 1 GB.
    n_sessions=$(wc -w <<< "$sessions_list")
    n_paths=$(wc -w <<< "$paths")
    size_kb=$((reps * n_sessions * n_paths * msgs * 8 + 1048576))
    loop_ext4 "$top" "${size_kb}K"
    chmod 0755 "$top" "$top/fs"
    where=$top/fs
fi
loopdev=$(findmnt -n -o SOURCE -T "$where")
loopdev=${loopdev##*/}

# jbd2_commits: transactions committed so far by the journal of the filesystem under test
# ("-" without one).
jbd2_commits() {
    local f
    f=$(ls /proc/fs/jbd2/"$loopdev"-*/info 2>/dev/null | head -1)
    [[ -n $f ]] || { echo "-"; return; }
    awk 'NR == 1 { print $1 }' "$f"
}

# A private Postfix that takes QMQP and relays everything to the sink (no hold, no local mail):
# bench/postfix-qmqpd.sh's instance without its hold. It runs for the whole script, beside the
# holding instances that pf_start and pf_stop make per run, so PF_DIR is handed over to PFR.
pfr_start() {
    local dir=$1 port=$2 sink=$3
    PF_HOLD=0 pf_start "$dir" "$port" "relayhost = [127.0.0.1]:$sink
smtp_tls_security_level = none
default_process_limit = 400"
    PFR=$PF_DIR
    PF_DIR="" # stopped by cleanup, not by the next run's pf_stop
}

# count_lines FILE PATTERN: lines of FILE matching PATTERN (0 if none or no file).
count_lines() {
    grep -c -- "$2" "$1" 2>/dev/null || true
}

# wait_lines FILE PATTERN N: wait until FILE has N lines matching PATTERN: at most 300 s, and
# at most 20 s without a new one.
wait_lines() {
    local i n last=-1 since=0
    for ((i = 0; i < 3000; i++)); do
        n=$(count_lines "$1" "$2")
        ((n >= $3)) && return 0
        if ((n != last)); then last=$n; since=$i; fi
        ((i - since > 200)) && break
        sleep 0.1
    done
    echo "e2e: only $(count_lines "$1" "$2") of $3 in $1" >&2
    return 1
}

# nullq_stats LOG T0: "last_delivery_epoch median_ms p99_ms" from the K and delivery lines.
nullq_stats() {
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
if not lat:
    print("- - -")
else:
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"{max(d.values()):.6f} {statistics.median(lat):.1f} {p99:.1f}")
EOF2
}

postfix_stats() {
    python3 - "$1" <<'EOF2'
import re, sys, statistics
lat = sorted(float(m.group(1)) * 1000 for m in (re.search(r"delay=([0-9.]+),.*status=sent", l) for l in open(sys.argv[1])) if m)
p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
print(f"{statistics.median(lat):.1f} {p99:.1f}")
EOF2
}

results=$top/results.tsv
printf 'path\tsessions\trep\tmsgs\trecv_s\trecv_msgs/s\te2e_s\te2e_msgs/s\tk2d_median_ms\tk2d_p99_ms\tjbd2_commits\tstatus\n' | tee "$results"

# run PATH SESSIONS REP: one timed run; appends a line to $results.
run() {
    local path=$1 sessions=$2 rep=$3 port t0 t1 t2="" rc=0 j0 j1 m=$msgs med="-" p99="-" status=ok
    ((sessions == 1 && msgs > 1000)) && m=1000
    local dir=$where/$path-$sessions-$rep log
    port=$(free_port)
    case $path in
        nullq-*)
            local target
            case $path in
                nullq-none) target=none ;;
                nullq-maildir) target=maildir:$dir/md ;;
                nullq-cgp) target=cgp:$dir/cgp; mkdir -p "$dir/cgp" ;;
                nullq-smtp) target=smtp://127.0.0.1:$SINK_PORT ;;
            esac
            # shellcheck disable=SC2086  # -x: several flags
            nullq_start "$dir" "$port" --deliver "$target" --max-sessions 500 \
                --max-sessions-per-ip 500 $extra
            log=$dir.log
            ;;
        postfix-hold) pf_start "$dir" "$port" "default_process_limit = 400"; log=$dir/maillog ;;
        postfix-smtp) port=$PFR_PORT; log=$PFR/maillog; : > "$log" ;;
    esac
    sync
    j0=$(jbd2_commits)
    t0=$EPOCHREALTIME
    timeout 300 qmqp-source -s "$sessions" -m "$m" -l 1024 -f jason@example.net \
        -t postmaster@example.net "127.0.0.1:$port" > "$top/qs.out" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    case $path in
        nullq-none | postfix-hold) ;;
        postfix-smtp)
            wait_lines "$log" "status=sent" "$m" || status=FAIL
            t2=$EPOCHREALTIME
            read -r med p99 <<< "$(postfix_stats "$log")"
            ;;
        *)
            wait_lines "$log" 'result="delivered"' "$m" || status=FAIL
            read -r t2 med p99 <<< "$(nullq_stats "$log")"
            ;;
    esac
    j1=$(jbd2_commits)
    case $path in
        nullq-none) nullq_stop; (($(find "$dir/queue" -type f | wc -l) == m)) || status=FAIL ;;
        nullq-*) nullq_stop ;;
        postfix-hold) (($(pf_count) == m)) || status=FAIL; pf_stop ;;
    esac
    ((rc == 0)) || { status="FAIL(rc=$rc)"; sed 's/^/  qmqp-source: /' "$top/qs.out" | head -3 >&2; }
    local recv_s e2e_s="-" e2e_rate="-" jbd="-"
    recv_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    if [[ -n $t2 && $t2 != - ]]; then
        e2e_s=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')
        e2e_rate=$(awk -v m="$m" -v s="$e2e_s" 'BEGIN { printf "%.0f", m / s }')
    fi
    [[ $j0 != - ]] && jbd=$((j1 - j0))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$sessions" "$rep" "$m" \
        "$recv_s" "$(awk -v m="$m" -v s="$recv_s" 'BEGIN { printf "%.0f", m / s }')" \
        "$e2e_s" "$e2e_rate" "$med" "$p99" "$jbd" "$status" | tee -a "$results"
}

header=$(
    echo "# bench/e2e.sh$( ((loopfs)) && echo ' -L') -r $reps -s \"$sessions_list\" -m $msgs -p \"$paths\"${extra:+ -x \"$extra\"}"
    machine_info "$where" | sed 's/^/# /'
    echo "# nullq:      $NULLQ_BIN (bench/ at $(cd "$BENCH_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
)
echo "$header"
SINK_PORT=$(free_port)
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1024 &
SINK_PID=$!
wait_port "$SINK_PORT"
if [[ " $paths " == *" postfix-smtp "* ]]; then
    PFR_PORT=$(free_port)
    pfr_start "$where/postfix-relay" "$PFR_PORT" "$SINK_PORT"
fi
for ((rep = 1; rep <= reps; rep++)); do
    for sessions in $sessions_list; do
        for path in $paths; do
            run "$path" "$sessions" "$rep"
        done
    done
done

summary=$(python3 - "$results" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(rs, col):
    v = [float(r[col]) for r in rs if r["status"] == "ok" and r[col] != "-"]
    return statistics.median(v) if v else None
f = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"
print("| path | sessions | recv msgs/s | e2e msgs/s | e2e / nullq recv-only | K-to-delivery median ms | p99 ms | jbd2 commits | runs ok |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
order = {p: i for i, p in enumerate(["nullq-none", "nullq-maildir", "nullq-cgp", "nullq-smtp", "postfix-hold", "postfix-smtp"])}
for path, sess in sorted({(r["path"], int(r["sessions"])) for r in rows}, key=lambda k: (k[1], order.get(k[0], 99))):
    rs = [r for r in rows if r["path"] == path and int(r["sessions"]) == sess]
    base = med([r for r in rows if r["path"] == "nullq-none" and int(r["sessions"]) == sess], "recv_msgs/s")
    e2e = med(rs, "e2e_msgs/s")
    ratio = f"{e2e / base:.2f}" if e2e and base else "-"
    ok = sum(r["status"] == "ok" for r in rs)
    print(f"| {path} | {sess} | {f(med(rs, 'recv_msgs/s'))} | {f(e2e)} | {ratio} | {f(med(rs, 'k2d_median_ms'), 1)} | {f(med(rs, 'k2d_p99_ms'), 1)} | {f(med(rs, 'jbd2_commits'))} | {ok} of {len(rs)} |")
print()
print("(medians of the runs; e2e: from the first byte sent to the last message delivered)")
EOF
)
echo
echo "$summary"
if [[ -n $out ]]; then
    {
        echo "$header"
        echo "# finished:   $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
        cat "$results"
        echo
        echo "$summary"
    } > "$out"
fi
