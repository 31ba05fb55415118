#!/bin/sh
# shellcheck shell=sh disable=SC2317,SC2016 # functions run indirectly: pull_$x, traps; sh -c scripts
# bench/layers.sh: kiln's layer primitives (issue 4, "Benchmark") against the
# floor and the peers. A benchmark, not a test: it prints a table and exits 0
# whether or not the targets are met (non-zero only when something fails).
#
#   meson setup build && ninja -C build
#   bench/layers.sh [BUILD_DIR]          # from the repository root, as root
#   BENCH_RUNS=5 bench/layers.sh /tmp/other-build
#
# BUILD_DIR (default build) holds kiln and bench/layer-bench.
#
# Settings (environment):
#   BENCH_RUNS=N          runs of each measurement; the table shows medians
#                         (default 3); the contenders' order rotates per run
#   BENCH_PULL="..."      pull contenders: kiln floor docker buildah (default all)
#   BENCH_COMMIT=0        skip part (2) (the 1 GB data set)
#   BENCH_COMMIT_MB=N     size of the commit data set in MB (default 1000)
#   KILN_TEST_CACHE=DIR   per-day cache of the base image's OCI layout, shared
#                         with tests/integration/test-build.sh (default
#                         /var/tmp/kiln-test-cache; base-YYYYMMDD is made with
#                         `kiln base` when missing, ~2 min)
#   DOCKERD, DOCKER       default dockerd and /usr/bin/docker (Debian's docker.io)
#   BUILDAH               default buildah
#   BENCH_FS=loop|none    where the trees, stores and data set go: loop (the
#                         default) = a private ext4 file system on a sparse
#                         image in the scratch directory, mounted with -o loop
#                         (see "ext4" below); none = the scratch directory
#   BENCH_KEEP=1          keep the scratch directory (logs)
#   TMPDIR                scratch space (default /var/tmp; 10-12 GB with 3 runs)
#
# (1) pull + unpack of the base image (`kiln base`: one gzip'd layer, ~181 MiB,
#     ~580 MB unpacked) from a loopback docker-registry, into a fresh
#     directory / store each run:
#       kiln    `layer-bench pull-unpack REF DIR`: kiln_transfer_inspect() +
#               kiln_layers_ensure() into a fresh unpacked-layer store (the
#               path `kiln build` takes for its base; ends with syncfs)
#       floor   `curl -s BLOB_URL | pigz -d | tar -x -C DIR` of the same blob;
#               "floor + sync" is the same run up to the end of a `sync` after it
#       docker  `docker pull REF` on a private dockerd started (before the
#               clock) with a fresh --data-root each run (overlay2)
#       buildah `buildah --root R --storage-driver overlay pull` (fresh root)
#     The page cache cannot be dropped here (/proc/sys/vm/drop_caches is not
#     writable in this container): the registry's blob is read from memory
#     in every run after the first. `sync` runs before every timed command.
# (2) commit throughput: a data set of BENCH_COMMIT_MB MB made once (many
#     small text files, some large compressible files, some incompressible
#     random files; deterministic), then `layer-bench commit DIR OUT` (gzip,
#     default options, OUT a file in the scratch directory) against
#     `tar -c -C DIR . | pigz -p 2 | sha256sum`; MB/s of the uncompressed tar
#     (kiln's tar size for both).
# (3) peak RSS (getrusage ru_maxrss = /usr/bin/time %M) of layer-bench in (1)
#     and (2); for context, the peers' pull: dockerd + containerd (VmHWM
#     after the pull; dockerd is fresh each run) and buildah (/usr/bin/time).
#
# ext4: creating files within ~30 s after many were deleted on the same file
# system makes ext4's inode allocator skip each recently deleted inode
# (recently_deleted(), reading inode tables): on a shared machine where other
# jobs delete trees all the time, every extraction (kiln, tar, docker,
# buildah alike) took 5-20 s instead of 3-5 s, all kernel time (perf: ~70% in
# recently_deleted + find_get_block_common). Hence the private file system
# (BENCH_FS=loop), and in part (1) every run of every contender gets a file
# system of its own (pull/WHO-rN, see own_fs), deleted as one image file after
# the run. At exit the file systems are unmounted and their images deleted.
set -eu

