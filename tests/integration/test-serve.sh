#!/bin/sh
# TAP test of `kiln serve` end to end, with real parts only: the kiln binary
# serving its JSON API on loopback, a SQLite store, a loopback docker-registry
# with basic auth (the push credentials come from the environment, the base
# image is pulled with a stored pull secret), a base made by `kiln base`
# (cached per day, as in test-build.sh), apt packages from Debian's mirror,
# pip packages from a local wheel index, steps run by runc over overlayfs.
#
# Covers: auth, CRUD, a spec saved -> job Pending -> Running -> Succeeded with
# its image pushed, save without change queues nothing, rebuild, log tail and
# follow, cancel of a running apt step (nothing left behind, next build ok),
# delete of a spec while it builds, kill -9 of kiln serve mid-build and restart
# (Failed 'interrupted', or requeued with --requeue-interrupted), SIGTERM with
# a grace period, --job-timeout, a kiln worker on the same store (its job's log
# shown by kiln serve from the store, live while it runs), kiln serve
# --workers 0 (API only) with a kiln worker on its data dir, no registry
# configured, secret redaction.
# usage: test-serve.sh KILN_BINARY [SOURCE_DIR]
set -u
KILN=$1
HERE=$(cd "${2:-$(dirname "$0")}" && pwd)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/wheelhouse.sh
. "$HERE/lib/wheelhouse.sh"

if ! registry_available; then
    echo "1..0 # SKIP $REGISTRY_MISSING"
    exit 0
fi
for tool in mmdebstrap jq runc flock curl base64; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP missing: $tool"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "1..0 # SKIP kiln serve builds need root (overlay mounts, runc)"
    exit 0
fi

