#!/bin/sh
# TAP: kiln's web page end to end in Debian's Chromium (headless, driven by
# playwright-core from npm) against real parts only: `kiln serve` building
# with runc, a loopback docker-registry, a base image made by `kiln base`
# (cached per day like tests/integration/test-build.sh), a local wheel index.
# A second `kiln serve` without a registry covers the warning banner and the
# paging. Screenshots go to tests/e2e/output/ (or $E2E_OUTPUT).
# usage: run.sh KILN_BINARY [SOURCE_DIR]
#
# node_modules: installed into tests/e2e/node_modules with `npm ci` (the
# pinned package-lock.json) when missing, under a lock. Skips only when node
# or Chromium is missing (or when not root: builds need root, as in
# test-build.sh); any other missing piece is a failure.
set -u
KILN=$1
SRC=$(cd "${2:-$(dirname "$0")/../..}" && pwd)
E2E=$SRC/tests/e2e
LIB=$SRC/tests/integration/lib
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

command -v node >/dev/null 2>&1 || { echo "1..0 # SKIP node is not installed"; exit 0; }
[ -x "$CHROMIUM" ] || { echo "1..0 # SKIP $CHROMIUM is not installed"; exit 0; }
if [ "$(id -u)" -ne 0 ]; then
    echo "1..0 # SKIP kiln serve's builds need root (overlay mounts, runc)"
    exit 0
fi

bail() {
    echo "1..1"
    echo "not ok 1 - $1"
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 25 "$2" | sed 's/^/#   /'
    exit 1
}

# ---- node modules ------------------------------------------------------------------
if [ ! -f "$E2E/node_modules/playwright-core/package.json" ]; then
    command -v npm >/dev/null 2>&1 || bail "npm is not installed (scripts/install-deps.sh --test)"
    NPMLOG=${TMPDIR:-/tmp}/kiln-e2e-npm.$$.log
    (
        flock 9
        if [ ! -f "$E2E/node_modules/playwright-core/package.json" ]; then
            cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error
        fi
    ) 9>"${TMPDIR:-/tmp}/kiln-e2e-npm.lock" >"$NPMLOG" 2>&1 || bail "npm ci in tests/e2e" "$NPMLOG"
    rm -f "$NPMLOG"
fi

export REGISTRY_LIB="$LIB" WHEELHOUSE_LIB="$LIB"
# shellcheck source=../integration/lib/registry.sh
. "$LIB/registry.sh"
# shellcheck source=../integration/lib/wheelhouse.sh
. "$LIB/wheelhouse.sh"
registry_available || bail "$REGISTRY_MISSING"
wheelhouse_available || bail "$WHEELHOUSE_MISSING"
for tool in runc flock mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || bail "missing: $tool"
done

T=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-test-e2e.XXXXXX") || exit 1
SERVE_PIDS=
# shellcheck disable=SC2317 # (called from the traps)
cleanup() {
    for p in $SERVE_PIDS; do
        kill "$p" 2>/dev/null
    done
    for p in $SERVE_PIDS; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ "$i" -lt 100 ]; do
            sleep 0.2
            i=$((i + 1))
        done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    SERVE_PIDS=
    # never leave a mount behind, whatever happened
    grep " $T/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    wheelhouse_cleanup
    registry_cleanup
    rm -rf "$T"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

# ---- fixtures: registry, base image, wheel index ----------------------------------
registry_start noauth >"$T/registry.out" 2>&1 || bail "cannot start docker-registry" "$T/registry.out"
CACHE=${KILN_TEST_CACHE:-/var/tmp/kiln-test-cache}
mkdir -p "$CACHE"
BASE_LAYOUT=$CACHE/base-$(date -u +%Y%m%d)
(
    flock 9
    if [ ! -f "$BASE_LAYOUT/index.json" ]; then
        rm -rf "$BASE_LAYOUT.tmp"
        "$KILN" base --oci-dir "$BASE_LAYOUT.tmp:base" --work-dir "$CACHE" -q >"$T/base.out" 2>&1 &&
            mv "$BASE_LAYOUT.tmp" "$BASE_LAYOUT"
    fi
) 9>"$CACHE/base.lock"
[ -f "$BASE_LAYOUT/index.json" ] || bail "could not bootstrap the base image" "$T/base.out"
BASE=$REGISTRY/kiln/base:bookworm
"$KILN" push -q --oci-dir "$BASE_LAYOUT:base" "$BASE" >/dev/null 2>"$T/push.err" ||
    bail "cannot push the base image" "$T/push.err"