BENCH_ROOT=$(pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$BENCH_ROOT/$BUILD ;; esac
KILN=$BUILD/kiln
LAYER_BENCH=$BUILD/bench/layer-bench
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_PULL=${BENCH_PULL:-kiln floor docker buildah}
BENCH_COMMIT=${BENCH_COMMIT:-1}
BENCH_COMMIT_MB=${BENCH_COMMIT_MB:-1000}
DOCKERD=${DOCKERD:-dockerd}
DOCKER=${DOCKER:-/usr/bin/docker}
BUILDAH=${BUILDAH:-buildah}
CACHE=${KILN_TEST_CACHE:-/var/tmp/kiln-test-cache}
LIB=$BENCH_ROOT/tests/integration/lib
PY=/usr/bin/python3
TIME=/usr/bin/time

die() {
    echo "bench/layers.sh: $*" >&2
    exit 1
}
say() {
    echo "bench: $*" >&2
}

[ -f "$LIB/registry.sh" ] || die "run me from the repository root ($LIB/registry.sh missing)"
[ "$(id -u)" -eq 0 ] || die "needs root (dockerd, buildah's overlay storage, kiln base, tar -x with owners)"
[ -x "$KILN" ] || die "no kiln binary at $KILN (build first, or give the build directory)"
[ -x "$LAYER_BENCH" ] || die "no $LAYER_BENCH (add bench/layer-bench to bench/meson.build and build)"
[ -x "$PY" ] || die "$PY not found"
[ -x "$TIME" ] || die "$TIME not found (apt-get install time)"
command -v curl >/dev/null 2>&1 || die "curl not found"
case $BENCH_RUNS in '' | *[!0-9]*) die "BENCH_RUNS must be a number" ;; esac
[ "$BENCH_RUNS" -ge 1 ] || die "BENCH_RUNS must be at least 1"
case $BENCH_COMMIT_MB in '' | *[!0-9]*) die "BENCH_COMMIT_MB must be a number" ;; esac
for x in $BENCH_PULL; do
    case $x in kiln | floor | docker | buildah) ;; *) die "unknown contender '$x' (kiln, floor, docker, buildah)" ;; esac
done
if ! command -v pigz >/dev/null 2>&1; then
    say "installing pigz"
    apt-get install -y pigz >/dev/null 2>&1 || die "pigz missing and apt-get install -y pigz failed"
fi

# shellcheck disable=SC2034 # read by registry.sh
REGISTRY_LIB=$LIB
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib/registry.sh
. "$LIB/registry.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$BENCH_ROOT/bench/lib.sh"
registry_available || die "$REGISTRY_MISSING"

SCRATCH=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-layers.XXXXXX")
RESULTS=$SCRATCH/results
NOTES=$SCRATCH/notes
LOGS=$SCRATCH/logs
mkdir -p "$LOGS"
: >"$RESULTS"
: >"$NOTES"
FAILED=0

# ---- processes and directories we own ---------------------------------------------

DOCKERD_PID=
CUR_PID=

# run_cur CMD...: run CMD in the background and wait (so that a signal runs
# the trap at once, which kills it); sets RC.
run_cur() {
    "$@" &
    CUR_PID=$!
    RC=0
    wait "$CUR_PID" || RC=$?
    CUR_PID=
}

dockerd_stop() {
    [ -n "$DOCKERD_PID" ] || return 0
    _kids=$(descendants "$DOCKERD_PID")
    kill_wait "$DOCKERD_PID" 30
    for _k in $_kids; do
        if kill -0 "$_k" 2>/dev/null; then kill -9 "$_k" 2>/dev/null || true; fi
    done
    DOCKERD_PID=
}

