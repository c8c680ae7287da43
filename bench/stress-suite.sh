#!/usr/bin/env bash
# Run the whole test suite (scripts/test, the README's command) N times while two CPU hogs keep
# both cores of the CI machine busy, and report every test that ever failed with its pass count.
# Not part of CI: it takes N times the suite's time. A test that fails here even once is a bug.
#
#   bench/stress-suite.sh 5            # five runs under two hogs
#   HOGS=0 bench/stress-suite.sh 3     # three runs on an idle machine
#
# Output: one line per run (passed/failed counts, seconds), then "flaky or failing tests" with
# "passed K of N" for each test that failed at least once, or "every test passed every run".
# Logs of each run are kept in bench/results/stress-suite/run-K.log.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:?usage: bench/stress-suite.sh N}
hogs=${HOGS:-2}
out=bench/results/stress-suite
mkdir -p "$out"
rm -f "$out"/run-*.log

# Build (and install the peers) once, before the hogs start, so each run measures the tests.
scripts/test --no-run >/dev/null

pids=()
stop_hogs() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_hogs EXIT
for _ in $(seq 1 "$hogs"); do
    # A pure CPU loop, bounded so that a killed script cannot leave it behind for long.
    timeout 6h sh -c 'while :; do :; done' &
    pids+=($!)
done

declare -A passed=() seen=()
for run in $(seq 1 "$runs"); do
    log="$out/run-$run.log"
    start=$(date +%s)
    status=0
    scripts/test >"$log" 2>&1 || status=$?
    secs=$(( $(date +%s) - start ))
    # Name each test by its crate and binary, so equal test names in two binaries stay apart:
    # cargo runs a crate's unit tests ("Running unittests src/lib.rs (.../deps/CRATE-HASH)")
    # before its integration tests ("Running tests/integration/main.rs (...)").
    results=$(awk '
        /^ *Running unittests / {
            crate = $4; sub(/^\(target\/debug\/deps\//, "", crate); sub(/-[0-9a-f]+\)$/, "", crate)
            bin = crate; next
        }
        /^ *Running / { bin = crate "/" $2; next }
        /^ *Doc-tests / { bin = "doc:" $2; next }
        /^test .* \.\.\. (ok|FAILED)$/ {
            name = $2; for (i = 3; $i != "..."; i++) name = name " " $i
            print bin "::" name "\t" $NF
        }' "$log")
    ok=$(grep -c $'\tok$' <<<"$results" || true)
    failed=$(grep -c $'\tFAILED$' <<<"$results" || true)
    while IFS=$'\t' read -r name result; do
        [ -n "$name" ] || continue
        seen[$name]=1
        [ "$result" = ok ] && passed[$name]=$(( ${passed[$name]:-0} + 1 ))
    done <<<"$results"
    echo "run $run: $ok passed, $failed failed, exit $status, ${secs}s (log: $log)"
done

echo "flaky or failing tests:"
any=0
for name in "${!seen[@]}"; do
    p=${passed[$name]:-0}
    if [ "$p" -lt "$runs" ]; then
        echo "  $name: passed $p of $runs"
        any=1
    fi
done
[ "$any" = 1 ] || echo "  none: every test passed every run ($runs runs, $hogs CPU hogs)"
