# shellcheck shell=sh
# A local pip index (PEP 503 "simple") for kiln's integration tests and
# benchmarks: PyPI is not reachable from the test machines. A POSIX sh library.
#
#   WHEELHOUSE_LIB=/path/to/tests/integration/lib   # default: $(dirname "$0")/lib
#   . "$WHEELHOUSE_LIB/wheelhouse.sh"
#   wheelhouse_available || { echo "1..0 # SKIP $WHEELHOUSE_MISSING"; exit 0; }
#   wheelhouse_make "$T/wh" --requires 'kilntest-hello==1.1:kilntest-dep>=1.0' \
#       kilntest-hello==1.0 kilntest-hello==1.1 kilntest-dep==1.0
#   wheelhouse_start "$T/wh"                  # call directly, not in $(...)
#   pip install --index-url "$WHEELHOUSE_URL" --trusted-host "$WHEELHOUSE" kilntest-hello==1.0
#   wheelhouse_stop                           # or leave it to the EXIT trap
#
# wheelhouse_make DIR [--requires A:REQ]... [--script A:CMD]... NAME==VER...
# writes pure-Python wheels and the index pages under DIR/simple (see
# wheelhouse.py: deterministic bytes; several calls add to one index).
# Every wheel's module is the name with - and . turned into _, with
# __version__ and main() (prints "NAME VER").
#
# wheelhouse_start DIR serves DIR over HTTP on 127.0.0.1 on a port the kernel
# picks (wheelhouse.py serve writes it to a file once it listens) and waits
# until DIR/simple/ answers. It exports:
#   WHEELHOUSE       127.0.0.1:PORT (for pip's --trusted-host / PIP_TRUSTED_HOST)
#   WHEELHOUSE_URL   http://127.0.0.1:PORT/simple (--index-url / PIP_INDEX_URL)
#   WHEELHOUSE_PID   the server's pid
#   WHEELHOUSE_LOG   its request log (one line per request)
# and prints "wheelhouse at URL" on stderr. One server at a time: a second
# wheelhouse_start stops the first. (pip treats 127.0.0.0/8 as a secure
# origin, so --trusted-host is optional there; it does no harm.)
#
# Settings: WHEELHOUSE_PYTHON (default /usr/bin/python3), WHEELHOUSE_KEEP=1
# keeps the temporary directory (port file, log) on cleanup.
#
# Sourcing installs an EXIT/INT/TERM/HUP trap that calls wheelhouse_cleanup
# and, when registry.sh was sourced before, registry_cleanup too. Sourcing
# registry.sh AFTER this file replaces the trap with registry.sh's; a caller
# that sets its own trap must call wheelhouse_cleanup (and registry_cleanup)
# from it.

: "${WHEELHOUSE_LIB:=$(cd "$(dirname "$0")" && pwd)/lib}"
: "${WHEELHOUSE_PYTHON:=/usr/bin/python3}"

_wheelhouse_tmp=
WHEELHOUSE_PID=

_wheelhouse_log() {
    echo "wheelhouse.sh: $*" >&2
}

# True when everything needed is there; otherwise WHEELHOUSE_MISSING says what.
wheelhouse_available() {
    WHEELHOUSE_MISSING=
    command -v "$WHEELHOUSE_PYTHON" >/dev/null 2>&1 || WHEELHOUSE_MISSING="$WHEELHOUSE_MISSING $WHEELHOUSE_PYTHON"
    command -v curl >/dev/null 2>&1 || WHEELHOUSE_MISSING="$WHEELHOUSE_MISSING curl"
    [ -f "$WHEELHOUSE_LIB/wheelhouse.py" ] || WHEELHOUSE_MISSING="$WHEELHOUSE_MISSING $WHEELHOUSE_LIB/wheelhouse.py"
    if [ -n "$WHEELHOUSE_MISSING" ]; then
        WHEELHOUSE_MISSING="missing:$WHEELHOUSE_MISSING"
        return 1
    fi
    return 0
}

# wheelhouse_make DIR [options] NAME==VER...: prints one line per wheel written.
wheelhouse_make() {
    "$WHEELHOUSE_PYTHON" "$WHEELHOUSE_LIB/wheelhouse.py" make "$@"
}