bench_cleanup() {
    set +e
    if [ -n "$CUR_PID" ]; then kill_tree "$CUR_PID"; fi
    dockerd_stop
    registry_cleanup
    umount_under "$SCRATCH"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        say "kept $SCRATCH"
    else
        rm -rf "$SCRATCH"
    fi
}
# registry.sh's traps are replaced: ours stop everything.
trap 'bench_cleanup' EXIT
trap 'bench_cleanup; exit 130' INT
trap 'bench_cleanup; exit 143' TERM
trap 'bench_cleanup; exit 129' HUP

# ---- measuring ----------------------------------------------------------------------

record() { # WHO KEY RUN VALUE
    echo "$1 $2 $3 $4" >>"$RESULTS"
}
note() {
    echo "$*" >>"$NOTES"
    say "$*"
}
fail() { # WHO WHAT LOG
    FAILED=1
    note "$1: $2 failed (log: ${3:-none})"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then
        tail -n 20 "$3" | sed 's/^/bench:   | /' >&2
    fi
}
# field KEY FILE: the value of KEY=VALUE in layer-bench's output line.
field() {
    tr ' ' '\n' <"$2" | sed -n "s/^$1=//p" | tail -n 1
}
# hwm PID: VmHWM in KiB (0 when gone).
hwm() {
    awk '/^VmHWM:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}
# fresh DIR: remove DIR (and mounts below it), then sync, so that the next
# timed command does not pay for earlier writes.
fresh() {
    umount_under "$1"
    rm -rf "$1"
    sync
}
# WORK: where the trees, stores and data go (see "ext4" at the top).
WORK=$SCRATCH
case ${BENCH_FS:-loop} in
loop)
    if bench_fs_make "$SCRATCH/fs" "$SCRATCH/fs.img"; then
        WORK=$SCRATCH/fs
        note "trees and data on a private ext4 file system (loop-mounted sparse image)"
    else
        note "cannot make a loop-mounted ext4 file system ($BENCH_FS_ERROR): using $SCRATCH (noisier)"
    fi
    ;;
none) note "trees and data in $SCRATCH (BENCH_FS=none)" ;;
*) die "BENCH_FS must be loop or none" ;;
esac
PULL=$WORK/pull

# ---- the base image in a loopback registry ------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
registry_start noauth 2>"$LOGS/registry-start.log" ||
    { cat "$LOGS/registry-start.log" >&2; die "cannot start docker-registry"; }
say "registry at $REGISTRY"

mkdir -p "$CACHE"
BASE_LAYOUT=$CACHE/base-$(date -u +%Y%m%d)
(
    flock 9
    if [ ! -f "$BASE_LAYOUT/index.json" ]; then
        say "making the base image with kiln base (~2 minutes) into $BASE_LAYOUT"
        rm -rf "$BASE_LAYOUT.tmp"
        "$KILN" base --oci-dir "$BASE_LAYOUT.tmp:base" --work-dir "$CACHE" -q \
            >"$LOGS/base.log" 2>&1 && mv "$BASE_LAYOUT.tmp" "$BASE_LAYOUT"
    fi
) 9>"$CACHE/base.lock"
[ -f "$BASE_LAYOUT/index.json" ] || { fail base "kiln base" "$LOGS/base.log"; exit 1; }
REF=$REGISTRY/kiln/base:bookworm
"$KILN" push -q --oci-dir "$BASE_LAYOUT:base" "$REF" >"$LOGS/push.out" 2>"$LOGS/push.log" ||
    { fail base "kiln push" "$LOGS/push.log"; exit 1; }
# the layer blob(s) of the manifest
curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$REGISTRY_URL/v2/kiln/base/manifests/bookworm" >"$SCRATCH/manifest.json" ||
    die "cannot read the manifest of $REF"
"$PY" -c 'import json, sys
for l in json.load(open(sys.argv[1]))["layers"]:
    print(l["digest"], l["size"], l["mediaType"])' "$SCRATCH/manifest.json" >"$SCRATCH/layers"
