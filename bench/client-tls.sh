#!/usr/bin/env bash
# bench/client-tls.sh: what a qmqps:// server in control/qmqpservers adds to the null client's
# time per message, against plain QMQP, in the same run, to the same `nullq serve --deliver
# none` (its plain listener and its TLS listener with --tls-client-ca).
#
# What it measures, with hyperfine through sh -c (hyperfine subtracts the shell), warmup W (20),
# runs N (200), R (3) rounds interleaved; the summary gives each command's median round:
#   plain   `sendmail -t < msg` with qmqpservers = 127.0.0.1:PORT
#   qmqps   the same with qmqpservers = qmqps://127.0.0.1:TLSPORT, tlscafile = the test CA,
#           tlsclientcert/tlsclientkey = a client certificate that CA signed (EC P-256, made
#           here with openssl): the TLS 1.3 handshake, both certificates verified
# Every timed injection must exit 0 (hyperfine fails otherwise) and be stored by the server.
#
# Run:
#   bench/client-tls.sh                       # builds nullq: cargo build --release -p nullq
#   bench/client-tls.sh -r 3 -N 200 -W 20 -o /var/tmp/client-tls.txt
# Needs: hyperfine (apt-get install -y hyperfine, done here when missing), openssl, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"

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
((rounds >= 1 && rounds <= 10)) || { echo "client-tls: -r must be 1..10" >&2; exit 100; }
((runs >= 2 && runs <= 5000)) || { echo "client-tls: -N must be 2..5000" >&2; exit 100; }
((warmup >= 0 && warmup <= 1000)) || { echo "client-tls: -W must be 0..1000" >&2; exit 100; }
command -v hyperfine >/dev/null || timeout 600 apt-get install -y hyperfine >&2

top=$(mktemp -d "$BENCH_TMP/nullq-bench-client-tls.XXXXXX")
cleanup() {
    nullq_stop
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NULLQ_BIN=$(nullq_binary)
cd "$top"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
for who in server client; do
    if [[ $who == server ]]; then
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > $who.cnf
    else
        printf 'subjectAltName=DNS:client.example.net\nextendedKeyUsage=clientAuth\n' > $who.cnf
    fi
    openssl req "${ec[@]}" -subj /CN=$who.example.net -keyout $who.key -out $who.csr 2>/dev/null
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile $who.cnf -out $who.pem 2>/dev/null
    chmod 600 $who.key
done
cd - >/dev/null

port=$(free_port)
tls_port=$(free_port)
nullq_start "$top/nullq" "$port" --deliver none --tls-listen "127.0.0.1:$tls_port" \
    --tls-cert "$top/server.pem" --tls-key "$top/server.key" --tls-client-ca "$top/ca.pem"
wait_port "$tls_port"

for kind in plain qmqps; do
    home=$top/$kind
    mkdir -p "$home/control" "$home/bin"
    echo client.example.net > "$home/control/me"
    echo example.net > "$home/control/defaulthost"
    ln -sfn "$NULLQ_BIN" "$home/bin/sendmail"
done
echo "127.0.0.1:$port" > "$top/plain/control/qmqpservers"
echo "qmqps://127.0.0.1:$tls_port" > "$top/qmqps/control/qmqpservers"
echo "$top/ca.pem" > "$top/qmqps/control/tlscafile"
echo "$top/client.pem" > "$top/qmqps/control/tlsclientcert"
echo "$top/client.key" > "$top/qmqps/control/tlsclientkey"
printf 'To: bob\nSubject: hi\n\nbody\n' > "$top/small"

queued() { find "$top/nullq/queue" -type f | wc -l; }
for kind in plain qmqps; do
    NULLQ_HOME=$top/$kind timeout 10 "$top/$kind/bin/sendmail" -t < "$top/small"
done
(($(queued) == 2)) || { echo "client-tls: the check messages were not stored" >&2; exit 1; }
grep -q 'tls=TLSv1.3/.*/client.example.net' "$top/nullq.log" ||
    { echo "client-tls: no TLS session with the client certificate in the log" >&2; exit 1; }

header() {
    echo "# bench/client-tls.sh -r $rounds -N $runs -W $warmup"
    machine_info "$top" | sed 's/^/# /'
    echo "# nullq:      $NULLQ_BIN ($(cd "$BENCH_ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
    echo "# hyperfine:  $(hyperfine --version)"
}
head_text=$(header)
echo "$head_text"

results=$top/tls.tsv
printf 'round\tcommand\tmean_ms\tstddev_ms\tmin_ms\tmax_ms\truns\n' > "$results"
for ((round = 1; round <= rounds; round++)); do
    json=$top/hf.json
    # Alternate which goes first, so that neither always runs on a warmer machine.
    pair=(-n plain "NULLQ_HOME=$top/plain $top/plain/bin/sendmail -t < $top/small"
          -n qmqps "NULLQ_HOME=$top/qmqps $top/qmqps/bin/sendmail -t < $top/small")
    if ((round % 2 == 0)); then
        pair=("${pair[@]:3:3}" "${pair[@]:0:3}")
    fi
    timeout 1800 hyperfine --warmup "$warmup" --runs "$runs" --export-json "$json" \
        --style basic "${pair[@]}" >&2
    python3 - "$json" "$round" >> "$results" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    ms = lambda v: f"{v * 1000:.3f}"
    print(sys.argv[2], r["command"], ms(r["mean"]), ms(r["stddev"]), ms(r["min"]), ms(r["max"]),
          len(r["times"]), sep="\t")
PY
done
want=$((2 + rounds * 2 * (warmup + runs)))
(($(queued) == want)) || { echo "client-tls: $(queued) stored, $want expected" >&2; exit 1; }

summary=$(python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for cmd in ("plain", "qmqps"):
    rs = sorted((r for r in rows if r["command"] == cmd), key=lambda r: float(r["mean_ms"]))
    m = rs[len(rs) // 2]
    med[cmd] = float(m["mean_ms"])
    rounds = ", ".join(r["mean_ms"] for r in rows if r["command"] == cmd)
    print(f"{cmd}\tmean {m['mean_ms']} ms ± {m['stddev_ms']} (min {m['min_ms']}, max {m['max_ms']}); rounds: {rounds}")
print(f"added by qmqps\t{med['qmqps'] - med['plain']:.3f} ms per message ({med['qmqps'] / med['plain']:.2f}x)")
PY
)
echo "$summary"
if [[ -n $out ]]; then
    { echo "$head_text"; echo "$summary"; } > "$out"
fi