T=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-test-serve.XXXXXX") || exit 1
SPID=
stop_serve() { # stop_serve [SIGNAL]: stop the running kiln serve, wait for it
    [ -n "$SPID" ] || return 0
    kill "-${1:-TERM}" "$SPID" 2>/dev/null
    i=0
    while kill -0 "$SPID" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SERVE_RC=$?
    SPID=
}
cleanup() {
    stop_serve KILL
    if [ -n "${WPID:-}" ]; then
        kill -9 "$WPID" 2>/dev/null
        wait "$WPID" 2>/dev/null
    fi
    # never leave a container or a mount behind, whatever happened
    for d in "$T"/data*/runtime; do
        [ -d "$d" ] || continue
        runc --root "$d" list -q 2>/dev/null | while read -r c; do runc --root "$d" delete -f "$c" >/dev/null 2>&1; done
    done
    grep " $T/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    wheelhouse_cleanup
    registry_cleanup
    [ "${KILN_TEST_KEEP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
n=0
fails=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
is() { # is GOT WANT DESCRIPTION
    [ "$1" = "$2" ]
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   got:  '$1'"; echo "#   want: '$2'"; }
}
show() { tail -n "${2:-15}" "$1" | sed 's/^/#   /'; }

# ---- fixtures: registry (basic auth), base image, wheel index ----------------------
registry_start basic >/dev/null 2>&1 || { echo "1..0 # SKIP cannot start docker-registry"; exit 0; }
# the push credentials of kiln serve (and of `kiln push` for the base)
export KILN_REGISTRY_ENDPOINT="$REGISTRY"
export KILN_REGISTRY_USERNAME="$REGISTRY_USER"
export KILN_REGISTRY_PASSWORD="$REGISTRY_PASSWORD"
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
if [ ! -f "$BASE_LAYOUT/index.json" ]; then
    echo "1..0 # SKIP could not bootstrap the base image: $(tail -n 3 "$T/base.out" | tr '\n' ' ')"
    exit 0
fi
BASE=$REGISTRY/kiln/base:bookworm
"$KILN" push -q --oci-dir "$BASE_LAYOUT:base" "$BASE" >/dev/null 2>"$T/push.err" ||
    { echo "1..0 # SKIP cannot push the base: $(cat "$T/push.err")"; exit 0; }

wheelhouse_make "$T/wh" kilntest-hello==1.0 >/dev/null 2>&1
wheelhouse_start "$T/wh" >/dev/null 2>&1 || { echo "1..0 # SKIP cannot start the wheel index"; exit 0; }
export KILN_PIP_INDEX_URL="$WHEELHOUSE_URL"
export KILN_REPO_PREFIX="$REGISTRY/built"
unset KILN_ADMIN_TOKEN KILN_DATA_DIR KILN_PUSH_REPOSITORY PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT \
    PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX 2>/dev/null

# secrets that must never show up in a response, a job log or the server's output
PULL_USER=$REGISTRY_RO_USER
PULL_PASSWORD=$REGISTRY_RO_PASSWORD
PULL_AUTH=$(printf '%s:%s' "$PULL_USER" "$PULL_PASSWORD" | base64 -w0)
PUSH_AUTH=$(printf '%s:%s' "$REGISTRY_USER" "$REGISTRY_PASSWORD" | base64 -w0)

# ---- helpers ------------------------------------------------------------------------
mkdir -p "$T/resp"
k=0
URL=
TOKEN=
# start_serve NAME DATA [ARGS...]: start kiln serve, wait for "listening on", set URL
start_serve() {
    name=$1
    data=$2
    shift 2
    "$KILN" serve --listen 127.0.0.1:0 --data-dir "$data" --runtime runc "$@" \
        </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    SPID=$!
    i=0
    URL=
    while [ $i -lt 300 ]; do
        URL=$(sed -n 's/^kiln serve: listening on \(http:[^ ]*\)$/\1/p' "$T/$name.err" 2>/dev/null | head -n 1)
        [ -n "$URL" ] && return 0
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    show "$T/$name.err"
    return 1
}
# api METHOD PATH [BODY]: CODE and BODY of the response (also kept in $T/resp/)
api() {
    k=$((k + 1))
    if [ $# -ge 3 ]; then
        CODE=$(curl -s -o "$T/resp/$k" -D "$T/resp/$k.h" -w '%{http_code}' -X "$1" \
            -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            --data-binary "$3" "$URL$2")
    else
        CODE=$(curl -s -o "$T/resp/$k" -D "$T/resp/$k.h" -w '%{http_code}' -X "$1" \
            -H "Authorization: Bearer $TOKEN" "$URL$2")
    fi
    BODY=$(cat "$T/resp/$k")
}
# jb JQ-ARGS...: jq on the last response's body
jb() { printf '%s\n' "$BODY" | jq "$@"; }
# jj JQ-ARGS...: jq on the job wait_job saw last
jj() { printf '%s\n' "$JOB" | jq "$@"; }
# body NAME APT PIP [SECRET]: a short-form spec (APT, PIP comma-separated)
body() {
    jq -cn --arg n "$1" --arg b "$BASE" --arg a "$2" --arg p "$3" --arg s "${4:-}" \
        '{name: $n, baseImage: $b,
          packages: {apt: ($a | split(",") | map(select(. != ""))), conda: [],
                     pip: ($p | split(",") | map(select(. != "")))}}
         + (if $s == "" then {} else {pullSecret: $s} end)'
}
# wait_claimed JOB: until the job is no longer Pending (at most 30 s).
wait_claimed() {
    i=0
    while [ $i -lt 300 ]; do
        api GET "/api/v1/jobs/$1"
        [ "$(jb -r .phase)" = Pending ] || return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# wait_job ID SECS: poll until final; PHASE is the last phase, SEEN every phase seen
wait_job() {
    i=0
    SEEN=
    while :; do
        k=$((k + 1))
        curl -s -o "$T/resp/$k" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$1"
        PHASE=$(jq -r .phase "$T/resp/$k" 2>/dev/null)
        case " $SEEN " in *" $PHASE "*) ;; *) SEEN="${SEEN:+$SEEN }$PHASE" ;; esac
        case $PHASE in Succeeded | Failed | Cancelled) JOB=$(cat "$T/resp/$k"); return 0 ;; esac
        kill -0 "$SPID" 2>/dev/null || { JOB=; return 1; }
        i=$((i + 1))
        [ $i -gt $(($2 * 5)) ] && { JOB=$(cat "$T/resp/$k"); return 1; }
        sleep 0.2
    done
}
# wait_log ID SECS: until the job's log holds a line of a step's output (" | ")
wait_log() {
    i=0
    while [ $i -lt $(($2 * 5)) ]; do
        k=$((k + 1))
        curl -s -o "$T/resp/$k" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$1/log"
        grep -q '^[0-9TZ:-]* | ' "$T/resp/$k" && return 0
        kill -0 "$SPID" 2>/dev/null || return 1
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}
# leftovers: the containers, mounts and build dirs of builds under $D, one a line
leftovers() {
    runc --root "$D/runtime" list -q 2>/dev/null
    grep " $D/" /proc/self/mounts | awk '{print $2}'
    ls "$D/builds" 2>/dev/null
}
# still SNAPSHOT: which lines of an earlier `leftovers` are still there
still() {
    leftovers >"$T/now"
    printf '%s\n' "$1" | while read -r x; do
        [ -n "$x" ] && grep -qxF -- "$x" "$T/now" && printf '%s ' "$x"
    done
}
# settle SNAPSHOT: wait (up to 10 s) until none of it is left
settle() {
    i=0
    while [ -n "$(still "$1")" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
}

D=$T/data

# ---- 1. first start: token made and printed once; auth -------------------------------
"$KILN" serve --help >"$T/help.out" 2>&1
ok $? "kiln serve --help exits 0"
grep -q -- '--requeue-interrupted' "$T/help.out" && grep -q 'KILN_ADMIN_TOKEN' "$T/help.out"
ok $? "the help lists the options and the environment"

# builds share their steps through the registry (KILN_CACHE_REPO, on the push registry)
export KILN_CACHE_REPO="$REGISTRY/kiln/cache"
start_serve s1 "$D" --workers 1
ok $? "kiln serve starts and says where it listens"
unset KILN_CACHE_REPO
TOKEN=$(sed -n 's/^kiln serve: admin token (shown once): \([0-9a-f]*\)$/\1/p' "$T/s1.err")
is "${#TOKEN}" 64 "a new admin token is printed once (64 hex digits)"
is "$(curl -s "$URL/healthz")" ok "/healthz answers without a token"
is "$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/v1/specs")" 401 "no token: 401"
is "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' "$URL/api/v1/specs")" \
    401 "a wrong token: 401"

