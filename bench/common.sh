# bench/common.sh: helpers shared by the benchmark scripts (sourced, not run).
#
#   nullq_binary        build `nullq` (cargo build --profile $NULLQ_PROFILE -p nullq) unless
#                       $NULLQ names a binary already; prints its path
#   nullq_start D P ... start `nullq serve` on 127.0.0.1:P with its spool in D (more flags after);
#                       sets NULLQ_PID; the log goes to D.log
#   nullq_stop          SIGTERM it and wait (at most 30 s)
#   nullq_cpu           the CPU ticks (user + system) the running server used so far
#   free_port           a free TCP port on 127.0.0.1
#   wait_port P         wait (at most 20 s) until 127.0.0.1:P accepts
#   machine_info        nproc, CPU model, kernel, filesystem of a directory, load, date
#   proc_kb PID FIELD   a field of /proc/PID/status in kB (VmRSS, VmHWM, ...)
#   loop_ext4 DIR SIZE  a new ext4 with its journal in the sparse file DIR/fs.img (SIZE as
#                       truncate takes it), mounted on DIR/fs; unmount it with loop_umount DIR
#   jbd2_info MNT       the /proc/fs/jbd2 info file of the journal of the filesystem at MNT
#
# Environment: NULLQ (a prebuilt nullq binary), NULLQ_PROFILE (the cargo profile built when NULLQ
# is unset: release, the default, has no debug info; profiling keeps symbols for perf), BENCH_TMP (where temporary directories go,
# default /var/tmp), CARGO_TARGET_DIR (honoured when building).

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_TMP=${BENCH_TMP:-/var/tmp}
NULLQ_PID=""

nullq_binary() {
    if [[ -n ${NULLQ:-} ]]; then
        echo "$NULLQ"
        return
    fi
    local profile=${NULLQ_PROFILE:-release}
    (cd "$BENCH_ROOT" && cargo build --profile "$profile" -p nullq >&2)
    echo "${CARGO_TARGET_DIR:-$BENCH_ROOT/target}/$profile/nullq"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 i
    for ((i = 0; i < 200; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench: nothing listens on 127.0.0.1:$port after 20 s" >&2
    return 1
}

# nullq_start DATA PORT [FLAG...]: NULLQ_BIN must be set (from nullq_binary).
nullq_start() {
    local data=$1 port=$2
    shift 2
    "$NULLQ_BIN" serve --listen "127.0.0.1:$port" --data "$data" --error-delay 0 "$@" \
        2>>"$data.log" &
    NULLQ_PID=$!
    if ! wait_port "$port"; then
        tail -5 "$data.log" >&2
        return 1
    fi
}

# nullq_cpu: CPU time (user + system, in clock ticks) the running nullq server used so far.
nullq_cpu() {
    awk '{ print $14 + $15 }' "/proc/$NULLQ_PID/stat"
}

nullq_stop() {
    [[ -n $NULLQ_PID ]] || return 0
    kill -TERM "$NULLQ_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$NULLQ_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$NULLQ_PID" 2>/dev/null; then
        echo "bench: nullq $NULLQ_PID did not exit after SIGTERM; killing it" >&2
        kill -KILL "$NULLQ_PID" 2>/dev/null || true
    fi
    wait "$NULLQ_PID" 2>/dev/null || true
    NULLQ_PID=""
}

proc_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# loop_ext4 DIR SIZE: DIR/fs, a fresh ext4 with a journal on a loop device (its inode tables
# and journal written now, so that no lazy initialisation runs during a measurement).
loop_ext4() {
    truncate -s "$2" "$1/fs.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1/fs.img"
    mkdir "$1/fs"
    mount -o loop "$1/fs.img" "$1/fs"
}

# loop_umount DIR: unmount DIR/fs if mounted (lazily if something still holds it).
loop_umount() {
    if mountpoint -q "$1/fs"; then
        umount "$1/fs" || umount -l "$1/fs"
    fi
}

# jbd2_info MNT: the jbd2 info file of the filesystem mounted at MNT.
jbd2_info() {
    local dev
    dev=$(findmnt -n -o SOURCE "$1")
    echo "/proc/fs/jbd2/${dev##*/}-8/info"
}

# machine_info DIR: the facts BENCHMARKS.md records next to every number.
machine_info() {
    local dir=$1
    echo "date:       $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "cpus:       $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "kernel:     $(uname -sr)"
    echo "spool fs:   $dir: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$dir" | head -n 1)"
    # ext4 with or without a journal behaves very differently under fsync: say which.
    local dev
    dev=$(findmnt -n -o SOURCE -T "$dir" | head -n 1)
    dev=${dev##*/}
    if [[ -r /sys/fs/ext4/$dev/journal_task ]]; then
        echo "ext4 journal: $(sed 's/^<none>$/none/; s/^[0-9]\+$/yes (jbd2 pid &)/' "/sys/fs/ext4/$dev/journal_task")"
    fi
    echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "postfix:    $(postconf -d -h mail_version 2>/dev/null || echo '?')"
}