N_LAYERS=$(wc -l <"$SCRATCH/layers")
[ "$N_LAYERS" -eq 1 ] || die "the base image has $N_LAYERS layers; the floor pipeline expects one"
read -r BLOB BLOB_SIZE BLOB_TYPE <"$SCRATCH/layers"
case $BLOB_TYPE in *gzip) ;; *) die "the base layer is $BLOB_TYPE, not gzip" ;; esac
BLOB_URL=$REGISTRY_URL/v2/kiln/base/blobs/$BLOB
say "base image $REF: one layer $BLOB ($BLOB_SIZE bytes)"

# ---- (1) pull + unpack ----------------------------------------------------------------

# own_fs DIR: with BENCH_FS=loop, DIR becomes the root of an ext4 file system
# of its own, made now (before the clock; inode tables written now, not by
# ext4lazyinit during the run) on a sparse image in the scratch directory, so
# that no run inherits another run's file-system state (the dirty data and
# allocator state of gigabytes the previous contenders wrote made later runs
# 30-70% slower, for every contender, in one shared file system). drop_fs DIR
# unmounts it and deletes the image after the run. A plain directory with
# BENCH_FS=none, or when the loop mount fails (with a note).
FS_N=0
FS_IMG=
own_fs() {
    mkdir -p "$1"
    FS_IMG=
    [ "$WORK" != "$SCRATCH" ] || return 0
    FS_N=$((FS_N + 1))
    if bench_fs_make "$1" "$SCRATCH/run-$FS_N.img"; then
        FS_IMG=$SCRATCH/run-$FS_N.img
        return 0
    fi
    note "cannot make a file system for $1 ($BENCH_FS_ERROR): a plain directory"
}
drop_fs() {
    if [ -n "$FS_IMG" ]; then bench_fs_drop "$1" "$FS_IMG"; else umount_under "$1" && sync; fi
    FS_IMG=
}

pull_kiln() {
    own_fs "$PULL/kiln-r$1"
    _d=$PULL/kiln-r$1/store
    sync
    _log=$LOGS/kiln-pull-r$1
    _t0=$(now_ns)
    run_cur "$LAYER_BENCH" pull-unpack "$REF" "$_d" >"$_log.out" 2>"$_log"
    _t1=$(now_ns)
    if [ "$RC" -ne 0 ]; then fail kiln "run $1: layer-bench pull-unpack" "$_log"; return 0; fi
    record kiln pull "$1" "$(secs "$_t0" "$_t1")"
    record kiln pull-rss "$1" "$(field maxrss_kib "$_log.out")"
    record kiln pull-inspect "$1" "$(field inspect "$_log.out")"
    if [ "$1" -eq 1 ]; then
        _ld=$(find "$_d/layers/sha256" -mindepth 1 -maxdepth 1 -type d | head -n 1)
        record kiln entries "$1" "$(find "$_ld" | wc -l)"
    fi
    say "  kiln    run $1 pull + unpack $(secs "$_t0" "$_t1") s, $(($(field maxrss_kib "$_log.out") / 1024)) MiB"
    drop_fs "$PULL/kiln-r$1"
}

pull_floor() {
    own_fs "$PULL/floor-r$1"
    _d=$PULL/floor-r$1/tree
    mkdir -p "$_d"
    sync
    _log=$LOGS/floor-pull-r$1
    _t0=$(now_ns)
    run_cur sh -c 'set -e; curl -sf "$1" | pigz -d | tar -x -C "$2"' sh "$BLOB_URL" "$_d" 2>"$_log"
    _t1=$(now_ns)
    sync
    _t2=$(now_ns)
    if [ "$RC" -ne 0 ]; then fail floor "run $1: curl | pigz -d | tar -x" "$_log"; return 0; fi
    record floor pull "$1" "$(secs "$_t0" "$_t1")"
    record floor pull-sync "$1" "$(secs "$_t0" "$_t2")"
    [ "$1" -ne 1 ] || record floor entries "$1" "$(find "$_d" | wc -l)"
    say "  floor   run $1 pull + unpack $(secs "$_t0" "$_t1") s ($(secs "$_t0" "$_t2") s with sync)"
    drop_fs "$PULL/floor-r$1"
}

