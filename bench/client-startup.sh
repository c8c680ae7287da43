#!/usr/bin/env bash
# bench/client-startup.sh: the null client's start-up time and peak memory, against Postfix's
# sendmail (a private Postfix instance, bench/postfix-qmqpd.sh: own config, queue and log in a
# temporary directory, every message put on HOLD; /etc/postfix is never changed).
#
# What it measures:
#   1. Start-up, with hyperfine (warmup W (20), runs N (200); R (3) rounds, the summary gives the
#      round with the median mean, and its sigma):
#      without a shell (hyperfine -N):
#        /bin/true                           the floor: fork + exec of a tiny program
#        nullq `sendmail -bp`, `mailq`        list the (absent) fallback queue: parse argv, read
#                                             the control files, print nothing, exit 0
#        Postfix `sendmail -C DIR -bp`        what `mailq` does: sendmail execs postqueue, which
#                                             asks the showq daemon through the master
#      through sh -c (hyperfine subtracts the cost of starting the shell):
#        nullq `qmail-inject -n < msg`        rewrite and print a small message, send nothing
#        nullq `sendmail -t < msg`            one real injection -> `nullq serve --deliver none`
#        Postfix `sendmail -C DIR -t < msg`   one real injection -> postdrop -> maildrop/
#   2. Peak RSS (GNU time's %M = ru_maxrss of the program and of the children it waited for,
#      i.e. Postfix's sendmail and its postdrop), median of 3:
#        one `sendmail -t` of the small message, nullq and Postfix;
#        a 50 MB message (52,428,800 bytes of body) through nullq's `qmail-qmqpc` (message on
#        fd 0, envelope on fd 1; must stay under 16 MB and be stored whole by the server), and
#        through `sendmail -t` for nullq and Postfix.
#
# Run (as root: the private Postfix needs it; all traffic is on 127.0.0.1):
#   bench/client-startup.sh                 # builds nullq: cargo build --release -p nullq
#   bench/client-startup.sh -r 3 -N 200 -W 20 -o /var/tmp/client-startup.txt
# Needs: hyperfine (apt-get install -y hyperfine, done here when missing), GNU time
# (/usr/bin/time), python3, Debian's postfix package.
# Exit status: 0 when every command succeeded and the 50 MB qmail-qmqpc stayed under 16 MB.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/client-common.sh
source "$here/client-common.sh"

rounds=3
runs=200
warmup=20
out=""
while (($#)); do
    case $1 in
        -r) rounds=$2; shift 2 ;;
        -N) runs=$2; shift 2 ;;
        -W) warmup=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        *) echo "usage: $0 [-r ROUNDS] [-N RUNS] [-W WARMUP] [-o FILE]" >&2; exit 100 ;;
    esac
done
((rounds >= 1 && rounds <= 10)) || { echo "client-startup: -r must be 1..10" >&2; exit 100; }
((runs >= 2 && runs <= 5000)) || { echo "client-startup: -N must be 2..5000" >&2; exit 100; }
((warmup >= 0 && warmup <= 1000)) || { echo "client-startup: -W must be 0..1000" >&2; exit 100; }

if ! command -v hyperfine >/dev/null; then
    timeout 600 apt-get install -y hyperfine >&2
fi
[[ -x /usr/bin/time ]] || { echo "client-startup: needs GNU time (/usr/bin/time)" >&2; exit 1; }

