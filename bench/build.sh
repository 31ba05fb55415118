#!/bin/sh
# shellcheck shell=sh disable=SC2317 # functions run indirectly: run_$b, traps
# bench/build.sh: `kiln build` against BuildKit (a private dockerd) and
# buildah on the same spec, base image, mirror and machine. A benchmark, not
# a test: it prints a table and exits 0 whether or not the targets are met
# (non-zero only when something fails).
#
#   meson setup build && ninja -C build
#   bench/build.sh                          # from the repository root, as root
#   BENCH_RUNS=5 BENCH_BASE_LAYOUT=/var/tmp/kiln-bench-base bench/build.sh
#
# Settings (environment):
#   KILN=PATH             kiln binary (default build/kiln)
#   BENCH_RUNS=N          runs per builder; the table shows medians (default 3)
#   BENCH_BUILDERS="..."  which columns to measure: kiln buildkit buildah
#                         (default all three)
#   BENCH_BASE_LAYOUT=DIR[:NAME]  cache of the base image's OCI layout: when
#                         DIR/index.json exists it is pushed with `kiln push`,
#                         else `kiln base` makes it there (~1-2 min) and it is
#                         kept for the next run (default: made in the scratch
#                         directory and removed)
#   KILN_BUILD_ARGS="..." extra arguments for `kiln build`
#   DOCKERD, DOCKER       default dockerd and /usr/bin/docker (Debian's
#                         docker.io 20.10; another docker client may lack
#                         BuildKit support)
#   BUILDAH               default buildah
#   BENCH_KEEP=1          keep the scratch directory (logs, Dockerfiles)
#   TMPDIR                scratch space: builders' stores, the registry, the
#                         base image (~5 GB; default /var/tmp)
#   BENCH_FS=loop|none    where each run's store goes: loop (default: a fresh
#                         ext4 file system made for that one run, a sparse
#                         image in the scratch directory mounted with -o loop,
#                         unmounted and deleted after it) or none (a directory
#                         in the scratch directory)
#   BENCH_SETTLE=SECONDS  pause after each run's clean-up (default 3)
#
# The workload, the same for every builder: a loopback docker-registry
# (tests/integration/lib/registry.sh) holding the JupyterHub base image
# (`kiln base`) as $REGISTRY/kiln/base:bookworm; a loopback pip index
# (tests/integration/lib/wheelhouse.sh) with kilntest-hello 1.0 and 1.1; spec
# A = that base + apt `curl jq` + pip kilntest-hello==1.0, spec B = the same
# with kilntest-hello==1.1. kiln builds the spec with its pip index pointed at
# the wheelhouse (KILN_PIP_INDEX_URL); the peers build `kiln dockerfile SPEC`
# with `ARG PIP_INDEX_URL` and `ARG PIP_TRUSTED_HOST` added after FROM and
# passed as --build-arg. apt reaches Debian's mirror (host network).
#
# One run of one builder (the builders' order rotates from run to run):
#   cold   fresh store (kiln --data-dir, dockerd --data-root, buildah --root;
#          dockerd is started before the clock starts), build spec A + push
#   noop   build spec A again + push (everything cached)
#   pip    build spec B + push (only the pip step changes)
# then the store is deleted. With BENCH_FS=loop (the default) every run of
# every builder starts on a file system of its own, made just before it: an
# earlier run's deletions (hundreds of thousands of files) cannot slow down
# the next one's file creation, which made cold builds on a shared ext4 vary
# by a factor of 1.5. Each run pushes to its own repository
# (bench/BUILDER-rN:cold|noop|pip), so no run finds its layers in the registry
# from an earlier one; every builder finds the base there. Times are wall
# clock (date +%s%N) of build + push; `sync` runs before each. Every push is
# checked (the registry serves the tag, with at least 3 layers) and so is
# pip's use of the wheelhouse (its request log).
#
# Peak RSS (VmHWM, sampled from /proc every 0.1 s by a Python sampler that is
# started, and up, before the clock starts) of the builder itself, not
# of the apt and pip processes the builds run: kiln = the `kiln build`
# process; BuildKit = dockerd (BuildKit runs inside it) + the containerd it
# starts, over the whole run; buildah = the `buildah bud` / `buildah push`
# process, the larger. kiln's no-op build is shorter than the sampling period:
# its peak comes from one more, untimed, no-op build under /usr/bin/time
# (ru_maxrss, exact), and counts in kiln's peak.
set -eu