api GET /api/v1/registry
is "$CODE $(jb -c '[.configured, .endpoint]')" "200 [true,\"$REGISTRY\"]" \
    "/registry: configured, with the endpoint"

# ---- 2. a pull secret (write-only) ------------------------------------------------------
SECRET_JSON=$(jq -cn --arg r "$REGISTRY" --arg a "$PULL_AUTH" '{auths: {($r): {auth: $a}}}')
api POST /api/v1/secrets "$(jq -cn --arg v "$SECRET_JSON" '{name: "pull", dockerconfigjson: $v}')"
is "$CODE" 201 "POST /secrets stores a pull secret"
api GET /api/v1/secrets
is "$(jb -c '[.items[].name]')" '["pull"]' "GET /secrets lists it by name"

# ---- 3. a spec saved -> Pending -> Running -> Succeeded, image pushed -----------------
api PUT /api/v1/specs/demo "$(body demo curl kilntest-hello==1.0 pull)"
is "$CODE" 201 "PUT of a new spec: 201"
case "$(jb -r '[.queued, .job.phase] | @tsv')" in
"true	Pending" | "true	Running") ok 0 "a build is queued" ;;
*) ok 1 "a build is queued (got: $BODY)" ;;
esac
J1=$(jb -r .job.id)
REV=$(jb -r .spec.revision)
wait_job "$J1" 120
is "$PHASE" Succeeded "the first build succeeds"
[ "$PHASE" = Succeeded ] || { jj -r .error | sed 's/^/#   /'; show "$D/logs/$J1.log" 20; }
case " $SEEN " in *" Running Succeeded "*) ok 0 "phases seen: $SEEN" ;; *) ok 1 "phases seen: $SEEN" ;; esac
IMG=$REGISTRY/built/demo:$REV
is "$(jj -r .image)" "$IMG" "the job's image is PREFIX/NAME:REVISION"
DIG=$(jj -r .digest)
got=$(curl -s -o /dev/null -w '%{http_code} %header{docker-content-digest}' -u "$REGISTRY_USER:$REGISTRY_PASSWORD" \
    -I -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$REGISTRY_URL/v2/built/demo/manifests/$REV")
is "$got" "200 $DIG" "the registry holds the image under that tag and digest"
grep -q "pull secret 'pull': credentials for '$REGISTRY'" "$D/logs/$J1.log"
ok $? "the base image was pulled with the pull secret's credentials"
ntags=$(curl -s -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "$REGISTRY_URL/v2/kiln/cache/tags/list" |
    jq -r '[.tags[]? | select(startswith("step-"))] | length')
is "$ntags" 2 "the job pushed its two steps to KILN_CACHE_REPO (step-KEY tags)"
api GET /api/v1/specs/demo
is "$(jb -r '[.status, .image, .revision] | @tsv')" "Succeeded	$IMG	$REV" \
    "GET /specs/demo: status Succeeded, image URL, revision"

# ---- 4. save without change; rebuild ----------------------------------------------------
api PUT /api/v1/specs/demo "$(body demo curl kilntest-hello==1.0 pull)"
is "$CODE $(jb -r '[.queued, .message] | @tsv')" "200 false	no change, nothing to build" \
    "saving it unchanged queues nothing"
api GET /api/v1/specs/demo/jobs
is "$(jb -r .total)" 1 "still one job"
api POST /api/v1/specs/demo/rebuild
is "$CODE" 202 "rebuild: 202"
J2=$(jb -r .id)
wait_job "$J2" 60
is "$PHASE $(jj -r .digest)" "Succeeded $DIG" "the rebuild succeeds with the same digest"
grep -q 'cached' "$D/logs/$J2.log"
ok $? "its steps come from the step cache"

# ---- 5. logs: tail, follow --------------------------------------------------------------
api GET "/api/v1/jobs/$J1/log?tail=3"
is "$CODE $(printf '%s\n' "$BODY" | wc -l)" "200 3" "?tail=3 gives the last 3 lines"
printf '%s\n' "$BODY" | tail -n 1 | grep -q "job $J1: Succeeded"
ok $? "the last line says the job succeeded"
api GET "/api/v1/jobs/$J1/log"
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z \| Setting up curl' "$T/resp/$k"
ok $? "the whole log: timestamped step output lines ('TIME | ...')"

api PUT /api/v1/specs/demo "$(body demo curl,jq kilntest-hello==1.0 pull)"
J3=$(jb -r .job.id)
is "$(jb -r .queued)" true "a changed spec queues a build"
k=$((k + 1))
timeout 120 curl -sN -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$J3/log?follow=1" >"$T/resp/$k"
ok $? "?follow=1 streams until the job is final, then ends"
grep -q ' | Setting up jq' "$T/resp/$k" && tail -n 1 "$T/resp/$k" | grep -q "job $J3: Succeeded"
ok $? "the followed log holds the step's output and the final line"
wait_job "$J3" 10
is "$PHASE" Succeeded "the changed spec's build succeeds"
api GET /api/v1/specs/demo/jobs
is "$(jb -c '[.items[].id]')" "[$J3,$J2,$J1]" "its jobs, newest first"

# ---- 6. cancel a running apt step ---------------------------------------------------------
api PUT /api/v1/specs/cancelme "$(body cancelme file '')"
JC=$(jb -r .job.id)
wait_log "$JC" 60
ok $? "the apt step is running"
SNAP=$(leftovers)
[ -n "$SNAP" ]
ok $? "its container, overlay mounts and build dir exist"
# one worker, busy: a spec saved now waits
api PUT /api/v1/specs/queued "$(body queued nano '')"
JQ=$(jb -r .job.id)
api GET "/api/v1/jobs/$JQ"
is "$(jb -r .phase)" Pending "while the worker is busy, a new spec's job is Pending"
api POST "/api/v1/jobs/$JC/cancel"
is "$CODE" 202 "cancel: 202"
wait_job "$JC" 30
is "$PHASE" Cancelled "the job is Cancelled"
is "$(still "$SNAP")" "" "its container, mounts and build dir are gone"
api POST "/api/v1/jobs/$JC/cancel"
is "$CODE" 409 "cancelling a final job: 409"
wait_job "$JQ" 90
case " $SEEN " in
*" Running Succeeded "*) ok 0 "the next build runs: Pending -> $SEEN" ;;
*) ok 1 "the next build runs: Pending -> $SEEN" ;;
esac
is "$(jj -r .image)" "$REGISTRY/built/queued:$(jj -r .revision)" "with its image URL"

