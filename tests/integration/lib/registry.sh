# shellcheck shell=sh
# Test registries for kiln's integration tests: a POSIX sh library.
#
#   REGISTRY_LIB=/path/to/tests/integration/lib   # default: $(dirname "$0")/lib
#   . "$REGISTRY_LIB/registry.sh"
#   registry_available || { echo "1..0 # SKIP $REGISTRY_MISSING"; exit 0; }
#   registry_start noauth|basic|token        # call directly, not in $(...)
#   curl "$REGISTRY_URL/v2/"
#   faultproxy_start --rule 'path=^/v2/$,status=503,count=2'
#   curl "http://$FAULTPROXY/v2/"
#   registry_stop                            # or leave it to the EXIT trap
#
# registry_start runs Debian's docker-registry (distribution 2.8) on
# 127.0.0.1 on a port the kernel picks (addr :0, read back from its log), with
# a filesystem store in a temporary directory, and waits until /v2/ answers.
# It exports:
#   REGISTRY           127.0.0.1:PORT
#   REGISTRY_URL       http://127.0.0.1:PORT
#   REGISTRY_MODE      noauth | basic | token
#   REGISTRY_DIR       the instance's directory: config.yml, registry.log,
#                      data/, htpasswd, issuer/ (key.pem, cert.pem, users,
#                      issuer.log, requests.log)
#   REGISTRY_USER, REGISTRY_PASSWORD     (basic, token) a user with every right;
#                      the password holds a ':' on purpose
#   REGISTRY_RO_USER, REGISTRY_RO_PASSWORD (basic, token) a second user; with
#                      token auth it may only pull
#   REGISTRY_REALM, REGISTRY_SERVICE, REGISTRY_ISSUER (token) the token
#                      endpoint URL, the service name, the issuer's host:port
# and prints "registry MODE at ADDRESS" on stderr.
# Settings read by registry_start (environment or shell variables):
#   REGISTRY_TOKEN_SIGN    kid (default) | x5c: how tokens name their key
#   REGISTRY_TOKEN_ALG     ES256 (default) | RS256
#   REGISTRY_TOKEN_EXPIRES token lifetime in seconds (default 300)
#   REGISTRY_ANONYMOUS     actions granted to anonymous token requests
#                          (default none; e.g. pull)
#   REGISTRY_PYTHON        default /usr/bin/python3 (needs python3-cryptography)
#   DOCKER_REGISTRY        default docker-registry
#   REGISTRY_KEEP=1        keep the temporary directory on cleanup
#
# Several registries may run at once: each registry_start starts a new one and
# the variables describe the latest. faultproxy_start [--rule SPEC]... puts
# tests/integration/lib/faultproxy.py in front of $REGISTRY and exports
# FAULTPROXY (127.0.0.1:PORT), FAULTPROXY_URL and FAULTPROXY_LOG;
# faultproxy_rule SPEC adds a rule to the running proxy, faultproxy_clear
# removes them, faultproxy_stop stops it.
#
# Every process is started in the background of the calling shell and
# tracked by pid; registry_stop stops them all (SIGTERM, then SIGKILL after
# 5 s). Sourcing installs an EXIT/INT/TERM/HUP trap that calls
# registry_cleanup (stop all, remove the temporary directory); a caller that
# sets its own trap must call registry_cleanup from it.

: "${REGISTRY_LIB:=$(cd "$(dirname "$0")" && pwd)/lib}"
: "${REGISTRY_PYTHON:=/usr/bin/python3}"
: "${DOCKER_REGISTRY:=docker-registry}"

_registry_tmp=
_registry_pids=
_registry_n=0
_faultproxy_pid=

_registry_log() {
    echo "registry.sh: $*" >&2
}

# True when everything needed is installed; otherwise REGISTRY_MISSING says what.
registry_available() {
    REGISTRY_MISSING=
    command -v "$DOCKER_REGISTRY" >/dev/null 2>&1 || REGISTRY_MISSING="$REGISTRY_MISSING docker-registry"
    command -v htpasswd >/dev/null 2>&1 || REGISTRY_MISSING="$REGISTRY_MISSING htpasswd"
    command -v curl >/dev/null 2>&1 || REGISTRY_MISSING="$REGISTRY_MISSING curl"
    "$REGISTRY_PYTHON" -c 'import cryptography' >/dev/null 2>&1 ||
        REGISTRY_MISSING="$REGISTRY_MISSING python3-cryptography"
    [ -f "$REGISTRY_LIB/token-issuer.py" ] || REGISTRY_MISSING="$REGISTRY_MISSING $REGISTRY_LIB/token-issuer.py"
    if [ -n "$REGISTRY_MISSING" ]; then
        REGISTRY_MISSING="missing:$REGISTRY_MISSING"
        return 1
    fi
    return 0
}