# wheelhouse_start DIR: serve DIR on 127.0.0.1.
wheelhouse_start() {
    if [ -z "${1:-}" ] || [ ! -d "$1" ]; then
        _wheelhouse_log "wheelhouse_start: '${1:-}' is not a directory"
        return 2
    fi
    wheelhouse_available || { _wheelhouse_log "$WHEELHOUSE_MISSING"; return 1; }
    [ -z "$WHEELHOUSE_PID" ] || wheelhouse_stop
    if [ -z "$_wheelhouse_tmp" ]; then
        _wheelhouse_tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-wheelhouse.XXXXXX") || return 1
    fi
    _wh_dir=$(cd "$1" && pwd)
    rm -f "$_wheelhouse_tmp/port"
    "$WHEELHOUSE_PYTHON" "$WHEELHOUSE_LIB/wheelhouse.py" serve "$_wh_dir" \
        --port-file "$_wheelhouse_tmp/port" --log "$_wheelhouse_tmp/requests.log" \
        </dev/null >"$_wheelhouse_tmp/server.log" 2>&1 &
    WHEELHOUSE_PID=$!
    WHEELHOUSE_LOG=$_wheelhouse_tmp/requests.log
    export WHEELHOUSE_PID WHEELHOUSE_LOG

    _wh_i=0
    while [ ! -s "$_wheelhouse_tmp/port" ]; do
        if ! kill -0 "$WHEELHOUSE_PID" 2>/dev/null || [ "$_wh_i" -gt 300 ]; then
            _wheelhouse_log "the server did not start"
            sed 's/^/wheelhouse.sh:   /' "$_wheelhouse_tmp/server.log" | tail -n 20 >&2
            wheelhouse_stop
            return 1
        fi
        _wh_i=$((_wh_i + 1))
        sleep 0.1
    done
    _wh_port=$(sed -n '1s/^\([0-9][0-9]*\)$/\1/p' "$_wheelhouse_tmp/port")
    [ -n "$_wh_port" ] || { _wheelhouse_log "bad port file"; wheelhouse_stop; return 1; }
    WHEELHOUSE=127.0.0.1:$_wh_port
    WHEELHOUSE_URL=http://$WHEELHOUSE/simple
    export WHEELHOUSE WHEELHOUSE_URL

    _wh_i=0
    while :; do
        _wh_code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$WHEELHOUSE_URL/")
        [ "$_wh_code" = 200 ] && break
        _wh_i=$((_wh_i + 1))
        if [ "$_wh_i" -gt 100 ]; then
            _wheelhouse_log "$WHEELHOUSE_URL/ does not answer (last: $_wh_code; is there a simple/ in $_wh_dir?)"
            wheelhouse_stop
            return 1
        fi
        sleep 0.1
    done
    _wheelhouse_log "wheelhouse at $WHEELHOUSE_URL (serving $_wh_dir)"
    return 0
}

# wheelhouse_stop: stop the server (SIGTERM, then SIGKILL after 5 s) and reap it.
wheelhouse_stop() {
    [ -n "$WHEELHOUSE_PID" ] || return 0
    if kill "$WHEELHOUSE_PID" 2>/dev/null; then
        _wh_i=0
        while kill -0 "$WHEELHOUSE_PID" 2>/dev/null; do
            _wh_i=$((_wh_i + 1))
            if [ "$_wh_i" -gt 50 ]; then
                kill -9 "$WHEELHOUSE_PID" 2>/dev/null
                break
            fi
            sleep 0.1
        done
    fi
    wait "$WHEELHOUSE_PID" 2>/dev/null || true
    WHEELHOUSE_PID=
    unset WHEELHOUSE WHEELHOUSE_URL
    return 0
}

# wheelhouse_cleanup: wheelhouse_stop, then remove the temporary directory.
wheelhouse_cleanup() {
    wheelhouse_stop
    if [ -n "$_wheelhouse_tmp" ] && [ "${WHEELHOUSE_KEEP:-0}" != 1 ]; then
        rm -rf "$_wheelhouse_tmp"
    fi
    _wheelhouse_tmp=
}

_wheelhouse_trap() {
    wheelhouse_cleanup
    if command -v registry_cleanup >/dev/null 2>&1; then
        registry_cleanup
    fi
}

trap '_wheelhouse_trap' EXIT
trap '_wheelhouse_trap; exit 130' INT
trap '_wheelhouse_trap; exit 143' TERM
trap '_wheelhouse_trap; exit 129' HUP