# ---- 7. CRUD: create, conflict, delete while building ----------------------------------
api POST /api/v1/specs "$(body crud bc '')"
is "$CODE" 201 "POST /specs creates a spec"
grep -qi '^Location: .*/api/v1/specs/crud' "$T/resp/$k.h"
ok $? "with a Location header"
JD=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/api/v1/specs/crud" | jq -r .jobId)
api POST /api/v1/specs "$(body crud bc '')"
is "$CODE" 409 "POST of a taken name: 409"
api PUT /api/v1/specs/crud '{"name": "crud", "baseImage": "x", "packages": {"apt": ["curl; rm -rf /"]}}'
is "$CODE" 422 "an invalid spec: 422"
jb -e '.error.fields | map(.field) | index("packages.apt[0]")' >/dev/null
ok $? "naming the field"
wait_log "$JD" 60
SNAP=$(leftovers)
api DELETE /api/v1/specs/crud
is "$CODE" 204 "DELETE of a spec while it builds: 204"
api GET /api/v1/specs/crud
is "$CODE" 404 "then it is gone"
api GET "/api/v1/jobs/$JD"
is "$CODE" 404 "and so is its job"
settle "$SNAP"
is "$(still "$SNAP")" "" "its build was stopped: nothing left behind"
[ ! -e "$D/logs/$JD.log" ]
ok $? "its log file is removed"