_registry_tmpdir() {
    if [ -z "$_registry_tmp" ]; then
        _registry_tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-registry.XXXXXX") || return 1
    fi
}

# _registry_wait_file FILE PID SECONDS: wait until FILE is non-empty while PID lives.
_registry_wait_file() {
    _i=0
    while [ ! -s "$1" ]; do
        kill -0 "$2" 2>/dev/null || return 1
        _i=$((_i + 1))
        [ "$_i" -gt $(($3 * 10)) ] && return 1
        sleep 0.1
    done
    return 0
}

# _registry_kill PID: SIGTERM, wait up to 5 s, then SIGKILL; reap it.
_registry_kill() {
    kill "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    _i=0
    while kill -0 "$1" 2>/dev/null; do
        _i=$((_i + 1))
        if [ "$_i" -gt 50 ]; then
            kill -9 "$1" 2>/dev/null
            break
        fi
        sleep 0.1
    done
    wait "$1" 2>/dev/null || true
    return 0
}

_registry_fail() {
    _registry_log "$1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        sed 's/^/registry.sh:   /' "$2" | tail -n 20 >&2
    fi
    return 1
}

# _registry_start_issuer DIR: starts the token issuer, sets REGISTRY_ISSUER.
_registry_start_issuer() {
    _d=$1/issuer
    mkdir -p "$_d" || return 1
    printf '%s:%s\n%s:%s\n' "$REGISTRY_USER" "$REGISTRY_PASSWORD" \
        "$REGISTRY_RO_USER" "$REGISTRY_RO_PASSWORD" >"$_d/users"
    "$REGISTRY_PYTHON" "$REGISTRY_LIB/token-issuer.py" \
        --key "$_d/key.pem" --cert "$_d/cert.pem" --users "$_d/users" \
        --alg "${REGISTRY_TOKEN_ALG:-ES256}" --sign "${REGISTRY_TOKEN_SIGN:-kid}" \
        --readonly "$REGISTRY_RO_USER" --anonymous "${REGISTRY_ANONYMOUS:-none}" \
        --service "$REGISTRY_SERVICE" --issuer kiln-test-issuer \
        --expires-in "${REGISTRY_TOKEN_EXPIRES:-300}" \
        --port-file "$_d/port" --log "$_d/requests.log" \
        </dev/null >"$_d/issuer.log" 2>&1 &
    _pid=$!
    _registry_pids="$_registry_pids $_pid"
    _registry_wait_file "$_d/port" "$_pid" 30 ||
        { _registry_fail "token issuer did not start" "$_d/issuer.log"; return 1; }
    REGISTRY_ISSUER=127.0.0.1:$(cat "$_d/port")
    REGISTRY_REALM=http://$REGISTRY_ISSUER/token
    export REGISTRY_ISSUER REGISTRY_REALM
}