top=$(mktemp -d "$BENCH_TMP/nullq-bench-client-startup.XXXXXX")
cleanup() {
    nullq_stop
    pf_stop
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NULLQ_BIN=$(nullq_binary)
home=$top/home
big=52428800
port=$(free_port)
client_home "$home" "$port"
nullq_start "$top/nullq" "$port" --deliver none --databytes $((big + 1048576))
pf_start "$top/postfix" "$(free_port)"
pfconf=$PF_DIR/conf
export NULLQ_HOME=$home

printf 'To: bob\nSubject: hi\n\nbody\n' > "$top/small"
{
    printf 'To: bob\nSubject: big\n\n'
    head -c "$big" < <(yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')
} > "$top/big"
printf 'Fjason@example.net\0Tbob@example.net\0\0' > "$top/envelope"

# Check once that every command does what it is timed doing.
[[ -z $(timeout 10 "$home/bin/sendmail" -bp) ]]
[[ -z $(timeout 10 "$home/bin/mailq") ]]
[[ $(timeout 10 /usr/sbin/sendmail -C "$pfconf" -bp) == *'Mail queue is empty'* ]]
[[ $(timeout 10 "$home/bin/qmail-inject" -n < "$top/small") == *'To: bob@example.net'* ]]
timeout 10 "$home/bin/sendmail" -t < "$top/small"
timeout 10 /usr/sbin/sendmail -C "$pfconf" -t < "$top/small"
pf_wait_hold 1 60
pf_clear # Postfix's -bp lists every queue, hold/ too: time it on an empty queue, like nullq's

header() {
    echo "# bench/client-startup.sh -r $rounds -N $runs -W $warmup"
    machine_info "$top" | sed 's/^/# /'
    echo "# nullq:      $NULLQ_BIN ($(cd "$BENCH_ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
    echo "# hyperfine:  $(hyperfine --version)"
}
head_text=$(header) # the date and load when the measurements start
echo "$head_text"

results=$top/startup.tsv
printf 'round\tcommand\tmean_ms\tstddev_ms\tmin_ms\tmax_ms\truns\n' > "$results"

# hyperfine_round ROUND MODE NAME CMD [NAME CMD]...: one hyperfine run; appends to $results.
hyperfine_round() {
    local round=$1 mode=$2 json=$top/hf.json
    shift 2
    local args=(--warmup "$warmup" --runs "$runs" --export-json "$json" --style basic)
    [[ $mode == none ]] && args+=(-N)
    while (($#)); do
        args+=(-n "$1" "$2")
        shift 2
    done
    timeout 1800 hyperfine "${args[@]}" >&2
    python3 - "$json" "$round" >> "$results" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    ms = lambda v: f"{v * 1000:.3f}"
    print(sys.argv[2], r["command"], ms(r["mean"]), ms(r["stddev"]), ms(r["min"]), ms(r["max"]),
          len(r["times"]), sep="\t")
EOF
}

for ((round = 1; round <= rounds; round++)); do
    hyperfine_round "$round" none \
        "/bin/true" "/bin/true" \
        "nullq sendmail -bp" "$home/bin/sendmail -bp" \
        "nullq mailq" "$home/bin/mailq" \
        "postfix sendmail -bp" "/usr/sbin/sendmail -C $pfconf -bp"
    # Postfix's injection last: pickup and cleanup work on after each sendmail has returned.
    hyperfine_round "$round" shell \
        "nullq qmail-inject -n < msg" "$home/bin/qmail-inject -n < $top/small" \
        "nullq sendmail -t < msg" "$home/bin/sendmail -t < $top/small" \
        "postfix sendmail -t < msg" "/usr/sbin/sendmail -C $pfconf -t < $top/small"
    # Let Postfix file what it was given, then empty its queue for the next round's -bp.
    pf_wait_hold $((warmup + runs)) 120 || echo "client-startup: Postfix hold/ has $(pf_hold)" >&2
    pf_clear
done

# rss NAME STDIN [FD1] CMD...: peak RSS in kB of CMD, 3 times; appends to $rss.
rss=$top/rss.tsv
printf 'command\tkB\tkB\tkB\tstatus\n' > "$rss"
rss() {
    local name=$1 input=$2 fd1=$3 i kb=() status=ok rc
    shift 3
    for i in 1 2 3; do
        rc=0
        if [[ -n $fd1 ]]; then
            timeout 300 /usr/bin/time -o "$top/time" -f %M "$@" < "$input" 1< "$fd1" 2>>"$top/rss.err" || rc=$?
        else
            timeout 300 /usr/bin/time -o "$top/time" -f %M "$@" < "$input" > /dev/null 2>>"$top/rss.err" || rc=$?
        fi
        ((rc == 0)) || status="FAIL(exit $rc)"
        kb+=("$(tail -1 "$top/time")")
    done
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "${kb[@]}" "$status" >> "$rss"
}

rss "nullq sendmail -t < msg" "$top/small" "" "$home/bin/sendmail" -t
rss "postfix sendmail -t < msg" "$top/small" "" /usr/sbin/sendmail -C "$pfconf" -t
before=$(find "$top/nullq/queue" -type f -size +$((big / 1024))k | wc -l)
rss "nullq qmail-qmqpc < 50 MB" "$top/big" "$top/envelope" "$home/bin/qmail-qmqpc"
after=$(find "$top/nullq/queue" -type f -size +$((big / 1024))k | wc -l)
if ((after - before != 3)); then
    echo "client-startup: the server stored $((after - before)) of 3 50 MB messages from qmail-qmqpc" >&2
    sed -i '$ s/ok$/FAIL(stored)/' "$rss"
fi
before=$after
rss "nullq sendmail -t < 50 MB" "$top/big" "" "$home/bin/sendmail" -t
after=$(find "$top/nullq/queue" -type f -size +$((big / 1024))k | wc -l)
if ((after - before != 3)); then
    echo "client-startup: the server stored $((after - before)) of 3 50 MB messages from sendmail" >&2
    sed -i '$ s/ok$/FAIL(stored)/' "$rss"
fi
rss "postfix sendmail -t < 50 MB" "$top/big" "" /usr/sbin/sendmail -C "$pfconf" -t
# Everything Postfix's sendmail accepted since the last pf_clear must reach hold/: 3 + 3.
want=6
if ! pf_wait_hold "$want" 120; then
    echo "client-startup: Postfix hold/ has $(pf_hold) messages, expected $want" >&2
    sed -i '$ s/ok$/FAIL(stored)/' "$rss"
fi


summary=$(python3 - "$results" "$rss" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| command | start-up, mean ± σ (ms) | min (ms) | runs | round means (ms) |")
print("|---|---:|---:|---:|---|")
for cmd in dict.fromkeys(r["command"] for r in rows):
    rs = sorted((r for r in rows if r["command"] == cmd), key=lambda r: float(r["mean_ms"]))
    m = rs[(len(rs) - 1) // 2]  # the round with the median mean (the lower one of an even count)
    means = ", ".join(r["mean_ms"] for r in rows if r["command"] == cmd)
    print(f"| {cmd} | {float(m['mean_ms']):.2f} ± {float(m['stddev_ms']):.2f} | {float(m['min_ms']):.2f} | {m['runs']} | {means} |")
print()
print("| command | peak RSS, median of 3 (MB) | runs (kB) | status |")
print("|---|---:|---|---|")
for r in csv.reader(open(sys.argv[2]), delimiter="\t"):
    if r[0] == "command":
        continue
    kb = [int(x) for x in r[1:4]]
    print(f"| {r[0]} | {statistics.median(kb) / 1024:.1f} | {', '.join(r[1:4])} | {r[4]} |")
EOF
)
echo
echo "$summary"
if [[ -n $out ]]; then
    {
        echo "$head_text"
        cat "$results"
        echo
        cat "$rss"
        echo
        echo "$summary"
    } > "$out"
fi
qmqpc_kb=$(awk -F'\t' '$1 ~ /qmail-qmqpc/ { m = $2; if ($3 > m) m = $3; if ($4 > m) m = $4; print m }' "$rss")
if ((qmqpc_kb >= 16384)); then
    echo "client-startup: qmail-qmqpc peaked at $qmqpc_kb kB (limit 16384)" >&2
    exit 1
fi
! grep -q FAIL "$rss"
