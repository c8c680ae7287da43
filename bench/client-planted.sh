#!/usr/bin/env bash
# bench/client-planted.sh [-n NAMES] [-r RUNS]: what names planted in the fallback queue's new/
# (which every local user may write) cost root's sendmail, as cron runs it: one message to a
# working server (Postfix's qmqp-sink), then the small flush after it meets NAMES (100000)
# symlinks. Prints, per run, GNU time's elapsed seconds and peak RSS of `sendmail -i root`,
# and how many lines it wrote on stderr. Run as root (the symlinks are root's; a flush by
# root looks at every user's entries).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/client-common.sh
source "$here/client-common.sh"
names=100000 runs=3
while (($#)); do
    case $1 in
        -n) names=$2; shift 2 ;;
        -r) runs=$2; shift 2 ;;
        *) echo "usage: $0 [-n NAMES] [-r RUNS]" >&2; exit 100 ;;
    esac
done
NULLQ_BIN=$(nullq_binary)
top=$(mktemp -d "$BENCH_TMP/nullq-client-planted.XXXXXX")
sink_pid=""
cleanup() {
    [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null
    rm -rf "$top"
}
trap cleanup EXIT
port=$(free_port)
qmqp-sink "127.0.0.1:$port" 64 >/dev/null 2>&1 &
sink_pid=$!
wait_port "$port"
home=$top/home
client_home "$home" "$port"
echo fallback > "$home/control/fallbackqueue"
mkdir -p "$home/fallback"/{tmp,new,failed}
chmod 755 "$home/fallback"
chmod 1777 "$home/fallback"/{tmp,new,failed}
python3 - "$home/fallback/new" "$names" <<'PY'
import os, sys
new, n = sys.argv[1], int(sys.argv[2])
for i in range(1, n + 1):
    os.symlink("/etc/passwd", f"{new}/1.{i:09}.{i}")
PY
echo "# $NULLQ_BIN, $names names planted in new/"
for ((r = 1; r <= runs; r++)); do
    printf 'Subject: cron\n\noutput\n' |
        /usr/bin/time -f "%e %M" -o "$top/time" env -i PATH="$PATH" NULLQ_HOME="$home" USER=root \
            HOME="$top" "$home/bin/sendmail" -i root 2>"$top/err"
    read -r secs kb < "$top/time"
    echo "run $r: $secs s, peak RSS $kb KB, $(wc -l < "$top/err") stderr lines"
done