# registry_start MODE: MODE is noauth, basic or token.
registry_start() {
    _mode=${1:-noauth}
    case $_mode in
    noauth | basic | token) ;;
    *)
        _registry_log "unknown mode '$_mode' (noauth, basic, token)"
        return 2
        ;;
    esac
    registry_available || { _registry_log "$REGISTRY_MISSING"; return 1; }
    _registry_tmpdir || return 1
    _registry_n=$((_registry_n + 1))
    _dir=$_registry_tmp/$_registry_n-$_mode
    mkdir -p "$_dir/data" || return 1

    REGISTRY_USER=kiln
    REGISTRY_PASSWORD='kiln-pw:1'
    REGISTRY_RO_USER=reader
    REGISTRY_RO_PASSWORD=reader-pw
    REGISTRY_SERVICE=kiln-test
    export REGISTRY_USER REGISTRY_PASSWORD REGISTRY_RO_USER REGISTRY_RO_PASSWORD REGISTRY_SERVICE

    case $_mode in
    noauth)
        _auth=
        ;;
    basic)
        { htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" &&
            htpasswd -Bbn "$REGISTRY_RO_USER" "$REGISTRY_RO_PASSWORD"; } |
            grep -v '^$' >"$_dir/htpasswd" || return 1
        _auth="auth:
  htpasswd:
    realm: kiln-test
    path: $_dir/htpasswd"
        ;;
    token)
        _registry_start_issuer "$_dir" || return 1
        _auth="auth:
  token:
    realm: $REGISTRY_REALM
    service: $REGISTRY_SERVICE
    issuer: kiln-test-issuer
    rootcertbundle: $_dir/issuer/cert.pem"
        ;;
    esac

    cat >"$_dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $_dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: kiln-test-secret-$_registry_n
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
$_auth
EOF

    "$DOCKER_REGISTRY" serve "$_dir/config.yml" </dev/null >"$_dir/registry.log" 2>&1 &
    _pid=$!
    _registry_pids="$_registry_pids $_pid"

    _i=0
    _port=
    while [ -z "$_port" ]; do
        kill -0 "$_pid" 2>/dev/null ||
            { _registry_fail "docker-registry exited" "$_dir/registry.log"; return 1; }
        _port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
            "$_dir/registry.log" 2>/dev/null | head -n 1)
        [ -n "$_port" ] && break
        _i=$((_i + 1))
        [ "$_i" -gt 300 ] &&
            { _registry_fail "docker-registry did not start listening" "$_dir/registry.log"; return 1; }
        sleep 0.1
    done

    REGISTRY=127.0.0.1:$_port
    REGISTRY_URL=http://$REGISTRY
    REGISTRY_MODE=$_mode
    REGISTRY_DIR=$_dir
    export REGISTRY REGISTRY_URL REGISTRY_MODE REGISTRY_DIR

    _i=0
    while :; do
        _code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$REGISTRY_URL/v2/")
        case $_code in 200 | 401) break ;; esac
        _i=$((_i + 1))
        [ "$_i" -gt 300 ] &&
            { _registry_fail "$REGISTRY_URL/v2/ does not answer (last: $_code)" "$_dir/registry.log"; return 1; }
        sleep 0.1
    done
    _registry_log "registry $_mode at $REGISTRY (dir $_dir)"
    return 0
}

# faultproxy_start [--rule SPEC]...: a fault proxy in front of $REGISTRY.
faultproxy_start() {
    [ -n "${REGISTRY:-}" ] || { _registry_log "faultproxy_start: no registry started"; return 1; }
    [ -z "$_faultproxy_pid" ] || faultproxy_stop
    _registry_tmpdir || return 1
    _d=$_registry_tmp/faultproxy.$_registry_n
    mkdir -p "$_d" || return 1
    rm -f "$_d/port"
    "$REGISTRY_PYTHON" "$REGISTRY_LIB/faultproxy.py" --upstream "$REGISTRY" \
        --port-file "$_d/port" --log "$_d/requests.log" "$@" \
        </dev/null >"$_d/proxy.log" 2>&1 &
    _faultproxy_pid=$!
    _registry_pids="$_registry_pids $_faultproxy_pid"
    _registry_wait_file "$_d/port" "$_faultproxy_pid" 30 ||
        { _registry_fail "faultproxy did not start" "$_d/proxy.log"; return 1; }
    FAULTPROXY=127.0.0.1:$(cat "$_d/port")
    FAULTPROXY_URL=http://$FAULTPROXY
    FAULTPROXY_LOG=$_d/requests.log
    export FAULTPROXY FAULTPROXY_URL FAULTPROXY_LOG
    _registry_log "faultproxy at $FAULTPROXY -> $REGISTRY"
}

# faultproxy_rule SPEC: add a rule to the running proxy (prints {"id": N}).
faultproxy_rule() {
    curl -sf -X POST --data-binary "$1" "$FAULTPROXY_URL/__faultproxy/rules"
}

faultproxy_clear() {
    curl -sf -X DELETE "$FAULTPROXY_URL/__faultproxy/rules" >/dev/null
}

faultproxy_stop() {
    [ -n "$_faultproxy_pid" ] || return 0
    _registry_kill "$_faultproxy_pid"
    _left=
    for _p in $_registry_pids; do
        [ "$_p" = "$_faultproxy_pid" ] || _left="$_left $_p"
    done
    _registry_pids=$_left
    _faultproxy_pid=
    unset FAULTPROXY FAULTPROXY_URL
}

# registry_stop: stop every process started here (registries, issuers, proxies).
registry_stop() {
    for _p in $_registry_pids; do
        _registry_kill "$_p"
    done
    _registry_pids=
    _faultproxy_pid=
}

# registry_cleanup: registry_stop, then remove the temporary directory.
registry_cleanup() {
    registry_stop
    if [ -n "$_registry_tmp" ] && [ "${REGISTRY_KEEP:-0}" != 1 ]; then
        rm -rf "$_registry_tmp"
    fi
    _registry_tmp=
}

trap 'registry_cleanup' EXIT
trap 'registry_cleanup; exit 130' INT
trap 'registry_cleanup; exit 143' TERM
trap 'registry_cleanup; exit 129' HUP