# ---- 8. metrics --------------------------------------------------------------------------
curl -s "$URL/metrics" >"$T/metrics"
grep -Eq '^kiln_pushed_bytes_total [1-9][0-9]*' "$T/metrics"
ok $? "/metrics counts pushed bytes"
grep -Eq '^kiln_build_duration_seconds_count [1-9]' "$T/metrics"
ok $? "/metrics has the build duration histogram"

# ---- 9. kill -9 during a build, restart: Failed 'interrupted' ------------------------------
api GET /api/v1/specs
SPECS1=$(jb -c '[.items[] | [.name, .revision]]')
api PUT /api/v1/specs/killme "$(body killme less '')"
JK=$(jb -r .job.id)
wait_log "$JK" 60
ok $? "a build is running"
SNAP=$(leftovers)
stop_serve KILL
start_serve s2 "$D"
ok $? "kiln serve starts again"
grep -q 'admin token (shown once)' "$T/s2.err"
ok $((!$?)) "no new token: the stored one is used"
api GET "/api/v1/jobs/$JK"
is "$CODE $(jb -r '[.phase, .error] | @tsv')" "200 Failed	interrupted" \
    "the killed build is Failed 'interrupted'"
api GET /api/v1/specs
is "$(jb -c '[.items[] | [.name, .revision]] | map(select(.[0] != "killme"))')" "$SPECS1" \
    "the specs are intact"
api POST /api/v1/specs/killme/rebuild
wait_job "$(jb -r .id)" 90
is "$PHASE" Succeeded "the next build succeeds"
is "$(still "$SNAP")" "" "the dead build's container, mounts and dir were cleaned up"

# ---- 10. kill -9 again, restart with --requeue-interrupted: the job runs again --------------
api PUT /api/v1/specs/requeue "$(body requeue tree '')"
JR=$(jb -r .job.id)
wait_log "$JR" 60
ok $? "another build is running"
stop_serve KILL
start_serve s3 "$D" --requeue-interrupted --grace 1
ok $? "kiln serve --requeue-interrupted starts"
wait_job "$JR" 90
is "$PHASE $(jj -r .attempt)" "Succeeded 2" "the interrupted job is requeued and succeeds (attempt 2)"

# ---- 11. SIGTERM during a build: cancelled after --grace ----------------------------------
api PUT /api/v1/specs/grace "$(body grace gcc '')"
JG=$(jb -r .job.id)
wait_log "$JG" 60
stop_serve TERM
is "$SERVE_RC" 0 "SIGTERM: kiln serve exits 0"
grep -q 'cancelling job' "$T/s3.err"
ok $? "after the grace period it cancels the running build"

