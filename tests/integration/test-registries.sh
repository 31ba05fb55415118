#!/bin/sh
# TAP test of the test registries (tests/integration/lib): every auth mode of
# registry.sh, the token issuer and the fault proxy, driven with curl only.
# usage: test-registries.sh [SOURCE_DIR]   (SOURCE_DIR holds lib/; default: this script's dir)
set -u
REGISTRY_LIB=$(cd "${1:-$(dirname "$0")}" && pwd)/lib
# shellcheck source-path=SCRIPTDIR source=lib/registry.sh
. "$REGISTRY_LIB/registry.sh"

if ! registry_available; then
    echo "1..0 # SKIP $REGISTRY_MISSING"
    exit 0
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-registries.XXXXXX")
trap 'registry_cleanup; rm -rf "$T"' EXIT
trap 'registry_cleanup; rm -rf "$T"; exit 130' INT TERM HUP
n=0
fails=0

ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        fails=$((fails + 1))
    fi
}

is() { # is GOT WANT DESCRIPTION
    [ "$1" = "$2" ]
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   got:  '$1'"; echo "#   want: '$2'"; }
}

# req [CURL ARGS...]: runs curl, headers to $T/h, body to $T/b; prints the status code.
req() {
    curl -s -D "$T/h" -o "$T/b" -w '%{http_code}' "$@"
}

# header NAME: the value of a response header in $T/h (last one wins).
header() {
    tr -d '\r' <"$T/h" | sed -n "s/^$1: *//Ip" | tail -n 1
}

# json_field NAME FILE: a string field of a flat JSON object.
json_field() {
    tr -d '\n' <"$2" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"
}

json_number() {
    tr -d '\n' <"$2" | sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p"
}

sha() {
    sha256sum "$1" | cut -d' ' -f1
}

