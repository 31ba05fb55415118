# shellcheck shell=sh
# shellcheck disable=SC2034 # BENCH_FS_ERROR is read by the scripts that source this
# bench/lib.sh: helpers the benchmark scripts share (sourced, POSIX sh).
#
#   umount_under DIR          unmount everything at or below DIR, deepest first
#   descendants PID           the pids below PID (children first), one a line
#   kill_wait PID SECONDS     SIGTERM, SIGKILL after SECONDS; reap it
#   kill_tree PID             PID and everything it started (by pid)
#   now_ns; secs T0 T1        wall clock in ns; T1 - T0 in seconds (3 decimals)
#   bench_fs_make DIR IMG     DIR becomes the root of a new ext4 file system on
#                             the sparse image IMG (inode tables written now,
#                             not by ext4lazyinit during a run); status 1, with
#                             mkfs/mount's last line in BENCH_FS_ERROR, when not
#   bench_fs_drop DIR IMG     unmount DIR (and below), delete IMG, sync

umount_under() {
    [ -n "$1" ] && [ -d "$1" ] || return 0
    findmnt -rn -o TARGET 2>/dev/null | awk -v d="$1" 'index($0, d "/") == 1 || $0 == d' |
        sort -r | while read -r _m; do
        umount "$_m" 2>/dev/null || umount -l "$_m" 2>/dev/null || true
    done
}

descendants() {
    for _c in $(pgrep -P "$1" 2>/dev/null); do
        echo "$_c"
        descendants "$_c"
    done
}

kill_wait() {
    kill "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    _n=0
    while kill -0 "$1" 2>/dev/null; do
        _n=$((_n + 1))
        if [ "$_n" -gt $(($2 * 10)) ]; then
            kill -9 "$1" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$1" 2>/dev/null || true
}

kill_tree() {
    _kids=$(descendants "$1")
    # shellcheck disable=SC2086 # a list of pids
    [ -z "$_kids" ] || kill $_kids 2>/dev/null || true
    kill_wait "$1" 5
    for _k in $_kids; do
        if kill -0 "$_k" 2>/dev/null; then kill -9 "$_k" 2>/dev/null || true; fi
    done
}

now_ns() {
    date +%s%N
}
secs() {
    echo "$1 $2" | awk '{printf "%.3f", ($2 - $1) / 1e9}'
}

bench_fs_make() {
    mkdir -p "$1"
    BENCH_FS_ERROR=
    if truncate -s 32G "$2" &&
        mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$2" >"$2.log" 2>&1 &&
        mount -o loop "$2" "$1" 2>>"$2.log"; then
        rm -f "$2.log"
        return 0
    fi
    BENCH_FS_ERROR=$(tail -n 1 "$2.log" 2>/dev/null)
    rm -f "$2" "$2.log"
    return 1
}

bench_fs_drop() {
    umount_under "$1"
    if ! mountpoint -q "$1" 2>/dev/null; then rm -f "$2"; fi
    sync
}