docker_cmd() {
    DOCKER_CONFIG=$SCRATCH/docker-config "$DOCKER" -H "unix://$DOCKER_SOCK" "$@"
}

pull_docker() {
    _dir=$PULL/docker-r$1
    own_fs "$_dir"
    mkdir -p "$_dir/data" "$_dir/exec" "$SCRATCH/docker-config"
    echo '{}' >"$_dir/daemon.json"
    _log=$LOGS/docker-pull-r$1
    DOCKER_SOCK=$_dir/docker.sock
    "$DOCKERD" --config-file "$_dir/daemon.json" --data-root "$_dir/data" --exec-root "$_dir/exec" \
        -H "unix://$DOCKER_SOCK" --pidfile "$_dir/dockerd.pid" --iptables=false --ip-masq=false \
        --bridge=none --insecure-registry "$REGISTRY" </dev/null >"$_log.dockerd" 2>&1 &
    DOCKERD_PID=$!
    _n=0
    until docker_cmd version >/dev/null 2>&1; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null || [ "$_n" -gt 600 ]; then
            fail docker "run $1: dockerd start" "$_log.dockerd"
            dockerd_stop
            drop_fs "$_dir"
            return 0
        fi
        _n=$((_n + 1))
        sleep 0.1
    done
    sync
    _t0=$(now_ns)
    run_cur docker_cmd pull -q "$REF" </dev/null >"$_log" 2>&1
    _t1=$(now_ns)
    if [ "$RC" -ne 0 ]; then
        fail docker "run $1: docker pull" "$_log"
    else
        _k=$(hwm "$DOCKERD_PID")
        for _c in $(pgrep -P "$DOCKERD_PID" -x containerd 2>/dev/null); do
            _k=$((_k + $(hwm "$_c")))
        done
        record docker pull "$1" "$(secs "$_t0" "$_t1")"
        record docker pull-rss "$1" "$_k"
        [ "$1" -ne 1 ] || record docker driver "$1" "$(docker_cmd info -f '{{.Driver}}' 2>/dev/null | tr -c 'a-z0-9\n' _)"
        say "  docker  run $1 pull $(secs "$_t0" "$_t1") s, dockerd + containerd $((_k / 1024)) MiB"
    fi
    dockerd_stop
    drop_fs "$_dir"
}

pull_buildah() {
    _dir=$PULL/buildah-r$1
    own_fs "$_dir"
    mkdir -p "$_dir/root" "$_dir/runroot"
    sync
    _log=$LOGS/buildah-pull-r$1
    _t0=$(now_ns)
    run_cur "$TIME" -f %M -o "$_log.rss" "$BUILDAH" --root "$_dir/root" --runroot "$_dir/runroot" \
        --storage-driver overlay pull -q --tls-verify=false "docker://$REF" </dev/null >"$_log" 2>&1
    _t1=$(now_ns)
    if [ "$RC" -ne 0 ]; then
        fail buildah "run $1: buildah pull" "$_log"
    else
        record buildah pull "$1" "$(secs "$_t0" "$_t1")"
        record buildah pull-rss "$1" "$(tail -n 1 "$_log.rss")"
        say "  buildah run $1 pull $(secs "$_t0" "$_t1") s, $(($(tail -n 1 "$_log.rss") / 1024)) MiB"
    fi
    drop_fs "$_dir"
}

PULLERS=
for x in $BENCH_PULL; do
    case $x in
    docker)
        if command -v "$DOCKERD" >/dev/null 2>&1 && [ -x "$DOCKER" ]; then
            PULLERS="$PULLERS docker"
        else
            note "docker: $DOCKERD or $DOCKER not found (apt-get install docker.io): skipped"
        fi
        ;;
    buildah)
        if command -v "$BUILDAH" >/dev/null 2>&1; then
            PULLERS="$PULLERS buildah"
        else
            note "buildah: $BUILDAH not found (apt-get install buildah): skipped"
        fi
        ;;
    *) PULLERS="$PULLERS $x" ;;
    esac