# ---- 12. --job-timeout ---------------------------------------------------------------------
start_serve s4 "$D" --job-timeout 3
api GET "/api/v1/jobs/$JG"
is "$(jb -r '[.phase, .error] | @tsv')" "Cancelled	kiln serve stopped" \
    "the build stopped by SIGTERM is Cancelled 'kiln serve stopped'"
api POST /api/v1/specs/grace/rebuild
JT=$(jb -r .id)
wait_log "$JT" 60
SNAP=$(leftovers)
wait_job "$JT" 60
is "$(jj -r '[.phase, .error] | @tsv')" "Failed	timed out after 3 s" \
    "a build past --job-timeout fails 'timed out after 3 s'"
is "$(still "$SNAP")" "" "nothing of it is left behind"
stop_serve TERM
is "$SERVE_RC" 0 "an idle kiln serve stops at once on SIGTERM"
is "$(leftovers | tr '\n' ' ')" "" "in the end no container, mount or build dir is left"

# start_worker NAME ARGS...: `kiln worker ARGS` in the background (output in $T/NAME.out and
# $T/NAME.err); waits for its start line; sets WPID and WNAME (its worker name); status 0 once
# it runs
start_worker() {
    _sw=$1
    shift
    "$KILN" worker "$@" </dev/null >"$T/$_sw.out" 2>"$T/$_sw.err" &
    WPID=$!
    i=0
    while [ $i -lt 300 ] && ! grep -q '^kiln worker: 1 build worker running as ' "$T/$_sw.err"; do
        kill -0 "$WPID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    WNAME=$(sed -n 's/^kiln worker: 1 build worker running as \([^ ]*\) .*/\1/p' "$T/$_sw.err" | head -n 1)
    [ -n "$WNAME" ]
}

# stop_worker: SIGTERM to $WPID, wait up to 30 s; its exit status (and WPID emptied)
stop_worker() {
    kill -TERM "$WPID" 2>/dev/null
    i=0
    while kill -0 "$WPID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    wait "$WPID" 2>/dev/null
    _st=$?
    WPID=
    return $_st
}

# ---- 12b. kiln worker: more build workers on the same store, no API ---------------------------
start_serve s6 "$D" --workers 1
start_worker w1 --store "sqlite:$D/kiln.db" --data-dir "$T/dataw" --runtime runc --workers 1
ok $? "kiln worker starts (no API) on kiln serve's store"
# wa's apt step (not in any cache) keeps its builder busy for seconds; wb is
# queued once wa runs, so the other pool's idle worker takes it: kiln serve's
# at once, or kiln worker's at its next look at the store (every 2 s)
api PUT /api/v1/specs/wa "$(body wa bc kilntest-hello==1.0 pull)"
JWA=$(jb -r .job.id)
wait_claimed "$JWA"
api PUT /api/v1/specs/wb "$(body wb file kilntest-hello==1.0 pull)"
JWB=$(jb -r .job.id)
wait_job "$JWA" 180
PA=$PHASE
wait_job "$JWB" 180
is "$PA $PHASE" "Succeeded Succeeded" "two specs queued one after the other are both built"
BY_W=$(grep -l "worker $WNAME)" "$T/dataw/logs/$JWA.log" "$T/dataw/logs/$JWB.log" 2>/dev/null | wc -l)
BY_S=$(ls "$D/logs/$JWA.log" "$D/logs/$JWB.log" 2>/dev/null | wc -l)
is "$BY_W $BY_S" "1 1" "kiln worker built one ($WNAME) and kiln serve the other"
# the worker's job log is in its own data dir; kiln serve shows it from the store
JW=$JWA
[ -f "$D/logs/$JWA.log" ] && JW=$JWB
api GET "/api/v1/jobs/$JW/log"
is "$CODE $(grep -i '^x-kiln-log-source:' "$T/resp/$k.h" | tr -d '\r' | cut -d' ' -f2)" "200 store" \
    "kiln serve serves the worker's job log from the store"
