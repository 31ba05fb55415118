#!/bin/sh
# bench/serve.sh: the `kiln serve` API under load (issue 6, "Benchmark"). A
# benchmark, not a test: it prints a table and exits 0 whether or not the
# targets are met (non-zero only when something fails).
#
#   meson setup build && ninja -C build
#   bench/serve.sh [BUILD_DIR]              # from the repository root; ~2.5 min
#   BENCH_DURATION=10 BENCH_CACHE=/var/tmp/kiln-bench-serve bench/serve.sh
#
# BUILD_DIR (default build) holds kiln and bench/fill-store.
# Settings (environment):
#   BENCH_DURATION=S   seconds of each wrk run (default 30)
#   BENCH_SPECS=N      specs in the store (default 10000)
#   BENCH_JOBS=M       jobs in the store (default 100000)
#   BENCH_CACHE=DIR    keep the filled store in DIR/sN-jM and copy it from there
#                      on the next run (filling takes ~1 min); default: fill a
#                      fresh one every run
#   WRK                the wrk binary (default wrk; Debian's package)
#   TMPDIR             scratch space (default /var/tmp; ~100 MB)
#
# What it does: bench/fill-store fills a fresh data directory (DATA/kiln.db
# with BENCH_SPECS specs and BENCH_JOBS jobs, and 4 job logs of 2,000 lines),
# then starts the real `kiln serve --data-dir DATA --listen 127.0.0.1:0`
# with KILN_ADMIN_TOKEN set and no image registry (so nothing builds), and
# runs `wrk -t2 -c64 -dS --latency` with the Authorization header against
#   GET /api/v1/specs                   the first page (50 specs, by name)
#   GET /api/v1/specs?order=status      the first page by the latest job's phase
#   GET /api/v1/jobs/ID/log?tail=100    the last 100 lines of a 2,000-line log
# one after the other. wrk and the server share the machine's CPUs. The
# server's peak RSS is its VmHWM (/proc/PID/status) after the last run.
# Everything it started is stopped by pid, and the scratch directory is
# removed, also on Ctrl-C.
set -eu

BUILD=${1:-build}
KILN=$BUILD/kiln
FILL=$BUILD/bench/fill-store
DURATION=${BENCH_DURATION:-30}
SPECS=${BENCH_SPECS:-10000}
JOBS=${BENCH_JOBS:-100000}
CACHE=${BENCH_CACHE:-}
WRK=${WRK:-wrk}
THREADS=2
CONNS=64
# the issue's targets
LIST_P99_MS=20
LIST_RPS=5000
RSS_MIB=64

die() {
    echo "bench/serve.sh: $*" >&2
    exit 1
}
say() {
    echo "bench: $*" >&2
}

for v in "$DURATION" "$SPECS" "$JOBS"; do
    case $v in '' | *[!0-9]*) die "BENCH_DURATION, BENCH_SPECS and BENCH_JOBS must be numbers" ;; esac
done
[ "$DURATION" -ge 1 ] || die "BENCH_DURATION must be at least 1"
[ -x "$KILN" ] || die "no kiln binary at $KILN (build first, or give the build directory)"
[ -x "$FILL" ] || die "no $FILL (the build needs subdir('bench'))"
command -v "$WRK" >/dev/null 2>&1 || die "wrk not found (apt-get install -y wrk)"
command -v curl >/dev/null 2>&1 || die "curl not found"

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

SCRATCH=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-serve.XXXXXX")
SERVE_PID=
WRK_PID=

cleanup() {
    if [ -n "$WRK_PID" ]; then kill_wait "$WRK_PID" 2; fi
    if [ -n "$SERVE_PID" ]; then kill_wait "$SERVE_PID" 10; fi
    WRK_PID=
    SERVE_PID=
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the store ---------------------------------------------------------------------

DATA=$SCRATCH/data
fill() { # fill DIR: a new data directory, its log jobs in DIR/log-jobs
    _t0=$(date +%s)
    "$FILL" --specs "$SPECS" --jobs "$JOBS" "$1" >"$1/log-jobs" 2>"$SCRATCH/fill.err" ||
        die "fill-store failed: $(cat "$SCRATCH/fill.err")"
    say "$(cat "$SCRATCH/fill.err") ($(($(date +%s) - _t0)) s)"
}
if [ -n "$CACHE" ]; then
    CDIR=$CACHE/s$SPECS-j$JOBS
    if [ ! -f "$CDIR/log-jobs" ]; then
        rm -rf "$CDIR"
        mkdir -p "$CDIR.tmp.$$"
        fill "$CDIR.tmp.$$"
        mv "$CDIR.tmp.$$" "$CDIR"
    else
        say "store from $CDIR"
    fi
    cp -a "$CDIR" "$DATA"
else
    mkdir -p "$DATA"
    fill "$DATA"
fi
LOG_JOB=$(awk '$1 == "log-job" { print $2; exit }' "$DATA/log-jobs")
[ -n "$LOG_JOB" ] || die "fill-store wrote no log"

# ---- the server --------------------------------------------------------------------

: >"$SCRATCH/serve.log"
TOKEN=bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
(
    # no image registry: specs are served, nothing is built
    unset KILN_REGISTRY_ENDPOINT PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT KILN_REPO_PREFIX \
        PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX KILN_PUSH_REPOSITORY KILN_DATA_DIR
    KILN_ADMIN_TOKEN=$TOKEN
    export KILN_ADMIN_TOKEN
    exec "$KILN" serve --data-dir "$DATA" --listen 127.0.0.1:0
) 2>"$SCRATCH/serve.log" &
SERVE_PID=$!
URL=
_n=0
while [ -z "$URL" ]; do
    kill -0 "$SERVE_PID" 2>/dev/null || die "kiln serve exited: $(cat "$SCRATCH/serve.log")"
    URL=$(sed -n 's|.*listening on \(http://[^ ]*\).*|\1|p' "$SCRATCH/serve.log" | head -n 1)
    _n=$((_n + 1))
    [ "$_n" -le 300 ] || die "kiln serve did not listen within 30 s: $(cat "$SCRATCH/serve.log")"
    [ -n "$URL" ] || sleep 0.1
done
say "kiln serve (pid $SERVE_PID) at $URL"

hwm_kib() {
    awk '$1 == "VmHWM:" { print $2 }' "/proc/$SERVE_PID/status"
}

# ---- the runs ----------------------------------------------------------------------

# ms VALUE: wrk's latency (e.g. 812.00us, 3.21ms, 1.02s) in milliseconds.
ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000;
        else if (v ~ /s$/) n *= 1000
        printf "%.2f", n
    }'
}

