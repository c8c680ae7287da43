#!/usr/bin/env bash
# bench/flush-cost.sh: the cost of one batch flush, each way the committer could do it
# (bench/flush_cost.py), on a fresh loop-mounted ext4 with a journal (as bench/qmqp-throughput.sh
# -L makes it) and in $BENCH_TMP (default /var/tmp: this machine's root filesystem).
# Run as root (mount): bench/flush-cost.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"
top=$(mktemp -d "$BENCH_TMP/nullq-flush-cost.XXXXXX")
cleanup() {
    mountpoint -q "$top/fs" && umount "$top/fs"
    rm -rf "$top"
}
trap cleanup EXIT
truncate -s 2G "$top/fs.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$top/fs.img"
mkdir "$top/fs"
mount -o loop "$top/fs.img" "$top/fs"
machine_info "$top/fs"
echo
echo "loop-mounted ext4 (journal):"
python3 "$here/flush_cost.py" "$top/fs"
echo
echo "$BENCH_TMP ($(findmnt -n -o FSTYPE,OPTIONS --target "$BENCH_TMP" | cut -c1-60)):"
python3 "$here/flush_cost.py" "$top"