BENCH_ROOT=$(pwd)
KILN=${KILN:-build/kiln}
case $KILN in /*) ;; *) KILN=$BENCH_ROOT/$KILN ;; esac
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_BUILDERS=${BENCH_BUILDERS:-kiln buildkit buildah}
BENCH_BASE_LAYOUT=${BENCH_BASE_LAYOUT:-}
KILN_BUILD_ARGS=${KILN_BUILD_ARGS:-}
DOCKERD=${DOCKERD:-dockerd}
DOCKER=${DOCKER:-/usr/bin/docker}
BUILDAH=${BUILDAH:-buildah}
LIB=$BENCH_ROOT/tests/integration/lib
PY=/usr/bin/python3

die() {
    echo "bench/build.sh: $*" >&2
    exit 1
}
say() {
    echo "bench: $*" >&2
}

if [ ! -f "$LIB/registry.sh" ] || [ ! -f "$LIB/wheelhouse.sh" ]; then
    die "run me from the repository root ($LIB/registry.sh or wheelhouse.sh missing)"
fi
[ -x "$KILN" ] || die "no kiln binary at $KILN (build first, or set KILN=)"
[ "$(id -u)" -eq 0 ] || die "needs root (dockerd, buildah's overlay storage, kiln base and build)"
[ -x "$PY" ] || die "$PY not found"
command -v curl >/dev/null 2>&1 || die "curl not found"
case $BENCH_RUNS in '' | *[!0-9]*) die "BENCH_RUNS must be a number" ;; esac
[ "$BENCH_RUNS" -ge 1 ] || die "BENCH_RUNS must be at least 1"
for b in $BENCH_BUILDERS; do
    case $b in kiln | buildkit | buildah) ;; *) die "unknown builder '$b' (kiln, buildkit, buildah)" ;; esac
done

REGISTRY_LIB=$LIB
WHEELHOUSE_LIB=$LIB
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib/registry.sh
. "$LIB/registry.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib/wheelhouse.sh
. "$LIB/wheelhouse.sh"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$BENCH_ROOT/bench/lib.sh"
registry_available || die "$REGISTRY_MISSING"
wheelhouse_available || die "$WHEELHOUSE_MISSING"

SCRATCH=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-build.XXXXXX")
RESULTS=$SCRATCH/results
NOTES=$SCRATCH/notes
LOGS=$SCRATCH/logs
mkdir -p "$LOGS"
: >"$RESULTS"
: >"$NOTES"
FAILED=0

# ---- processes and directories we own ---------------------------------------------

DOCKERD_PID=
SAMPLER_PIDS=

# The builder command running now: started in the background and waited for
# (wait_cur), so that a signal runs the trap at once; the trap kills it.
CUR_PID=
wait_cur() { # sets RC
    RC=0
    wait "$CUR_PID" || RC=$?
    CUR_PID=
}

dockerd_stop() {
    [ -n "$DOCKERD_PID" ] || return 0
    _kids=$(descendants "$DOCKERD_PID")
    kill_wait "$DOCKERD_PID" 30
    # its containerd (and shims) normally go with it; not after a SIGKILL
    for _k in $_kids; do
        if kill -0 "$_k" 2>/dev/null; then kill -9 "$_k" 2>/dev/null || true; fi
    done
    DOCKERD_PID=
}

samplers_stop() {
    for _s in $SAMPLER_PIDS; do
        kill_wait "$_s" 2
    done
    SAMPLER_PIDS=
}

bench_cleanup() {
    set +e
    if [ -n "$CUR_PID" ]; then kill_tree "$CUR_PID"; fi
    samplers_stop
    dockerd_stop
    wheelhouse_cleanup
    registry_cleanup
    umount_under "$SCRATCH"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        say "kept $SCRATCH"
    else
        rm -rf "$SCRATCH"
    fi
}
# registry.sh's and wheelhouse.sh's traps are replaced: ours stop everything.
trap 'bench_cleanup' EXIT
trap 'bench_cleanup; exit 130' INT
trap 'bench_cleanup; exit 143' TERM
trap 'bench_cleanup; exit 129' HUP

# ---- a fresh file system per run ------------------------------------------------------

BENCH_FS=${BENCH_FS:-loop}
BENCH_SETTLE=${BENCH_SETTLE:-3}
case $BENCH_FS in loop | none) ;; *) die "BENCH_FS must be loop or none" ;; esac
case $BENCH_SETTLE in '' | *[!0-9]*) die "BENCH_SETTLE must be a number of seconds" ;; esac

# fs_fresh DIR: DIR is an empty directory; with BENCH_FS=loop, the root of a
# new ext4 file system (inode tables written now, not by ext4lazyinit during
# the run). Falls back to a plain directory, with a note, when that fails.
fs_fresh() {
    rm -rf "$1"
    mkdir -p "$1"
    [ "$BENCH_FS" = loop ] || return 0
    bench_fs_make "$1" "$1.img" ||
        note "cannot make a loop-mounted ext4 file system for $1 ($BENCH_FS_ERROR): a plain directory"
}

# fs_drop DIR: unmounts whatever is at or below DIR, removes it (and its
# image), syncs and pauses BENCH_SETTLE seconds.
fs_drop() {
    bench_fs_drop "$1" "$1.img"
    rm -rf "$1"
    sleep "$BENCH_SETTLE"
}

# ---- measuring ----------------------------------------------------------------------


cat >"$SCRATCH/rss.py" <<'EOF'
# rss.py OUT COMMS ROOT...: every 0.1 s, the sum of VmHWM (KiB) over the roots
# and, when COMMS is not "-", their descendants whose comm is in COMMS
# (comma-separated); the largest sum so far is rewritten to OUT. Ends when no
# root is alive (a zombie has no VmHWM) or on SIGTERM. ROOT "@FIFO": creates
# OUT.ready once started, then reads the root pids from FIFO, so that the
# interpreter's start-up is over before the measured command starts.
import os, signal, sys, time
out, comms, roots = sys.argv[1], sys.argv[2], sys.argv[3:]
comms = None if comms == "-" else set(comms.split(","))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
if len(roots) == 1 and roots[0].startswith("@"):
    open(out + ".ready", "w").close()
    with open(roots[0][1:]) as f:
        roots = f.read().split()
roots = [int(p) for p in roots]
peak, best = {}, -1

def hwm(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

def tree():
    kids, names = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        name, rest = s[s.index("(") + 1:s.rindex(")")], s[s.rindex(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(d))
        names[int(d)] = name
    found, todo = [], list(roots)
    while todo:
        for c in kids.get(todo.pop(), []):
            if names.get(c) in comms:
                found.append(c)
            todo.append(c)
    return found

while True:
    alive = False
    pids = list(roots) + (tree() if comms else [])
    for p in pids:
        v = hwm(p)
        if v is not None:
            peak[p] = max(peak.get(p, 0), v)
            alive = alive or p in roots
    total = sum(peak.values())
    if total > best:
        best = total
        with open(out + ".tmp", "w") as f:
            f.write("%d\n" % best)
        os.replace(out + ".tmp", out)
    if not alive:
        break
    time.sleep(0.1)
EOF

# sampler_start OUT COMMS PID...: starts rss.py in the background.
sampler_start() {
    rm -f "$1"
    "$PY" "$SCRATCH/rss.py" "$@" </dev/null >/dev/null 2>&1 &
    SAMPLER_PIDS="$SAMPLER_PIDS $!"
    SAMPLER_PID=$!
}
# sampler_ready OUT COMMS: starts rss.py and waits until Python is up; the
# pids to watch go to sampler_go later. Used for commands that last tens of
# milliseconds (a no-op rebuild), whose clock must not include a Python
# interpreter starting on the other CPU.
sampler_ready() {
    rm -f "$1" "$1.ready" "$1.fifo"
    mkfifo "$1.fifo"
    sampler_start "$1" "$2" "@$1.fifo"
    _n=0
    while [ ! -e "$1.ready" ] && [ "$_n" -lt 100 ]; do
        sleep 0.02
        _n=$((_n + 1))
    done
}
sampler_go() { # OUT PID...
    _f=$1.fifo
    shift
    echo "$@" >"$_f"
}
# sampler_wait: waits for the last sampler (its roots have ended).
sampler_wait() {
    wait "$SAMPLER_PID" 2>/dev/null || true
    _left=
    for _s in $SAMPLER_PIDS; do
        [ "$_s" = "$SAMPLER_PID" ] || _left="$_left $_s"
    done
    SAMPLER_PIDS=$_left
}
read_kib() {
    if [ -s "$1" ]; then cat "$1"; else echo 0; fi
}

record() { # BUILDER KEY RUN VALUE
    echo "$1 $2 $3 $4" >>"$RESULTS"
}
note() {
    echo "$*" >>"$NOTES"
    say "$*"
}
fail() { # BUILDER WHAT LOG
    FAILED=1
    note "$1: $2 failed (log: ${3:-none})"
    if [ -n "${3:-}" ] && [ -f "$3" ]; then
        tail -n 25 "$3" | sed 's/^/bench:   | /' >&2
    fi
}

# check_push BUILDER SCENARIO RUN REPO TAG: the registry serves the tag and it
# has at least 3 layers (base, apt, pip).
check_push() {
    _layers=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "$REGISTRY_URL/v2/$4/manifests/$5" |
        "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["layers"]))' 2>/dev/null) || _layers=0
    record "$1" "$2-layers" "$3" "$_layers"
    if [ "$_layers" -lt 3 ]; then
        FAILED=1
        note "$1 run $3 $2: $REGISTRY/$4:$5 has $_layers layers (want >= 3)"
        return 1
    fi
}

# wheel_gets VERSION: how often pip fetched kilntest-hello VERSION's wheel.
wheel_gets() {
    grep -c "GET /simple/kilntest-hello/kilntest_hello-$1-py3-none-any.whl" "$WHEELHOUSE_LOG" 2>/dev/null || true
}
# check_pip BUILDER SCENARIO RUN VERSION BEFORE: pip got the wheel from us.
check_pip() {
    _after=$(wheel_gets "$4")
    if [ "$_after" -le "$5" ]; then
        note "$1 run $3 $2: pip did not fetch kilntest-hello $4 from the wheelhouse"
    fi
}

# ---- the workload ---------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
registry_start noauth 2>"$LOGS/registry-start.log" || { cat "$LOGS/registry-start.log" >&2; die "cannot start docker-registry"; }
say "registry at $REGISTRY"

wheelhouse_make "$SCRATCH/wheelhouse" kilntest-hello==1.0 kilntest-hello==1.1 >/dev/null ||
    die "cannot make the wheelhouse"
wheelhouse_start "$SCRATCH/wheelhouse" 2>"$LOGS/wheelhouse-start.log" ||
    { cat "$LOGS/wheelhouse-start.log" >&2; die "cannot start the wheelhouse"; }
say "wheelhouse at $WHEELHOUSE_URL"

BASE_REF=$REGISTRY/kiln/base:bookworm
if [ -n "$BENCH_BASE_LAYOUT" ]; then
    case $BENCH_BASE_LAYOUT in
    *:*) BASE_DIR=${BENCH_BASE_LAYOUT%%:*} BASE_OCI=$BENCH_BASE_LAYOUT ;;
    *) BASE_DIR=$BENCH_BASE_LAYOUT BASE_OCI=$BENCH_BASE_LAYOUT:base ;;
    esac
else
    BASE_DIR=$SCRATCH/base-layout BASE_OCI=$SCRATCH/base-layout:base
fi
if [ -f "$BASE_DIR/index.json" ]; then
    say "pushing the cached base image from $BASE_DIR"
    "$KILN" push -q --oci-dir "$BASE_OCI" --insecure-registry "$REGISTRY" "$BASE_REF" \
        >"$LOGS/base.out" 2>"$LOGS/base.log" || { fail base "kiln push" "$LOGS/base.log"; exit 1; }
else
    say "making the base image with kiln base (1-2 minutes) into $BASE_DIR"
    mkdir -p "$SCRATCH/base-work"
    "$KILN" base --push "$BASE_REF" --oci-dir "$BASE_OCI" --work-dir "$SCRATCH/base-work" \
        --insecure-registry "$REGISTRY" -q >"$LOGS/base.out" 2>"$LOGS/base.log" ||
        { fail base "kiln base" "$LOGS/base.log"; exit 1; }
    rm -rf "$SCRATCH/base-work"
fi
BASE_DIGEST=$(tail -n 1 "$LOGS/base.out")
say "base image $BASE_REF ($BASE_DIGEST)"

spec_version() { # a|b: the pip package's version in that spec
    case $1 in a) echo 1.0 ;; b) echo 1.1 ;; esac
}
for s in a b; do
    cat >"$SCRATCH/spec-$s.yaml" <<EOF
name: bench
description: bench/build.sh workload
baseImage: $BASE_REF
packages:
  apt: [curl, jq]
  pip: [kilntest-hello==$(spec_version "$s")]
EOF
    mkdir -p "$SCRATCH/ctx-$s"
    "$KILN" dockerfile "$SCRATCH/spec-$s.yaml" --base-user jovyan >"$SCRATCH/ctx-$s/Dockerfile.kiln" ||
        die "kiln dockerfile failed"
    awk '{ print } /^FROM / && !done { print "ARG PIP_INDEX_URL"; print "ARG PIP_TRUSTED_HOST"; done = 1 }' \
        "$SCRATCH/ctx-$s/Dockerfile.kiln" >"$SCRATCH/ctx-$s/Dockerfile"
    rm -f "$SCRATCH/ctx-$s/Dockerfile.kiln"
done

# ---- the builders -----------------------------------------------------------------------
# Each run_BUILDER RUN does cold, noop and pip and records
#   BUILDER cold|noop|pip RUN SECONDS   and   BUILDER rss RUN KIB

# kiln_build SPEC REF DATA_DIR LOG: the build command (kiln build's CLI is young:
# adjust here). Its last stdout line must be REF@sha256:...
kiln_build() {
    # shellcheck disable=SC2086 # KILN_BUILD_ARGS is split on purpose
    KILN_PIP_INDEX_URL=$WHEELHOUSE_URL KILN_PIP_TRUSTED_HOST=$WHEELHOUSE \
        "$KILN" build "$1" --push --tag "$2" --data-dir "$3" \
        --insecure-registry "$REGISTRY" $KILN_BUILD_ARGS </dev/null >"$4.out" 2>"$4" &
    CUR_PID=$!
    sampler_go "$4.rss" "$CUR_PID"
    wait_cur
    # the clock stops when kiln exits, not when the RSS sampler (0.1 s polls) notices
    KILN_T1=$(now_ns)
    _rc=$RC
    sampler_wait
    [ "$_rc" -eq 0 ] || return "$_rc"
    _last=$(tail -n 1 "$4.out")
    case $_last in
    "$2@sha256:"*) return 0 ;;
    *)
        echo "bench: last stdout line is '$_last', not $2@sha256:..." >>"$4"
        return 1
        ;;
    esac
}

kiln_available() {
    "$KILN" build --help >/dev/null 2>&1
}

run_kiln() {
    _r=$1
    _data=$SCRATCH/kiln-r$_r
    _repo=bench/kiln-r$_r
    _rss=0
    fs_fresh "$_data"
    for _sc in cold:a noop:a pip:b; do
        _name=${_sc%%:*}
        _spec=${_sc#*:}
        _ver=$(spec_version "$_spec")
        _log=$LOGS/kiln-r$_r-$_name.log
        _gets=$(wheel_gets "$_ver")
        sampler_ready "$_log.rss" -
        sync
        _t0=$(now_ns)
        if ! kiln_build "$SCRATCH/spec-$_spec.yaml" "$REGISTRY/$_repo:$_name" "$_data" "$_log"; then
            fail kiln "run $_r $_name: kiln build" "$_log"
            break
        fi
        _t1=$KILN_T1
        record kiln "$_name" "$_r" "$(secs "$_t0" "$_t1")"
        _k=$(read_kib "$_log.rss")
        if [ "$_k" -gt "$_rss" ]; then _rss=$_k; fi
        check_push kiln "$_name" "$_r" "$_repo" "$_name" || true
        [ "$_name" = noop ] || check_pip kiln "$_name" "$_r" "$_ver" "$_gets"
        say "  kiln     run $_r $_name $(secs "$_t0" "$_t1") s, kiln $((_k / 1024)) MiB"
    done
    # A no-op build lasts ~20 ms, less than the sampler's 0.1 s period: its peak
    # is taken exactly (ru_maxrss through /usr/bin/time) from one more no-op
    # build, outside the clock.
    if [ -x /usr/bin/time ]; then
        _log=$LOGS/kiln-r$_r-noop-rss.log
        if KILN_PIP_INDEX_URL=$WHEELHOUSE_URL KILN_PIP_TRUSTED_HOST=$WHEELHOUSE \
            /usr/bin/time -f %M -o "$_log.kib" "$KILN" build "$SCRATCH/spec-b.yaml" --push \
            --tag "$REGISTRY/$_repo:pip" --data-dir "$_data" --insecure-registry "$REGISTRY" \
            $KILN_BUILD_ARGS </dev/null >"$_log.out" 2>"$_log" &&
            grep -q '(0 steps run' "$_log"; then
            _k=$(tail -n 1 "$_log.kib")
            say "  kiln     run $_r noop (untimed, exact peak RSS) kiln $((_k / 1024)) MiB"
            record kiln noop-rss "$_r" "$_k"
            if [ "$_k" -gt "$_rss" ]; then _rss=$_k; fi
        else
            note "kiln run $_r: the untimed no-op build for its exact peak RSS failed (log: $_log)"
        fi
    fi
    record kiln rss "$_r" "$_rss"
    fs_drop "$_data"
}

# docker_cmd ARGS...: Debian's docker client against our dockerd.
docker_cmd() {
    DOCKER_BUILDKIT=1 DOCKER_CONFIG=$SCRATCH/docker-config "$DOCKER" -H "unix://$DOCKER_SOCK" "$@"
}

dockerd_start() { # DIR
    mkdir -p "$1/data" "$1/exec" "$SCRATCH/docker-config"
    echo '{}' >"$1/daemon.json"
    DOCKER_SOCK=$1/docker.sock
    "$DOCKERD" --config-file "$1/daemon.json" --data-root "$1/data" --exec-root "$1/exec" \
        -H "unix://$DOCKER_SOCK" --pidfile "$1/dockerd.pid" --iptables=false --ip-masq=false \
        --bridge=none --insecure-registry "$REGISTRY" </dev/null >"$1/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    _n=0
    until docker_cmd version >/dev/null 2>&1; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null || [ "$_n" -gt 600 ]; then
            fail buildkit "dockerd start" "$1/dockerd.log"
            dockerd_stop
            return 1
        fi
        _n=$((_n + 1))
        sleep 0.1
    done
}

# buildkit_steps LOG: "from|apt|pip SECONDS" for the steps BuildKit ran (not
# the cached ones), from its plain progress output.
buildkit_steps() {
    awk '/^#[0-9]+ \[[0-9]+\/[0-9]+\] FROM / { k[$1] = "from" }
        /^#[0-9]+ \[[0-9]+\/[0-9]+\] RUN .*DEBIAN_FRONTEND/ { k[$1] = "apt" }
        /^#[0-9]+ \[[0-9]+\/[0-9]+\] RUN .*PIP_BREAK_SYSTEM_PACKAGES/ { k[$1] = "pip" }
        /^#[0-9]+ DONE [0-9.]+s$/ { if ($1 in k) { v = $3; sub(/s$/, "", v); print k[$1], v } }' "$1"
}

run_buildkit() {
    _r=$1
    _dir=$SCRATCH/docker-r$_r
    _repo=bench/buildkit-r$_r
    fs_fresh "$_dir"
    dockerd_start "$_dir" || { fs_drop "$_dir"; return 0; }
    sampler_start "$_dir/rss" dockerd,containerd "$DOCKERD_PID"
    for _sc in cold:a noop:a pip:b; do
        _name=${_sc%%:*}
        _spec=${_sc#*:}
        _ver=$(spec_version "$_spec")
        _log=$LOGS/buildkit-r$_r-$_name.log
        _ref=$REGISTRY/$_repo:$_name
        _gets=$(wheel_gets "$_ver")
        sync
        _t0=$(now_ns)
        docker_cmd build --progress plain --network host \
            --build-arg "PIP_INDEX_URL=$WHEELHOUSE_URL" --build-arg "PIP_TRUSTED_HOST=$WHEELHOUSE" \
            -t "$_ref" "$SCRATCH/ctx-$_spec" </dev/null >"$_log" 2>&1 &
        CUR_PID=$!
        wait_cur
        if [ "$RC" -ne 0 ]; then
            fail buildkit "run $_r $_name: docker build" "$_log"
            break
        fi
        _t1=$(now_ns)
        docker_cmd push "$_ref" </dev/null >>"$_log" 2>&1 &
        CUR_PID=$!
        wait_cur
        if [ "$RC" -ne 0 ]; then
            fail buildkit "run $_r $_name: docker push" "$_log"
            break
        fi
        _t2=$(now_ns)
        record buildkit "$_name" "$_r" "$(secs "$_t0" "$_t2")"
        record buildkit "$_name-build" "$_r" "$(secs "$_t0" "$_t1")"
        record buildkit "$_name-push" "$_r" "$(secs "$_t1" "$_t2")"
        buildkit_steps "$_log" | while read -r _k _v; do record buildkit "$_name-$_k" "$_r" "$_v"; done
        check_push buildkit "$_name" "$_r" "$_repo" "$_name" || true
        [ "$_name" = noop ] || check_pip buildkit "$_name" "$_r" "$_ver" "$_gets"
        say "  buildkit run $_r $_name $(secs "$_t0" "$_t2") s (build $(secs "$_t0" "$_t1") + push $(secs "$_t1" "$_t2"))"
    done
    samplers_stop
    record buildkit rss "$_r" "$(read_kib "$_dir/rss")"
    cp "$_dir/dockerd.log" "$LOGS/dockerd-r$_r.log" 2>/dev/null || true
    dockerd_stop
    fs_drop "$_dir"
}

run_buildah() {
    _r=$1
    _dir=$SCRATCH/buildah-r$_r
    _repo=bench/buildah-r$_r
    _rss=0
    fs_fresh "$_dir"
    mkdir -p "$_dir/root" "$_dir/runroot"
    for _sc in cold:a noop:a pip:b; do
        _name=${_sc%%:*}
        _spec=${_sc#*:}
        _ver=$(spec_version "$_spec")
        _log=$LOGS/buildah-r$_r-$_name.log
        _ref=$REGISTRY/$_repo:$_name
        _gets=$(wheel_gets "$_ver")
        sampler_ready "$_dir/rss-bud" -
        sync
        _t0=$(now_ns)
        "$BUILDAH" --root "$_dir/root" --runroot "$_dir/runroot" --storage-driver overlay \
            bud --layers --isolation chroot --network host --format docker --tls-verify=false \
            --build-arg "PIP_INDEX_URL=$WHEELHOUSE_URL" --build-arg "PIP_TRUSTED_HOST=$WHEELHOUSE" \
            -t "$_ref" "$SCRATCH/ctx-$_spec" </dev/null >"$_log" 2>&1 &
        CUR_PID=$!
        sampler_go "$_dir/rss-bud" "$CUR_PID"
        wait_cur
        _t1=$(now_ns)
        sampler_wait
        if [ "$RC" -ne 0 ]; then
            fail buildah "run $_r $_name: buildah bud" "$_log"
            break
        fi
        # the clock pauses while the push's sampler starts
        sampler_ready "$_dir/rss-push" -
        _t1b=$(now_ns)
        "$BUILDAH" --root "$_dir/root" --runroot "$_dir/runroot" --storage-driver overlay \
            push --tls-verify=false --format docker "$_ref" </dev/null >>"$_log" 2>&1 &
        CUR_PID=$!
        sampler_go "$_dir/rss-push" "$CUR_PID"
        wait_cur
        _t2=$(now_ns)
        sampler_wait
        if [ "$RC" -ne 0 ]; then
            fail buildah "run $_r $_name: buildah push" "$_log"
            break
        fi
        _t2=$((_t2 - (_t1b - _t1)))
        record buildah "$_name" "$_r" "$(secs "$_t0" "$_t2")"
        record buildah "$_name-build" "$_r" "$(secs "$_t0" "$_t1")"
        record buildah "$_name-push" "$_r" "$(secs "$_t1" "$_t2")"
        for _f in rss-bud rss-push; do
            _k=$(read_kib "$_dir/$_f")
            if [ "$_k" -gt "$_rss" ]; then _rss=$_k; fi
        done
        check_push buildah "$_name" "$_r" "$_repo" "$_name" || true
        [ "$_name" = noop ] || check_pip buildah "$_name" "$_r" "$_ver" "$_gets"
        say "  buildah  run $_r $_name $(secs "$_t0" "$_t2") s (build $(secs "$_t0" "$_t1") + push $(secs "$_t1" "$_t2"))"
    done
    record buildah rss "$_r" "$_rss"
    fs_drop "$_dir"
}

# ---- which builders run --------------------------------------------------------------

BUILDERS=
for b in $BENCH_BUILDERS; do
    case $b in
    kiln)
        if kiln_available; then
            BUILDERS="$BUILDERS kiln"
        else
            note "kiln: '$KILN build' is not available in this binary: kiln's column is skipped"
        fi
        ;;
    buildkit)
        if command -v "$DOCKERD" >/dev/null 2>&1 && [ -x "$DOCKER" ]; then
            BUILDERS="$BUILDERS buildkit"
        else
            note "buildkit: $DOCKERD or $DOCKER not found (apt-get install docker.io): skipped"
        fi
        ;;
    buildah)
        if command -v "$BUILDAH" >/dev/null 2>&1; then
            BUILDERS="$BUILDERS buildah"
        else
            note "buildah: $BUILDAH not found (apt-get install buildah): skipped"
        fi
        ;;
    esac
done
[ -n "$BUILDERS" ] || die "no builder to measure"
BUILDERS=${BUILDERS# }

r=1
while [ "$r" -le "$BENCH_RUNS" ]; do
    # rotate the order: run 1 "a b c", run 2 "b c a", ...
    order=$BUILDERS
    i=1
    while [ "$i" -lt "$r" ]; do
        # shellcheck disable=SC2086 # word splitting on purpose
        set -- $order
        first=$1
        shift
        order="$* $first"
        i=$((i + 1))
    done
    say "run $r of $BENCH_RUNS: $order"
    for b in $order; do
        "run_$b" "$r"
    done
    r=$((r + 1))
done

# ---- the table -----------------------------------------------------------------------------

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
"$PY" - "$RESULTS" "$NOTES" "$BENCH_RUNS" "$BUILDERS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF'
import collections, statistics, sys
results, notes, runs, builders = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
vals = collections.defaultdict(list)
for line in open(results):
    b, key, r, v = line.split()
    vals[(b, key)].append(float(v))

def med(b, key):
    v = vals.get((b, key))
    return statistics.median(v) if v else None

def peak(b):
    v = vals.get((b, "rss"))
    return max(v) / 1024 if v else None

def cell(x, unit):
    if x is None:
        return "n/a"
    return "%s s" % sec(x) if unit == "s" else "%.1f MiB" % x

def sec(x):
    return "%.3f" % x if x < 1 else "%.2f" % x

def ratio(a, b):
    return a / b if a is not None and b else None

rows = [
    ("(1) cold build + push", "cold", 0.6),
    ("(2) no-op rebuild + push", "noop", 0.2),
    ("(3) pip-only change + push", "pip", 0.8),
]
print("kiln build vs BuildKit (dockerd) vs buildah: base + apt curl jq + pip one wheel;")
print("medians of %d run(s); peak RSS = the largest of all runs" % runs)
print()
print("| scenario | kiln | BuildKit | buildah | kiln/BuildKit | kiln/buildah | target |")
print("|---|---|---|---|---|---|---|")
for label, key, target in rows:
    k, d, h = med("kiln", key), med("buildkit", key), med("buildah", key)
    rd, rh = ratio(k, d), ratio(k, h)
    verdict = "" if rd is None else (" (met)" if rd <= target else " (missed)")
    print("| %s | %s | %s | %s | %s | %s | <= %.1fx BuildKit%s |" % (
        label, cell(k, "s"), cell(d, "s"), cell(h, "s"),
        "**%.2f**" % rd if rd is not None else "n/a", "%.2f" % rh if rh is not None else "n/a",
        target, verdict))
k, d, h = peak("kiln"), peak("buildkit"), peak("buildah")
rd, rh = ratio(k, d), ratio(k, h)
verdict = "" if k is None else (" (met)" if k <= 128 else " (missed)")
print("| (4) peak RSS of the builder | %s | %s | %s | %s | %s | <= 128 MiB%s |" % (
    cell(k, "m"), cell(d, "m") + " (dockerd + containerd)" if d is not None else "n/a",
    cell(h, "m") + " (buildah)" if h is not None else "n/a",
    "%.2f" % rd if rd is not None else "n/a", "%.2f" % rh if rh is not None else "n/a", verdict))
print()
print("load average before: %s, after: %s" % (sys.argv[5], sys.argv[6]))
print()
print("all runs (s; peers: build + push):")
for b in builders:
    for key in ("cold", "noop", "pip"):
        tot = vals.get((b, key), [])
        bl, pu = vals.get((b, key + "-build"), []), vals.get((b, key + "-push"), [])
        lay = vals.get((b, key + "-layers"), [])
        if bl and len(bl) == len(tot):
            txt = "  ".join("%s (%s + %s)" % tuple(sec(v) for v in t) for t in zip(tot, bl, pu))
        else:
            txt = "  ".join(sec(t) for t in tot)
        print("  %-8s %-4s %s   layers %s" % (b, key, txt or "-", ",".join("%d" % l for l in lay) or "-"))
        steps = [(st, vals.get((b, key + "-" + st), [])) for st in ("from", "apt", "pip")]
        if any(v for _, v in steps):
            print("  %-8s %-4s step times: %s" % ("", "", ", ".join(
                "%s %s" % (st, " ".join("%.1f" % x for x in v)) for st, v in steps if v)))
    rss = vals.get((b, "rss"), [])
    print("  %-8s rss  %s" % (b, "  ".join("%.1f MiB" % (v / 1024) for v in rss) or "-"))
    nrss = vals.get((b, "noop-rss"), [])
    if nrss:
        print("  %-8s no-op peak RSS, exact (ru_maxrss of an untimed no-op build): %s" % (
            b, "  ".join("%.1f MiB" % (v / 1024) for v in nrss)))
text = open(notes).read().strip()
if text:
    print()
    print("notes:")
    for line in text.splitlines():
        print("  " + line)
EOF

exit "$FAILED"