wheelhouse_make "$T/wh" kilntest-hello==1.0 kilntest-extra==1.0 kilntest-slow==1.0 >"$T/wh.out" 2>&1 ||
    bail "cannot make the wheel index" "$T/wh.out"
wheelhouse_start "$T/wh" >"$T/wh.out" 2>&1 || bail "cannot start the wheel index" "$T/wh.out"
# The "blocker" build (it keeps the one worker busy so that the next build is
# seen Pending, until the test cancels it) installs kilntest-slow: the fault
# proxy in front of the wheel index holds that page for minutes.
python3 "$LIB/faultproxy.py" --upstream "$WHEELHOUSE" --port-file "$T/slow.port" --log "$T/slow.log" \
    --rule 'path=^/simple/kilntest-slow/,delay=300000,count=0' </dev/null >"$T/slow.out" 2>&1 &
SERVE_PIDS="$SERVE_PIDS $!"
i=0
while [ ! -s "$T/slow.port" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && bail "the fault proxy did not start" "$T/slow.out"
    sleep 0.1
done
PIP_INDEX=http://127.0.0.1:$(cat "$T/slow.port")/simple

# ---- two kiln serve processes ------------------------------------------------------
TOKEN=e2e-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# start_serve NAME [ENV=VALUE...]: starts kiln serve, sets URL from its stderr
start_serve() {
    name=$1
    shift
    mkdir -p "$T/$name"
    env -u KILN_REGISTRY_ENDPOINT -u KILN_REPO_PREFIX -u KILN_PUSH_REPOSITORY \
        -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT -u PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX \
        -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD \
        KILN_ADMIN_TOKEN="$TOKEN" KILN_PIP_INDEX_URL="$PIP_INDEX" "$@" \
        "$KILN" serve --listen 127.0.0.1:0 --data-dir "$T/$name/data" --workers 1 \
        </dev/null >"$T/$name/serve.out" 2>"$T/$name/serve.err" &
    pid=$!
    SERVE_PIDS="$SERVE_PIDS $pid"
    URL=
    i=0
    while [ -z "$URL" ]; do
        kill -0 "$pid" 2>/dev/null || bail "kiln serve ($name) exited" "$T/$name/serve.err"
        URL=$(sed -n 's/^kiln serve: listening on \(http:[^ ]*\).*/\1/p' "$T/$name/serve.err" | head -n 1)
        [ -n "$URL" ] && break
        i=$((i + 1))
        [ $i -gt 300 ] && bail "kiln serve ($name) did not start listening" "$T/$name/serve.err"
        sleep 0.1
    done
    curl -sf --max-time 5 "$URL/healthz" >/dev/null || bail "kiln serve ($name): /healthz does not answer" "$T/$name/serve.err"
}

start_serve build KILN_REGISTRY_ENDPOINT="$REGISTRY" KILN_REPO_PREFIX="$REGISTRY/e2e" \
    KILN_INSECURE_REGISTRIES="$REGISTRY"
URL_BUILD=$URL
start_serve noreg
URL_NOREG=$URL

# ---- the test -----------------------------------------------------------------------
OUT=${E2E_OUTPUT:-$E2E/output}
mkdir -p "$OUT" && rm -f "$OUT"/*.png
KILN_URL=$URL_BUILD KILN_URL_NOREG=$URL_NOREG KILN_TOKEN=$TOKEN E2E_BASE=$BASE \
    E2E_REGISTRY=$REGISTRY E2E_OUTPUT=$OUT CHROMIUM=$CHROMIUM \
    node "$E2E/ui.test.mjs"
rc=$?
if [ $rc -ne 0 ]; then
    for name in build noreg; do
        echo "# kiln serve ($name) stderr, last lines:"
        tail -n 30 "$T/$name/serve.err" | sed 's/^/#   /'
    done
fi
exit $rc
