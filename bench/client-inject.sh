#!/usr/bin/env bash
# bench/client-inject.sh: the null client's injection rate, one process per message.
#
# What it measures: the wall time of a shell loop that injects N (1000) messages, each with its
# own process, exactly as a busy host's cron jobs and scripts do:
#
#   for i in 1..N: printf 'To: bob\nSubject: n%s\n\nbody\n' $i | timeout 30 SENDMAIL -t
#
# -> messages/s = N / seconds and ms per message = seconds / N * 1000, for four configurations:
#   harness        SENDMAIL = /bin/true: the loop's own cost (bash fork for printf, timeout,
#                  exec), paid equally by every configuration below
#   nullq          nullq's sendmail (symlink DIR/bin/sendmail -> target/release/nullq, NULLQ_HOME
#                  with control/me, defaulthost, qmqpservers = 127.0.0.1:PORT) -> QMQP ->
#                  `nullq serve --deliver none` (release build; K only after the fsync)
#   postfix        Postfix's /usr/sbin/sendmail -C PRIVATE/conf -t -> postdrop -> maildrop/ ->
#                  pickup -> cleanup -> hold/ (header_checks `/^/ HOLD`: nothing is delivered)
#   nullq-postfix  nullq's sendmail -> QMQP -> the same private Postfix's qmqpd -> cleanup -> hold/
# Every run starts empty (a fresh nullq spool; `postsuper -d ALL` for Postfix) and must end with
# all N messages stored: files in nullq's queue/, files in Postfix's queue/hold/ (postdrop's
# sendmail returns before pickup has filed the message, so for Postfix we also wait, at most
# 120 s, and report "until all on hold" = loop start to the N-th message in hold/).
# Configurations are interleaved (order rotated each run) and run R (3) times; the summary gives
# the median run. The private Postfix is bench/postfix-qmqpd.sh's (its own config, queue and log
# in a temporary directory; /etc/postfix is only read for master.cf.proto, never changed).
#
# Run (as root: the private Postfix needs it; all traffic is on 127.0.0.1):
#   bench/client-inject.sh                  # builds nullq: cargo build --release -p nullq
#   bench/client-inject.sh -n 1000 -r 3 -o /var/tmp/client-inject.txt
#   NULLQ=/path/to/nullq bench/client-inject.sh -c "nullq postfix"
# Options: -n N messages per run (1..100000), -r R runs (1..20), -c "CONFIGS" (subset of
# "harness nullq postfix nullq-postfix"), -o FILE (also write the runs and summary there).
# Exit status: 0 when every message of every run was injected (exit 0) and stored; 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/client-common.sh
source "$here/client-common.sh"

msgs=1000
reps=3
configs="harness nullq postfix nullq-postfix"
out=""
while (($#)); do
    case $1 in
        -n) msgs=$2; shift 2 ;;
        -r) reps=$2; shift 2 ;;
        -c) configs=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        *) echo "usage: $0 [-n MESSAGES] [-r RUNS] [-c CONFIGS] [-o FILE]" >&2; exit 100 ;;
    esac
done
((msgs >= 1 && msgs <= 100000)) || { echo "client-inject: -n must be 1..100000" >&2; exit 100; }
((reps >= 1 && reps <= 20)) || { echo "client-inject: -r must be 1..20" >&2; exit 100; }
for c in $configs; do
    case $c in harness | nullq | postfix | nullq-postfix) ;;
        *) echo "client-inject: unknown configuration $c" >&2; exit 100 ;;
    esac
done
# A bound on each loop: 100 ms a message is 20x slower than anything seen here.
loop_limit=$((msgs / 10 + 60))