done
PULLERS=${PULLERS# }

# rotate N WORDS...: the words rotated left N times.
rotate() {
    _n=$1
    shift
    while [ "$_n" -gt 0 ]; do
        _f=$1
        shift
        set -- "$@" "$_f"
        _n=$((_n - 1))
    done
    echo "$*"
}

if [ -n "$PULLERS" ]; then
    r=1
    while [ "$r" -le "$BENCH_RUNS" ]; do
        # shellcheck disable=SC2086 # a list of words
        order=$(rotate $((r - 1)) $PULLERS)
        say "(1) pull + unpack, run $r of $BENCH_RUNS: $order"
        for x in $order; do
            "pull_$x" "$r"
        done
        r=$((r + 1))
    done
fi

# the same tree: kiln's unpacked layer has as many entries as tar's
_ke=$(awk '$1 == "kiln" && $2 == "entries" { print $4 }' "$RESULTS")
_fe=$(awk '$1 == "floor" && $2 == "entries" { print $4 }' "$RESULTS")
if [ -n "$_ke" ] && [ -n "$_fe" ] && [ "$_ke" != "$_fe" ]; then
    FAILED=1
    note "kiln's unpacked layer has $_ke entries, tar's tree $_fe"
fi

# ---- (2) commit -----------------------------------------------------------------------

DATA=$WORK/commit-data
make_data() {
    # Deterministic (seeded): ~30% many small text files (256 B - 32 KiB,
    # words from a made-up vocabulary, in directories of 500), ~40% large
    # compressible files (100 MB each, a tenth of the total when smaller:
    # bytes of a skewed 20-symbol alphabet), ~30% incompressible random files
    # (same size).
    "$PY" - "$1" "$2" <<'EOF'
import math, os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) * 1000 * 1000
rng = random.Random(20261125)
os.makedirs(root)
letters = "etaoinshrdlcumwfgypbvkjxqz"
vocab = ["".join(rng.choice(letters[:12 + i % 14]) for _ in range(2 + rng.randrange(9)))
         for i in range(5000)]
words = rng.choices(vocab, k=1200000)
lines, cur = [], []
for w in words:
    cur.append(w)
    if sum(len(x) + 1 for x in cur) > 60 + rng.randrange(20):
        lines.append("    " * rng.randrange(4) + " ".join(cur))
        cur = []
corpus = ("\n".join(lines) + "\n").encode()
# small text files
small, n, budget = 0, 0, total * 3 // 10
while small < budget:
    d = os.path.join(root, "src", "d%03d" % (n // 500))
    if n % 500 == 0:
        os.makedirs(d)
    size = int(math.exp(rng.uniform(math.log(256), math.log(32768))))
    off = rng.randrange(len(corpus) - size)
    with open(os.path.join(d, "f%05d.txt" % n), "wb") as f:
        f.write(corpus[off:off + size])
    small += size
    n += 1
chunk = 4 << 20
# large compressible files
table = bytes(rng.choices(range(20), weights=[2 ** -(i / 3) for i in range(20)], k=256))
os.makedirs(os.path.join(root, "data"))
big = min(100 * 1000 * 1000, total // 10)
i = 0
while (i + 1) * big <= total * 4 // 10:
    with open(os.path.join(root, "data", "big%d.bin" % i), "wb") as f:
        left = big
        while left:
            m = min(chunk, left)
            f.write(rng.randbytes(m).translate(table))
            left -= m
    i += 1
# incompressible files
os.makedirs(os.path.join(root, "random"))
left_all, i = total - small - i * big, 0
while left_all > 0:
    size = min(big, left_all)
    with open(os.path.join(root, "random", "r%d.bin" % i), "wb") as f:
        left = size
        while left:
            m = min(chunk, left)
            f.write(rng.randbytes(m))
            left -= m
    left_all -= size
    i += 1
print(n)
EOF
}

commit_kiln() {
    _out=$WORK/commit-kiln.tar.gz
    fresh "$_out"
    _log=$LOGS/kiln-commit-r$1
    _t0=$(now_ns)
    run_cur "$LAYER_BENCH" commit "$DATA" "$_out" >"$_log.out" 2>"$_log"
    _t1=$(now_ns)
    if [ "$RC" -ne 0 ]; then fail kiln "run $1: layer-bench commit" "$_log"; return 0; fi
    record kiln commit "$1" "$(secs "$_t0" "$_t1")"
    record kiln commit-rss "$1" "$(field maxrss_kib "$_log.out")"
    record kiln commit-input "$1" "$(field input "$_log.out")"
    record kiln commit-output "$1" "$(field output "$_log.out")"
    if [ "$1" -eq 1 ]; then
        gzip -t "$_out" 2>>"$_log" || fail kiln "run $1: gzip -t of the committed layer" "$_log"
    fi
    say "  kiln    run $1 commit $(secs "$_t0" "$_t1") s ($(field mbps "$_log.out") MB/s), $(($(field maxrss_kib "$_log.out") / 1024)) MiB"
    fresh "$_out"
}

commit_pigz() {
    _log=$LOGS/pigz-commit-r$1
    sync
    _t0=$(now_ns)
    run_cur sh -c 'set -e; tar -c -C "$1" . | pigz -p 2 | sha256sum' sh "$DATA" >"$_log.out" 2>"$_log"
    _t1=$(now_ns)
    if [ "$RC" -ne 0 ]; then fail pigz "run $1: tar -c | pigz -p 2 | sha256sum" "$_log"; return 0; fi
    record pigz commit "$1" "$(secs "$_t0" "$_t1")"
    say "  pigz    run $1 commit $(secs "$_t0" "$_t1") s"
}

if [ "$BENCH_COMMIT" != 0 ]; then
    say "(2) making the $BENCH_COMMIT_MB MB commit data set"
    _t0=$(now_ns)
    run_cur make_data "$DATA" "$BENCH_COMMIT_MB" >"$LOGS/data.out" 2>"$LOGS/data.log"
    [ "$RC" -eq 0 ] || { fail data "making the data set" "$LOGS/data.log"; exit 1; }
    _files=$(find "$DATA" -type f | wc -l)
    _bytes=$(du -sb "$DATA" | cut -f1)
    note "commit data set: $_files files, $_bytes bytes ($(tail -n 1 "$LOGS/data.out") small text files; made in $(secs "$_t0" "$(now_ns)") s)"
    r=1
    while [ "$r" -le "$BENCH_RUNS" ]; do
        order=$(rotate $((r - 1)) kiln pigz)
        say "(2) commit, run $r of $BENCH_RUNS: $order"
        for x in $order; do
            "commit_$x" "$r"
        done
        r=$((r + 1))
    done
    # the pipeline's compressed size, once, untimed
    _sz=$(tar -c -C "$DATA" . | pigz -p 2 | wc -c)
    record pigz commit-output 1 "$_sz"
    fresh "$DATA"
fi

# ---- the table --------------------------------------------------------------------------

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
"$PY" - "$RESULTS" "$NOTES" "$BENCH_RUNS" "$LOAD_BEFORE" "$LOAD_AFTER" "$BLOB_SIZE" <<'EOF'
import collections, statistics, sys
results, notes, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
blob_size = int(sys.argv[6])
vals = collections.defaultdict(list)
for line in open(results):
    who, key, r, v = line.split()
    try:
        vals[(who, key)].append(float(v))
    except ValueError:
        vals[(who, key + ":text")].append(v)

def med(who, key):
    v = vals.get((who, key))
    return statistics.median(v) if v else None

def peak(who, key):
    v = vals.get((who, key))
    return max(v) / 1024 if v else None

def s(x):
    return "n/a" if x is None else "%.2f s" % x

def ratio(a, b):
    return a / b if a is not None and b else None

def rx(x):
    return "n/a" if x is None else "%.2fx" % x

def verdict(ok):
    return "" if ok is None else (" (met)" if ok else " (missed)")

k, f, fs = med("kiln", "pull"), med("floor", "pull"), med("floor", "pull-sync")
d, b = med("docker", "pull"), med("buildah", "pull")
kc, pc = med("kiln", "commit"), med("pigz", "commit")
inp = med("kiln", "commit-input")
kr, kcr = peak("kiln", "pull-rss"), peak("kiln", "commit-rss")
dr, br = peak("docker", "pull-rss"), peak("buildah", "pull-rss")
mbps = lambda t: None if t is None or inp is None else inp / 1e6 / t

print("kiln layers: pull + unpack of the base image (%.1f MiB gzip'd layer) and commit;"
      % (blob_size / 1048576))
print("medians of %d run(s); peak RSS = the largest of all runs" % runs)
print()
print("| benchmark | kiln | reference | kiln vs reference | target | peers |")
print("|---|---|---|---|---|---|")
r1 = ratio(k, f)
print("| (1) pull + unpack | %s | %s (`curl \\| pigz -d \\| tar -x`); %s with `sync` | **%s** (%s vs floor + sync) | <= 1.3x the floor%s | docker pull %s (%s), buildah pull %s (%s) |" % (
    s(k), s(f), s(fs), rx(r1), rx(ratio(k, fs)), verdict(None if r1 is None else r1 <= 1.3),
    s(d), rx(ratio(d, f)), s(b), rx(ratio(b, f))))
r2 = ratio(pc, kc)
print("| (2) commit %.0f MB | %s MB/s (%s) | %s MB/s (%s, `tar -c \\| pigz -p 2 \\| sha256sum`) | **%s** | >= 1.3x pigz%s | |" % (
    (inp or 0) / 1e6, "n/a" if mbps(kc) is None else "%.1f" % mbps(kc), s(kc),
    "n/a" if mbps(pc) is None else "%.1f" % mbps(pc), s(pc), rx(r2),
    verdict(None if r2 is None else r2 >= 1.3)))
def mib(x):
    return "n/a" if x is None else "%.1f MiB" % x
print("| (3) peak RSS, pull + unpack | %s | | | <= 64 MiB%s | dockerd + containerd %s, buildah %s |" % (
    mib(kr), verdict(None if kr is None else kr <= 64), mib(dr), mib(br)))
print("| (3) peak RSS, commit | %s | | | <= 64 MiB%s | |" % (
    mib(kcr), verdict(None if kcr is None else kcr <= 64)))
print()
print("load average before: %s, after: %s" % (sys.argv[4], sys.argv[5]))
print()
print("all runs:")
for who, key, unit in (("kiln", "pull", "s"), ("kiln", "pull-inspect", "s"), ("floor", "pull", "s"),
                       ("floor", "pull-sync", "s"), ("docker", "pull", "s"), ("buildah", "pull", "s"),
                       ("kiln", "commit", "s"), ("pigz", "commit", "s"),
                       ("kiln", "pull-rss", "k"), ("kiln", "commit-rss", "k"),
                       ("docker", "pull-rss", "k"), ("buildah", "pull-rss", "k")):
    v = vals.get((who, key), [])
    if v:
        txt = "  ".join(("%.2f" % x) if unit == "s" else ("%.1f MiB" % (x / 1024)) for x in v)
        print("  %-8s %-13s %s" % (who, key, txt))
ko, po = med("kiln", "commit-output"), med("pigz", "commit-output")
if inp and ko:
    print("  commit sizes: tar %d bytes -> kiln %d (%.3f), pigz -6 %s" % (
        inp, ko, ko / inp, "%d (%.3f)" % (po, po / inp) if po else "n/a"))
ke, fe = med("kiln", "entries"), med("floor", "entries")
if ke and fe:
    print("  unpacked entries (find | wc -l): kiln %d, floor %d" % (ke, fe))
drv = vals.get(("docker", "driver:text"))
if drv:
    print("  docker storage driver: %s" % drv[0])
text = open(notes).read().strip()
if text:
    print()
    print("notes:")
    for line in text.splitlines():
        print("  " + line)
EOF

exit "$FAILED"
