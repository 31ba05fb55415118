#!/bin/sh
# TAP test of deploy/: the systemd units pass `systemd-analyze verify` (with
# the unit's /usr/local/bin/kiln replaced by the kiln under test), every
# variable of kiln.env.example is one that `kiln serve --help` documents, and
# each unit's ExecStart command line really starts (data directory and listen
# address moved to a temporary directory) and stops on SIGTERM with status 0.
# No systemd runs here: the units themselves are never started.
# usage: test-deploy.sh KILN_BINARY [SOURCE_DIR]
set -u
KILN=$1
case $KILN in /*) ;; *) KILN=$(pwd)/$KILN ;; esac
HERE=$(cd "${2:-$(dirname "$0")}" && pwd)
DEPLOY=$HERE/../../deploy

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-deploy.XXXXXX") || exit 1
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill -9 "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

n=0
fails=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
skip() { # skip DESCRIPTION REASON
    n=$((n + 1))
    echo "ok $n # SKIP $1: $2"
}
show() { sed 's/^/#   /' "$1" | tail -n 15; }

UNITS="kiln-serve kiln-worker"

# ---- systemd-analyze verify ---------------------------------------------------------
for u in $UNITS; do
    f=$DEPLOY/systemd/$u.service
    [ -f "$f" ]
    ok $? "deploy/systemd/$u.service exists"
    grep -q '^ExecStart=/usr/local/bin/kiln ' "$f"
    ok $? "$u: ExecStart runs /usr/local/bin/kiln"
    mkdir -p "$T/units"
    sed "s|/usr/local/bin/kiln |$KILN |" "$f" >"$T/units/$u.service"
    if command -v systemd-analyze >/dev/null 2>&1; then
        systemd-analyze verify "$T/units/$u.service" >"$T/verify.out" 2>&1
        r=$?
        # a unit that verifies cleanly prints nothing
        [ $r -eq 0 ] && [ ! -s "$T/verify.out" ]
        ok $? "$u: systemd-analyze verify finds nothing to say"
        [ $r -eq 0 ] && [ ! -s "$T/verify.out" ] || show "$T/verify.out"
    else
        skip "$u: systemd-analyze verify" "systemd-analyze is not installed"
    fi
    grep -q '^KillMode=mixed$' "$f"
    ok $? "$u: SIGTERM goes to kiln alone (KillMode=mixed), so running builds get their grace"
done
# the check itself must be able to fail
if command -v systemd-analyze >/dev/null 2>&1; then
    sed 's/^Type=exec$/Type=nonsense/' "$T/units/kiln-serve.service" >"$T/units/broken.service"
    systemd-analyze verify "$T/units/broken.service" >"$T/verify.out" 2>&1
    [ -s "$T/verify.out" ]
    ok $? "systemd-analyze verify does complain about a broken unit"
fi

# ---- kiln.env.example ---------------------------------------------------------------
ENVF=$DEPLOY/kiln.env.example
"$KILN" serve --help >"$T/help" 2>&1
vars=$(sed -n 's/^#\{0,1\}\([A-Z][A-Z0-9_]*\)=.*/\1/p' "$ENVF")
[ -n "$vars" ]
ok $? "kiln.env.example names variables"
for v in $vars; do
    grep -q "$v" "$T/help"
    ok $? "kiln.env.example: $v is documented by kiln serve --help"
done
# systemd's EnvironmentFile: comments, blank lines and KEY=VALUE only
bad=$(grep -v -e '^#' -e '^$' -e '^[A-Z][A-Z0-9_]*=' "$ENVF" | wc -l)
[ "$bad" -eq 0 ]
ok $? "kiln.env.example holds only comments and KEY=VALUE lines"

# ---- each ExecStart starts and stops --------------------------------------------------
# exec_start UNIT: the unit's ExecStart arguments after the binary, with
# --data-dir moved under $T and --listen on a free loopback port.
exec_start() {
    sed -n 's|^ExecStart=/usr/local/bin/kiln ||p' "$DEPLOY/systemd/$1.service" |
        sed -e "s|--data-dir [^ ]*|--data-dir $T/data-$1|" -e 's|--listen [^ ]*|--listen 127.0.0.1:0|'
}
# run_unit UNIT READY_PATTERN: start it in the background, wait for the line.
run_unit() {
    args=$(exec_start "$1")
    # shellcheck disable=SC2086 # the unit's arguments, split as systemd does
    env -u KILN_DATA_DIR KILN_REGISTRY_ENDPOINT=127.0.0.1:9 KILN_STORE_URL="sqlite:$T/shared.db" \
        KILN_ADMIN_TOKEN=deploy-test-token "$KILN" $args </dev/null >"$T/$1.out" 2>"$T/$1.err" &
    PID=$!
    i=0
    while [ $i -lt 200 ]; do
        grep -q "$2" "$T/$1.err" && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
stop_unit() {
    kill -TERM "$PID"
    wait "$PID"
    rc=$?
    PID=
    return $rc
}

run_unit kiln-serve '^kiln serve: listening on '
r=$?
ok $r "kiln-serve's ExecStart starts kiln serve"
[ $r -eq 0 ] || show "$T/kiln-serve.err"
URL=$(sed -n 's/^kiln serve: listening on \(http:[^ ]*\).*$/\1/p' "$T/kiln-serve.err" | head -n 1)
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer deploy-test-token' \
    "$URL/api/v1/specs")
[ "$code" = 200 ]
ok $? "it answers the API (GET /api/v1/specs: $code)"
[ -d "$T/data-kiln-serve" ]
ok $? "it uses the unit's data directory"
stop_unit
r=$?
ok $r "SIGTERM stops it with status 0"
[ $r -eq 0 ] || show "$T/kiln-serve.err"

run_unit kiln-worker '^kiln worker: .* running as '
r=$?
ok $r "kiln-worker's ExecStart starts kiln worker on the shared store"
[ $r -eq 0 ] || show "$T/kiln-worker.err"
stop_unit
r=$?
ok $r "SIGTERM stops it with status 0"
[ $r -eq 0 ] || show "$T/kiln-worker.err"

echo "1..$n"
[ $fails -eq 0 ]