top=$(mktemp -d "$BENCH_TMP/nullq-bench-client-inject.XXXXXX")
cleanup() {
    nullq_stop
    pf_stop
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NULLQ_BIN=$(nullq_binary)
results=$top/results.tsv
errlog=$top/stderr.log
: > "$errlog"

need_postfix=0
[[ " $configs " == *" postfix "* || " $configs " == *" nullq-postfix "* ]] && need_postfix=1
if ((need_postfix)); then
    pf_start "$top/postfix" "$(free_port)"
    client_home "$top/home-pf" "$PF_PORT"
fi

# inject_loop CMD...: inject $msgs messages, one `timeout 30 CMD -t` each; sets LOOP_T0 (start,
# $EPOCHREALTIME), LOOP_SECS and LOOP_FAILS (injections that did not exit 0).
inject_loop() {
    local i deadline=$((SECONDS + loop_limit))
    LOOP_FAILS=0
    LOOP_T0=$EPOCHREALTIME
    for ((i = 1; i <= msgs; i++)); do
        if ! printf 'To: bob\nSubject: n%s\n\nbody\n' "$i" | timeout 30 "$@" -t >/dev/null 2>>"$errlog"; then
            LOOP_FAILS=$((LOOP_FAILS + 1))
        fi
        if ((SECONDS > deadline)); then
            echo "client-inject: loop stopped after $i messages ($loop_limit s)" >&2
            LOOP_FAILS=$((LOOP_FAILS + msgs - i))
            break
        fi
    done
    LOOP_SECS=$(secs_since "$LOOP_T0")
}

# run_one CONFIG REP: one timed loop; appends a line to $results.
run_one() {
    local config=$1 rep=$2 data="" stored drain="" load
    load=$(cut -d' ' -f1 /proc/loadavg)
    case $config in
        harness)
            inject_loop /bin/true
            stored=$msgs
            ;;
        nullq)
            local port
            port=$(free_port)
            data=$top/nullq-$rep
            client_home "$top/home-nullq" "$port"
            nullq_start "$data" "$port" --deliver none
            sync
            NULLQ_HOME=$top/home-nullq inject_loop "$top/home-nullq/bin/sendmail"
            stored=$(find "$data/queue" -type f | wc -l)
            nullq_stop
            rm -rf "$data" "$data.log"
            ;;
        postfix | nullq-postfix)
            pf_clear
            sync
            if [[ $config == postfix ]]; then
                inject_loop /usr/sbin/sendmail -C "$PF_DIR/conf"
            else
                NULLQ_HOME=$top/home-pf inject_loop "$top/home-pf/bin/sendmail"
            fi
            pf_wait_hold "$msgs" 120 || true
            drain=$(secs_since "$LOOP_T0")
            stored=$(pf_hold)
            if ((rep == 1)); then # cross-check the count once with Postfix's own tool
                local listed
                listed=$(timeout 60 postqueue -c "$PF_DIR/conf" -j | wc -l)
                ((listed == stored)) || echo "client-inject: postqueue -j lists $listed, hold/ has $stored" >&2
            fi
            ;;
    esac
    local status=ok
    if ((LOOP_FAILS != 0 || stored != msgs)); then
        status="FAIL(failed=$LOOP_FAILS,stored=$stored)"
        tail -3 "$errlog" | sed 's/^/  stderr: /' >&2
    fi
    local rate ms
    rate=$(awk -v m="$msgs" -v s="$LOOP_SECS" 'BEGIN { printf "%.1f", m / s }')
    ms=$(awk -v m="$msgs" -v s="$LOOP_SECS" 'BEGIN { printf "%.3f", s * 1000 / m }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$config" "$rep" "$msgs" "$LOOP_SECS" "$rate" \
        "$ms" "${drain:--}" "$status" "$load" | tee -a "$results"
}

header() {
    echo "# bench/client-inject.sh -n $msgs -r $reps -c \"$configs\""
    machine_info "$top" | sed 's/^/# /'
    echo "# nullq:      $NULLQ_BIN ($(cd "$BENCH_ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
}
head_text=$(header) # the date and load when the measurements start
echo "$head_text"
printf 'config\trep\tmsgs\tseconds\tmsgs/s\tms/msg\tuntil_all_on_hold_s\tstatus\tload1\n' | tee "$results"

read -r -a order <<< "$configs"
for ((rep = 1; rep <= reps; rep++)); do
    # Rotate the order each run, so no configuration always runs first or last.
    for ((k = 0; k < ${#order[@]}; k++)); do
        run_one "${order[(k + rep - 1) % ${#order[@]}]}" "$rep"
    done
done
((need_postfix)) && pf_clear

summary=$(python3 - "$results" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
names = {
    "harness": "loop harness only (`/bin/true -t`)",
    "nullq": "nullq `sendmail -t` -> `nullq serve --deliver none`",
    "postfix": "Postfix `sendmail -t` -> postdrop -> pickup -> hold",
    "nullq-postfix": "nullq `sendmail -t` -> Postfix qmqpd -> hold",
}
print("| configuration | runs | median s | msgs/s | ms/msg | until all on hold (s) | all runs, msgs/s |")
print("|---|---:|---:|---:|---:|---:|---|")
for config in [c for c in names if any(r["config"] == c for r in rows)]:
    rs = [r for r in rows if r["config"] == config]
    ok = [r for r in rs if r["status"] == "ok"]
    allruns = ", ".join(r["msgs/s"] if r["status"] == "ok" else "FAIL" for r in rs)
    if len(ok) != len(rs):
        print(f"| {names[config]} | {len(rs)} | FAIL | | | | {allruns} |")
        continue
    secs = statistics.median(float(r["seconds"]) for r in rs)
    n = int(rs[0]["msgs"])
    drains = [float(r["until_all_on_hold_s"]) for r in rs if r["until_all_on_hold_s"] != "-"]
    drain = f"{statistics.median(drains):.2f}" if drains else "-"
    print(f"| {names[config]} | {len(rs)} | {secs:.2f} | {n / secs:.0f} | {secs * 1000 / n:.2f} | {drain} | {allruns} |")
EOF
)
echo
echo "$summary"
if [[ -n $out ]]; then
    {
        echo "$head_text"
        cat "$results"
        echo
        echo "$summary"
    } > "$out"
fi
! grep -q FAIL "$results"