# push_blob BASE REPO FILE [CURL AUTH ARGS...]: monolithic upload; sets push_post, push_put.
push_blob() {
    _base=$1 _repo=$2 _file=$3
    shift 3
    push_post=$(req -X POST "$@" "$_base/v2/$_repo/blobs/uploads/")
    push_loc=$(header Location)
    case $push_loc in /*) push_loc=$_base$push_loc ;; esac
    case $push_loc in *\?*) _sep='&' ;; *) _sep='?' ;; esac
    push_put=$(req -X PUT "$@" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$_file" "$push_loc${_sep}digest=sha256:$(sha "$_file")")
}

head -c 4096 /dev/urandom >"$T/small"
head -c 1048576 /dev/urandom >"$T/big"
SMALL=sha256:$(sha "$T/small")
BIG=sha256:$(sha "$T/big")

# ---- no auth -----------------------------------------------------------------
registry_start noauth
ok $? "start a registry without auth"
case $REGISTRY in 127.0.0.1:[0-9]*) r=0 ;; *) r=1 ;; esac
ok $r "REGISTRY is 127.0.0.1:PORT ($REGISTRY)"
is "$(req "$REGISTRY_URL/v2/")" 200 "noauth: /v2/ answers 200"
is "$(header Docker-Distribution-Api-Version)" "registry/2.0" "noauth: API version header"
push_blob "$REGISTRY_URL" test/blob "$T/small"
is "$push_post" 202 "noauth: POST upload starts"
is "$push_put" 201 "noauth: PUT ?digest= completes the upload"
is "$(header Docker-Content-Digest)" "$SMALL" "noauth: the registry computed the same digest"
is "$(req "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 200 "noauth: GET the blob"
is "sha256:$(sha "$T/b")" "$SMALL" "noauth: the blob comes back intact"
is "$(req -I "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 200 "noauth: HEAD the blob"
is "$(header Content-Length)" 4096 "noauth: HEAD gives the size"
is "$(req "$REGISTRY_URL/v2/test/blob/blobs/sha256:$(printf '%064d' 0)")" 404 "noauth: unknown blob is 404"
NOAUTH=$REGISTRY
NOAUTH_URL=$REGISTRY_URL

# ---- basic auth --------------------------------------------------------------
registry_start basic
ok $? "start a registry with htpasswd auth"
is "$(req "$REGISTRY_URL/v2/")" 401 "basic: /v2/ without credentials is 401"
is "$(header WWW-Authenticate)" 'Basic realm="kiln-test"' "basic: Basic challenge with the realm"
is "$(req -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "$REGISTRY_URL/v2/")" 200 \
    "basic: /v2/ with the password (it holds a ':') is 200"
is "$(req -u "$REGISTRY_USER:wrong" "$REGISTRY_URL/v2/")" 401 "basic: wrong password is 401"
is "$(req -u "nobody:$REGISTRY_PASSWORD" "$REGISTRY_URL/v2/")" 401 "basic: unknown user is 401"
is "$(req -u "$REGISTRY_RO_USER:$REGISTRY_RO_PASSWORD" "$REGISTRY_URL/v2/")" 200 "basic: second user"
push_blob "$REGISTRY_URL" test/blob "$T/small" -u "$REGISTRY_USER:$REGISTRY_PASSWORD"
is "$push_post/$push_put" 202/201 "basic: push a blob with credentials"
push_blob "$REGISTRY_URL" test/blob "$T/small"
is "$push_post" 401 "basic: push without credentials is 401"
is "$(req -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 200 \
    "basic: GET the blob"
is "sha256:$(sha "$T/b")" "$SMALL" "basic: the blob comes back intact"

# ---- token auth --------------------------------------------------------------
# token_get USER:PASSWORD QUERY: GET a token into $T/tok.json; prints the status.
token_get() {
    if [ -n "$1" ]; then
        curl -s -o "$T/tok.json" -w '%{http_code}' -u "$1" "$REGISTRY_REALM?$2"
    else
        curl -s -o "$T/tok.json" -w '%{http_code}' "$REGISTRY_REALM?$2"
    fi
}

token_checks() { # token_checks LABEL: the token flow against the current registry
    _l=$1
    is "$(req "$REGISTRY_URL/v2/")" 401 "$_l: /v2/ without a token is 401"
    is "$(header WWW-Authenticate)" "Bearer realm=\"$REGISTRY_REALM\",service=\"kiln-test\"" \
        "$_l: Bearer challenge with realm and service"
    S=repository:test/blob:pull,push
    is "$(token_get "$REGISTRY_USER:$REGISTRY_PASSWORD" "service=kiln-test&scope=$S")" 200 \
        "$_l: the issuer gives a token for user and password"
    TOKEN=$(json_field token "$T/tok.json")
    [ -n "$TOKEN" ] && [ "$TOKEN" = "$(json_field access_token "$T/tok.json")" ]
    ok $? "$_l: token and access_token are the same JWT"
    is "$(json_number expires_in "$T/tok.json")" "${REGISTRY_TOKEN_EXPIRES:-300}" "$_l: expires_in"
    json_field issued_at "$T/tok.json" | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$'
    ok $? "$_l: issued_at is RFC 3339"
    is "$(req -H "Authorization: Bearer $TOKEN" "$REGISTRY_URL/v2/")" 200 "$_l: /v2/ with the token"
    push_blob "$REGISTRY_URL" test/blob "$T/small" -H "Authorization: Bearer $TOKEN"
    is "$push_post/$push_put" 202/201 "$_l: push a blob with the bearer token"
    is "$(req -H "Authorization: Bearer $TOKEN" "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 200 \
        "$_l: GET the blob with the token"
    is "sha256:$(sha "$T/b")" "$SMALL" "$_l: the blob comes back intact"
}

registry_start token
ok $? "start a registry with token auth (ES256, kid)"
token_checks "token"
is "$(token_get "$REGISTRY_USER:wrong" "service=kiln-test&scope=$S")" 401 "token: wrong password is 401"
grep -q '"token"' "$T/tok.json"
ok $((!$?)) "token: no token for a wrong password"
is "$(req -X POST "$REGISTRY_URL/v2/test/blob/blobs/uploads/")" 401 "token: push without a token is 401"
# distribution lists the two actions in either order
header WWW-Authenticate | grep -Eqx \
    "Bearer realm=\"$REGISTRY_REALM\",service=\"kiln-test\",scope=\"repository:test/blob:(pull,push|push,pull)\""
ok $? "token: the challenge names the scope"
is "$(req -H "Authorization: Bearer x.y.z" "$REGISTRY_URL/v2/")" 401 "token: a garbage token is 401"
header WWW-Authenticate | grep -q 'error="invalid_token"'
ok $? "token: garbage token gets error=invalid_token"

token_get "$REGISTRY_RO_USER:$REGISTRY_RO_PASSWORD" "service=kiln-test&scope=$S" >/dev/null
RO=$(json_field token "$T/tok.json")
is "$(req -X POST -H "Authorization: Bearer $RO" "$REGISTRY_URL/v2/test/blob/blobs/uploads/")" 401 \
    "token: a pull-only token cannot push"
header WWW-Authenticate | grep -q 'error="insufficient_scope"'
ok $? "token: pull-only push gets error=insufficient_scope"
is "$(req -H "Authorization: Bearer $RO" "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 200 \
    "token: a pull-only token can pull"

is "$(token_get "" "service=kiln-test&scope=repository:test/blob:pull")" 200 "token: anonymous token"
ANON=$(json_field token "$T/tok.json")
is "$(req -H "Authorization: Bearer $ANON" "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 401 \
    "token: the anonymous token grants nothing"

is "$(token_get "$REGISTRY_USER:$REGISTRY_PASSWORD" \
    "service=kiln-test&scope=repository:test/blob:pull&scope=repository:other/repo:pull")" 200 \
    "token: GET with two scope parameters"
TWO=$(json_field token "$T/tok.json")
is "$(req -H "Authorization: Bearer $TWO" "$REGISTRY_URL/v2/other/repo/blobs/$SMALL")" 404 \
    "token: the second scope is granted (404, not 401)"
is "$(req -H "Authorization: Bearer $TWO" "$REGISTRY_URL/v2/third/repo/blobs/$SMALL")" 401 \
    "token: a scope not asked for is not granted"
is "$(token_get "$REGISTRY_USER:$REGISTRY_PASSWORD" "service=other&scope=$S")" 400 \
    "token: a wrong service is 400"
is "$(token_get "$REGISTRY_USER:$REGISTRY_PASSWORD" "service=kiln-test&scope=$S&offline_token=true")" \
    200 "token: GET with offline_token=true"
[ -n "$(json_field refresh_token "$T/tok.json")" ]
ok $? "token: offline_token gives a refresh token"

# OAuth2 POST: password grant, then refresh grant
code=$(curl -s -o "$T/tok.json" -w '%{http_code}' \
    --data-urlencode grant_type=password --data-urlencode "username=$REGISTRY_USER" \
    --data-urlencode "password=$REGISTRY_PASSWORD" --data-urlencode service=kiln-test \
    --data-urlencode client_id=kiln-test --data-urlencode access_type=offline \
    --data-urlencode "scope=repository:test/blob:pull" "$REGISTRY_REALM")
is "$code" 200 "token: POST grant_type=password"
REFRESH=$(json_field refresh_token "$T/tok.json")
[ -n "$REFRESH" ] && [ -n "$(json_field access_token "$T/tok.json")" ]
ok $? "token: POST answers access_token and refresh_token"
code=$(curl -s -o "$T/tok.json" -w '%{http_code}' \
    --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$REFRESH" \
    --data-urlencode service=kiln-test --data-urlencode client_id=kiln-test \
    --data-urlencode "scope=repository:test/blob:pull" "$REGISTRY_REALM")
is "$code" 200 "token: POST grant_type=refresh_token"
RT=$(json_field access_token "$T/tok.json")
is "$(req -H "Authorization: Bearer $RT" "$REGISTRY_URL/v2/test/blob/blobs/$SMALL")" 200 \
    "token: the refreshed token pulls"
code=$(curl -s -o "$T/tok.json" -w '%{http_code}' --data-urlencode grant_type=refresh_token \
    --data-urlencode refresh_token=bogus --data-urlencode service=kiln-test "$REGISTRY_REALM")
is "$code" 400 "token: an unknown refresh token is 400"
code=$(curl -s -o "$T/tok.json" -w '%{http_code}' --data-urlencode grant_type=password \
    --data-urlencode "username=$REGISTRY_USER" --data-urlencode password=wrong \
    --data-urlencode service=kiln-test "$REGISTRY_REALM")
is "$code" 401 "token: POST with a wrong password is 401"
grep -q '"method": "POST"' "$REGISTRY_DIR/issuer/requests.log"
ok $? "token: the issuer logs requests"
grep -q "$REGISTRY_PASSWORD" "$REGISTRY_DIR/issuer/requests.log"
ok $((!$?)) "token: the issuer log holds no password"

REGISTRY_TOKEN_SIGN=x5c registry_start token
ok $? "start a registry with token auth (ES256, x5c)"
token_checks "token x5c"
REGISTRY_TOKEN_ALG=RS256 registry_start token
ok $? "start a registry with token auth (RS256, kid)"
token_checks "token rs256"

# ---- fault proxy (in front of the registry without auth) ----------------------
REGISTRY=$NOAUTH
REGISTRY_URL=$NOAUTH_URL
faultproxy_start --rule 'path=^/v2/$,status=503,count=2,retry-after=1'
ok $? "start the fault proxy"
P=$FAULTPROXY_URL
is "$(req "$P/v2/")" 503 "proxy: first /v2/ is 503"
is "$(header Retry-After)" 1 "proxy: with Retry-After"
is "$(req "$P/v2/")" 503 "proxy: second /v2/ is 503"
is "$(req "$P/v2/")" 200 "proxy: third /v2/ succeeds"
is "$(header Docker-Distribution-Api-Version)" "registry/2.0" "proxy: passes the registry's headers"

faultproxy_rule 'path=^/v2/$,status=429,retry-after=7' >/dev/null
ok $? "proxy: add a rule on the control endpoint"
is "$(req "$P/v2/")" 429 "proxy: 429 from the added rule"
is "$(header Retry-After)" 7 "proxy: 429 with Retry-After"
is "$(req "$P/v2/")" 200 "proxy: then 200"

push_blob "$P" test/big "$T/big"
is "$push_post/$push_put" 202/201 "proxy: push 1 MiB through the proxy"
case $push_loc in "$P"/*) r=0 ;; *) r=1 ;; esac
ok $r "proxy: the upload Location points at the proxy"
is "$(req "$P/v2/test/big/blobs/$BIG")" 200 "proxy: GET the big blob"
is "sha256:$(sha "$T/b")" "$BIG" "proxy: the big blob comes back intact"

faultproxy_rule 'path=/blobs/sha256:,method=GET,drop=1000' >/dev/null
curl -s -o "$T/b" "$P/v2/test/big/blobs/$BIG"
is "$?" 18 "proxy: a dropped body is a short read for curl (exit 18)"
is "$(wc -c <"$T/b" | tr -d ' ')" 1000 "proxy: exactly 1000 bytes arrived"
curl -s -o "$T/b" "$P/v2/test/big/blobs/$BIG"
is "$?" 0 "proxy: the retry gets the whole blob"
is "sha256:$(sha "$T/b")" "$BIG" "proxy: and it is intact"

faultproxy_rule 'path=/blobs/,hangup=1' >/dev/null
curl -s -o /dev/null "$P/v2/test/big/blobs/$BIG"
is "$?" 52 "proxy: hangup is an empty reply for curl (exit 52)"
faultproxy_rule 'path=^/v2/$,delay=3000' >/dev/null
curl -s -o /dev/null --max-time 1 "$P/v2/"
is "$?" 28 "proxy: delay makes curl time out (exit 28)"

curl -s "$P/__faultproxy/stats" >"$T/stats"
is "$(json_number faults "$T/stats")" 6 "proxy: stats count the faults"
curl -s "$P/__faultproxy/rules" >"$T/rules"
is "$(grep -o '"fired": 1' "$T/rules" | wc -l | tr -d ' ')" 4 "proxy: rules list their firings"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary 'bogus' "$P/__faultproxy/rules")" \
    400 "proxy: a bad rule is refused"
faultproxy_clear
ok $? "proxy: clear the rules"
is "$(req "$P/v2/")" 200 "proxy: no faults after clearing"
grep -q '"result": 503' "$FAULTPROXY_LOG"
ok $? "proxy: requests are logged"

# ---- stopping ------------------------------------------------------------------
registry_stop
curl -s -o /dev/null --max-time 2 "$NOAUTH_URL/v2/"
is "$?" 7 "registry_stop: the registry is gone"
curl -s -o /dev/null --max-time 2 "$P/v2/"
is "$?" 7 "registry_stop: the proxy is gone"

echo "1..$n"
[ "$fails" -eq 0 ]