cmp -s "$T/resp/$k" "$T/dataw/logs/$JW.log"
ok $? "it is the worker's log file, byte for byte"
# ... and while it runs: the worker keeps a live copy of a running job's log
# in the store (every 2 s). la keeps one pool busy (apt, not in any cache),
# lb goes to the other; kiln serve shows kiln worker's job before it ends
# and ?follow=1 goes on to the end, each byte once.
api PUT /api/v1/specs/la "$(body la ed '')"
JLA=$(jb -r .job.id)
wait_claimed "$JLA"
api PUT /api/v1/specs/lb "$(body lb units '')"
JLB=$(jb -r .job.id)
JL=
i=0
while [ $i -lt 300 ] && [ -z "$JL" ]; do
    for j in "$JLA" "$JLB"; do [ -f "$T/dataw/logs/$j.log" ] && JL=$j; done
    [ -n "$JL" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$JL" ]
ok $? "kiln worker runs one of two jobs queued together (${JL:-none})"
LIVE=
LPHASE=
i=0
while [ -n "$JL" ] && [ $i -lt 600 ]; do
    api GET "/api/v1/jobs/$JL/log"
    LSRC=$(grep -i '^x-kiln-log-source:' "$T/resp/$k.h" | tr -d '\r' | cut -d' ' -f2)
    LFILE=$T/resp/$k
    api GET "/api/v1/jobs/$JL"
    LPHASE=$(jb -r .phase)
    # the log fetched before the job was seen Running: fetched while it ran
    if [ "$LPHASE" = Running ] && grep -q "job $JL: building spec" "$LFILE"; then
        LIVE=$LFILE
        break
    fi
    case $LPHASE in Succeeded | Failed | Cancelled) break ;; esac
    sleep 0.1
    i=$((i + 1))
done
[ -n "$LIVE" ] && [ "$LSRC" = store ] && ! grep -q "job $JL: Succeeded" "$LIVE"
ok $? "kiln serve shows kiln worker's job log while it runs (store, ${LPHASE:-?})"
[ -n "$LIVE" ] || show "$T/w1.err"
k=$((k + 1))
timeout 180 curl -sN -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/${JL:-0}/log?follow=1" \
    >"$T/resp/$k"
ok $? "?follow=1 of kiln worker's running job ends when it is final"
FOLLOWED=$T/resp/$k
[ -n "$LIVE" ] && [ "$(wc -l <"$FOLLOWED")" -gt "$(wc -l <"$LIVE")" ] &&
    tail -n 1 "$FOLLOWED" | grep -q "job $JL: Succeeded"
ok $? "it delivers the lines written after, to the last"
cmp -s "$FOLLOWED" "$T/dataw/logs/${JL:-0}.log"
ok $? "the followed log is kiln worker's log file, byte for byte"
wait_job "$JLA" 180
PA=$PHASE
wait_job "$JLB" 180
is "$PA $PHASE" "Succeeded Succeeded" "both build"
stop_worker
is "$?" 0 "kiln worker stops on SIGTERM with status 0"
stop_serve TERM
is "$(grep " $T/dataw/" /proc/self/mounts | wc -l)" 0 "the worker left no mount behind"

# ---- 12c. kiln serve --workers 0: the API alone, kiln worker builds --------------------------
"$KILN" worker --workers 0 --data-dir "$T/dataw" </dev/null >/dev/null 2>"$T/w0.err"
is "$?" 2 "kiln worker --workers 0 is a usage error (a worker is there to build)"
start_serve s7 "$D" --workers 0
ok $? "kiln serve --workers 0 starts"
grep -q "no build workers (--workers 0): jobs are built only when a \`kiln worker --data-dir .*\` on this host shares the store" \
    "$T/s7.err"
ok $? "it says that builds happen only in a kiln worker on this data dir"
# its steps are in the step cache of $D (section 3): quick to build
api PUT /api/v1/specs/apionly "$(body apionly curl kilntest-hello==1.0 pull)"
JA=$(jb -r .job.id)
is "$CODE $(jb -r '[.queued, .job.phase] | @tsv')" "201 true	Pending" "a spec applied queues a Pending job"
# a worker would claim it at once: 3 s of Pending, looked at every 0.2 s
i=0
APHASE=Pending
while [ $i -lt 15 ] && [ "$APHASE" = Pending ]; do
    sleep 0.2
    api GET "/api/v1/jobs/$JA"
    APHASE=$(jb -r .phase)
    i=$((i + 1))