ROWS=$SCRATCH/rows
DETAILS=$SCRATCH/details
: >"$ROWS"
: >"$DETAILS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# run NAME PATH KIND: check one request, then wrk; KIND list gets the list targets.
run() {
    _name=$1 _path=$2 _kind=$3
    _code=$(curl -s -o "$SCRATCH/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        "$URL$_path") || die "GET $_path failed"
    [ "$_code" = 200 ] || die "GET $_path: HTTP $_code: $(head -c 300 "$SCRATCH/body")"
    _bytes=$(wc -c <"$SCRATCH/body")
    say "$_name: ${DURATION} s of wrk -t$THREADS -c$CONNS ($_bytes bytes a response)"
    "$WRK" -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
        -H "Authorization: Bearer $TOKEN" "$URL$_path" >"$SCRATCH/wrk.out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed: $(cat "$SCRATCH/wrk.out")"
    WRK_PID=
    _rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$SCRATCH/wrk.out")
    _p50=$(ms "$(awk '$1 == "50%" { print $2 }' "$SCRATCH/wrk.out")")
    _p99=$(ms "$(awk '$1 == "99%" { print $2 }' "$SCRATCH/wrk.out")")
    _bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$SCRATCH/wrk.out")
    _sock=$(awk '/Socket errors:/ { sub(/.*Socket errors: /, ""); print }' "$SCRATCH/wrk.out")
    if [ -z "$_rps" ] || [ -z "$_p99" ]; then
        die "cannot read wrk's output: $(cat "$SCRATCH/wrk.out")"
    fi
    if [ "$_kind" = list ]; then
        _target="p99 <= $LIST_P99_MS ms, >= $LIST_RPS req/s"
        _met=$(awk -v p="$_p99" -v r="$_rps" -v tp="$LIST_P99_MS" -v tr="$LIST_RPS" \
            'BEGIN { print (p <= tp && r >= tr) ? "yes" : "no" }')
    else
        _target="(none)"
        _met="-"
    fi
    [ -z "$_bad" ] || _met="$_met ($_bad non-2xx)"
    echo "| $_name | $_rps | $_p50 ms | $_p99 ms | $_target | $_met |" >>"$ROWS"
    {
        echo "$_name: $_bytes bytes a response; server VmHWM so far $(hwm_kib) KiB"
        sed -n '/Latency  *[0-9]/p;/Req\/Sec/p;/requests in/p' "$SCRATCH/wrk.out" | sed 's/^ */    /'
        [ -z "$_sock" ] || echo "    socket errors: $_sock"
    } >>"$DETAILS"
}

run "GET /api/v1/specs" "/api/v1/specs" list
run "GET /api/v1/specs?order=status" "/api/v1/specs?order=status" list
run "GET /api/v1/jobs/$LOG_JOB/log?tail=100" "/api/v1/jobs/$LOG_JOB/log?tail=100" log

HWM=$(hwm_kib)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
kill -0 "$SERVE_PID" 2>/dev/null || die "kiln serve died: $(tail -n 20 "$SCRATCH/serve.log")"

# ---- the table ---------------------------------------------------------------------

echo
echo "kiln serve: $SPECS specs, $JOBS jobs; wrk -t$THREADS -c$CONNS -d${DURATION}s --latency;" \
    "$(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER"
echo
echo "| endpoint | req/s | p50 | p99 | target | met? |"
echo "|---|---|---|---|---|---|"
cat "$ROWS"
echo
awk -v k="$HWM" -v t="$RSS_MIB" 'BEGIN {
    printf "kiln serve peak RSS (VmHWM) %.1f MiB (target <= %d MiB: %s)\n", k / 1024, t,
        (k / 1024 <= t) ? "met" : "missed"
}'
echo
cat "$DETAILS"
