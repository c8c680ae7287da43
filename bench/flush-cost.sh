#!/usr/bin/env bash
# bench/flush-cost.sh: the cost of one batch flush, each way the committer could do it
# (bench/flush_cost.py: syncfs, fdatasyncs, a journal segment; nullq-spool's flush_uring
# example: io_uring, with CPU time and context switches per file; bench/create_cost.py: a file
# made with or without its rename), on a fresh loop-mounted ext4
# with a journal (as bench/qmqp-throughput.sh -L makes it) and in $BENCH_TMP (default /var/tmp:
# this machine's root filesystem).
# Run as root (mount): bench/flush-cost.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
cargo build --quiet --release -p nullq-spool --example flush_uring --manifest-path "$here/../Cargo.toml"
uring=$here/../target/release/examples/flush_uring
top=$(mktemp -d "$BENCH_TMP/nullq-flush-cost.XXXXXX")
cleanup() {
    loop_umount "$top"
    rm -rf "$top"
}
trap cleanup EXIT
loop_ext4 "$top" 2G
machine_info "$top/fs"
echo
echo "loop-mounted ext4 (journal):"
python3 "$here/flush_cost.py" "$top/fs"
"$uring" "$top/fs"
python3 "$here/create_cost.py" "$top/fs"
echo
echo "$BENCH_TMP ($(findmnt -n -o FSTYPE,OPTIONS --target "$BENCH_TMP" | cut -c1-60)):"
python3 "$here/flush_cost.py" "$top"
"$uring" "$top"