done
is "$APHASE" Pending "it stays Pending: kiln serve --workers 0 claims nothing"
start_worker w2 --data-dir "$D" --runtime runc --workers 1
ok $? "kiln worker starts on the same data dir (its SQLite store)"
W2NAME=$WNAME
wait_job "$JA" 120
is "$PHASE" Succeeded "kiln worker builds it; kiln serve's API shows it Succeeded"
[ "$PHASE" = Succeeded ] || { jj -r .error | sed 's/^/#   /'; show "$T/w2.err"; }
is "$(jj -r .image)" "$REGISTRY/built/apionly:$(jj -r .revision)" "with its image URL"
api GET "/api/v1/jobs/$JA/log"
[ "$CODE" = 200 ] && grep -q "job $JA: building spec 'apionly' .*worker ${W2NAME:-?})" "$T/resp/$k" &&
    tail -n 1 "$T/resp/$k" | grep -q "job $JA: Succeeded"
ok $? "kiln serve shows its log, written by kiln worker ($W2NAME), to the end"
# a cancel through kiln serve reaches the kiln worker that runs the job (the store's flag)
api PUT /api/v1/specs/apicancel "$(body apicancel figlet '')"
JAC=$(jb -r .job.id)
wait_log "$JAC" 60
ok $? "kiln worker runs the next job's apt step"
api POST "/api/v1/jobs/$JAC/cancel"
is "$CODE" 202 "cancel through kiln serve --workers 0: 202"
wait_job "$JAC" 30
is "$(jj -r '[.phase, .error] | @tsv')" "Cancelled	cancelled" "kiln worker cancels the build"
stop_worker
is "$?" 0 "kiln worker stops on SIGTERM with status 0"
stop_serve TERM
is "$SERVE_RC" 0 "kiln serve --workers 0 stops on SIGTERM with status 0"
is "$(leftovers | tr '\n' ' ')" "" "no container, mount or build dir is left"

# ---- 13. no registry configured ------------------------------------------------------------
(
    unset KILN_REGISTRY_ENDPOINT KILN_REGISTRY_USERNAME KILN_REGISTRY_PASSWORD KILN_REPO_PREFIX
    export KILN_ADMIN_TOKEN=test-token-123
    exec "$KILN" serve --listen 127.0.0.1:0 --data-dir "$T/data2" </dev/null >"$T/s5.out" 2>"$T/s5.err"
) &
SPID=$!
i=0
URL=
while [ -z "$URL" ] && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
    URL=$(sed -n 's/^kiln serve: listening on \(http:[^ ]*\)$/\1/p' "$T/s5.err" 2>/dev/null | head -n 1)
done
TOKEN=test-token-123
api GET /api/v1/registry
is "$(jb -r '[.configured, .message] | @tsv')" "false	image registry not found" \
    "no registry: /registry says 'image registry not found'"
grep -q 'admin token (shown once)' "$T/s5.err"
ok $((!$?)) "KILN_ADMIN_TOKEN is used: no token is generated"
api PUT /api/v1/specs/offline "$(body offline curl '')"
is "$CODE $(jb -r '[.queued, .message] | @tsv')" "201 false	image registry not found" \
    "a spec is saved, nothing is queued"
api GET /api/v1/specs/offline/jobs
is "$(jb -r .total)" 0 "it has no jobs"
api POST /api/v1/specs/offline/rebuild
is "$CODE $(jb -r .error.code)" "409 registry_not_found" "rebuild: 409 registry_not_found"
stop_serve TERM

# ---- 14. secrets never appear ----------------------------------------------------------------
for s in "$REGISTRY_PASSWORD" "$PULL_PASSWORD" "$PULL_AUTH" "$PUSH_AUTH"; do
    grep -rlF -- "$s" "$T/resp" "$D/logs" "$T"/s[0-9].err "$T"/s[0-9].out >"$T/leak" 2>/dev/null
    is "$(cat "$T/leak")" "" "a secret ($(printf '%s' "$s" | cut -c1-3)...) is in no response, job log or server output"
done
echo "# $(find "$T/resp" -type f | wc -l) response files checked"

echo "1..$n"
[ $fails -eq 0 ]
