#!/usr/bin/env bash
# bench/slow-flood.sh: a normal client's time to K while 1,000 slow connections are open,
# nullq serve vs Postfix qmqpd, same run.
#
# What it measures (bench/slow_clients.py): N connections (default 1000) from 12 loopback
# addresses, each sending one byte every 2 s and reconnecting as soon as the server ends it,
# for the whole run; once all are open (and 5 s more), 20 probes from another address
# (127.0.2.1), one after another, each a 1 KB request sent at once and timed until its answer
# (at most 30 s). Both servers on their default limits:
#   - nullq serve --deliver none: max_sessions 1000, 100 per address, first-byte timeout 10 s,
#     minimum data rate 500 bytes/s (a session furthest below it gives way to a new one when
#     every slot is taken);
#   - Postfix qmqpd (bench/postfix-qmqpd.sh, every message on hold): default_process_limit 100,
#     qmqpd_timeout 300 s.
# With NULLQ_BEFORE=/path/to/an/older/nullq, that binary is measured too (same flags).
#
# Run (as root: Postfix needs it):  bench/slow-flood.sh [-n CONNS] [-o FILE]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
# shellcheck source=bench/postfix-qmqpd.sh
source "$here/postfix-qmqpd.sh"

conns=1000
out=""
while (($#)); do
    case $1 in
        -n) conns=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        *) echo "usage: $0 [-n CONNS] [-o FILE]" >&2; exit 100 ;;
    esac
done

top=$(mktemp -d "$BENCH_TMP/nullq-bench-flood.XXXXXX")
cleanup() {
    nullq_stop
    pf_stop
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[[ -z $out ]] || exec > >(tee "$out")

NULLQ_BIN=$(nullq_binary)
flood() { python3 "$here/slow_clients.py" "$1" "$conns" 12 2 5 20 30; }

echo "# bench/slow-flood.sh -n $conns"
machine_info "$top" | sed 's/^/# /'
echo "# nullq: $NULLQ_BIN"

echo
echo "== nullq serve (defaults)"
port=$(free_port)
nullq_start "$top/nullq" "$port" --deliver none
flood "$port"
echo "server's refusals: $(grep -c 'answer=Z' "$top/nullq.log" || true) Z lines, of which evicted: $(grep -c 'this one is the slowest' "$top/nullq.log" || true)"
nullq_stop

if [[ -n ${NULLQ_BEFORE:-} ]]; then
    echo
    echo "== nullq serve before (NULLQ_BEFORE=$NULLQ_BEFORE)"
    port=$(free_port)
    NULLQ_BIN=$NULLQ_BEFORE nullq_start "$top/nullq-before" "$port" --deliver none
    flood "$port"
    nullq_stop
fi

echo
echo "== Postfix qmqpd (defaults)"
port=$(free_port)
pf_start "$top/postfix" "$port"
flood "$port"
pf_stop
