#!/bin/sh
# TAP test of `kiln inspect`, `kiln copy`, `kiln pull` and `kiln push` against
# real docker-registry instances (no auth, Basic, token), with skopeo as the
# interop peer and the fault proxy for retries. Images are made here, by
# transfer/mkimage.py, as OCI layouts.
# usage: test-transfer.sh KILN_BINARY [SOURCE_DIR]   (SOURCE_DIR holds lib/ and transfer/)
set -u
KILN=$1
HERE=$(cd "${2:-$(dirname "$0")}" && pwd)
REGISTRY_LIB=$HERE/lib
# shellcheck source-path=SCRIPTDIR source=lib/registry.sh
. "$REGISTRY_LIB/registry.sh"

if ! registry_available; then
    echo "1..0 # SKIP $REGISTRY_MISSING"
    exit 0
fi
for tool in skopeo sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP missing: $tool"
        exit 0
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-transfer.XXXXXX") || exit 1
trap 'registry_cleanup; rm -rf "$T"' EXIT
trap 'registry_cleanup; rm -rf "$T"; exit 130' INT TERM HUP

# A clean environment: no credentials or settings of the person running this.
mkdir -p "$T/home" "$T/tmp" "$T/empty"
HOME=$T/home
TMPDIR=$T/tmp
KILN_PROGRESS=plain
export HOME TMPDIR KILN_PROGRESS
unset DOCKER_CONFIG REGISTRY_AUTH_FILE KILN_INSECURE_REGISTRIES \
    PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME \
    PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD KILN_REGISTRY_ENDPOINT KILN_REGISTRY_USERNAME \
    KILN_REGISTRY_PASSWORD http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

MKIMAGE="$REGISTRY_PYTHON $HERE/transfer/mkimage.py"
SKOPEO="skopeo --insecure-policy"
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

# run EXPECTED_EXIT DESCRIPTION CMD...: stdout to $T/out, stderr to $T/err
run() {
    want=$1
    desc=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    [ "$got" -eq "$want" ]
    r=$?
    ok $r "$desc (exit $got, want $want)"
    [ $r -eq 0 ] || { sed 's/^/#   err: /' "$T/err" | head -n 20; }
}

contains() { # contains FILE TEXT DESCRIPTION
    grep -qF -- "$2" "$1"
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   want: $2"; sed 's/^/#   got:  /' "$1" | head -n 20; }
}

lacks() { # lacks FILE TEXT DESCRIPTION
    ! grep -qF -- "$2" "$1"
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   unwanted: $2"; }
}

bail() {
    echo "Bail out! $*"
    exit 1
}

sha() {
    sha256sum | cut -d' ' -f1
}

# layout_digest DIR NAME: the digest index.json names NAME with
layout_digest() {
    "$REGISTRY_PYTHON" - "$1" "$2" <<'PY'
import json, sys
for m in json.load(open(sys.argv[1] + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"])
PY
}

# blobs_ok DIR: every blob of the layout hashes to its name (prints the bad ones)
blobs_ok() {
    bad=0
    for f in "$1"/blobs/sha256/*; do
        [ "$(sha <"$f")" = "$(basename "$f")" ] || { echo "#   bad blob $f"; bad=1; }
    done
    return $bad
}

# index_entry FILE ARCH: digest of the index entry for linux/ARCH
index_entry() {
    "$REGISTRY_PYTHON" - "$1" "$2" <<'PY'
import json, sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    if m["platform"]["architecture"] == sys.argv[2]:
        print(m["digest"])
PY
}

# http_code URL [CURL ARGS]: status of a GET
http_code() {
    u=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' "$@" "$u"
}

# log_mark DIR: the registry log's current length; log_since DIR MARK: the new request lines
log_mark() {
    wc -l <"$1/registry.log"
}
log_since() {
    tail -n +$(($2 + 1)) "$1/registry.log" | grep 'http.response.status=' |
        sed -n 's/.*http.request.method=\([A-Z]*\) .*http.request.uri="\([^"]*\)".*http.response.status=\([0-9]*\).*/\1 \2 \3/p'
}

# ---- registries and images -----------------------------------------------------

registry_start noauth || bail "cannot start a registry"
A=$REGISTRY
A_DIR=$REGISTRY_DIR
registry_start noauth || bail "cannot start a second registry"
B=$REGISTRY
B_DIR=$REGISTRY_DIR
faultproxy_start || bail "cannot start the fault proxy"
P=$FAULTPROXY
registry_start basic || bail "cannot start a registry with Basic auth"
C=$REGISTRY
registry_start token || bail "cannot start a registry with token auth"
D=$REGISTRY
USER_=$REGISTRY_USER
PASS_=$REGISTRY_PASSWORD
RO_USER=$REGISTRY_RO_USER
RO_PASS=$REGISTRY_RO_PASSWORD

L=$T/layout
$MKIMAGE "$L" img --layers 300k,200k,100k --seed img --label org.kiln.test=1 >/dev/null &&
    $MKIMAGE "$L" dimg --docker --layers 150k,50k --seed dimg >/dev/null &&
    $MKIMAGE "$L" multi --arch amd64,arm64 --layers 120k,60k --seed multi >/dev/null &&
    $MKIMAGE "$L" big --layers 3m,2500k,1m,10k --seed big >/dev/null ||
    bail "cannot make the test images"
IMG=$(layout_digest "$L" img)
DIMG=$(layout_digest "$L" dimg)
MULTI=$(layout_digest "$L" multi)
BIG=$(layout_digest "$L" big)

# ---- the command line ------------------------------------------------------------

run 0 "--help" "$KILN" --help
for c in inspect copy pull push; do
    contains "$T/out" "  $c " "--help lists $c"
done
for c in inspect copy pull push; do
    run 0 "$c --help" "$KILN" "$c" --help
    contains "$T/out" "usage: kiln $c" "$c --help shows its usage"
done
run 2 "copy needs two arguments" "$KILN" copy "$A/x:1"
run 2 "pull needs --oci-dir" "$KILN" pull "$A/x:1"
run 2 "push needs --oci-dir" "$KILN" push "$A/x:1"
run 2 "bad --platform" "$KILN" inspect --platform linux "$A/x:1"
run 2 "bad --jobs" "$KILN" copy --jobs 0 "$A/x:1" "$B/x:1"
run 1 "invalid reference" "$KILN" inspect "$A/UPPER/x:1"

# ---- push: kiln -> registry, read by skopeo ---------------------------------------

run 0 "push a layout" "$KILN" push --oci-dir "$L:img" "$A/t/img:1" --tag extra --tag also
is "$(cat "$T/out")" "$IMG" "push prints the manifest digest"
contains "$T/err" "4 blobs" "push summary counts the blobs"
run 0 "skopeo inspect reads what kiln pushed" $SKOPEO inspect --tls-verify=false "docker://$A/t/img:1"
contains "$T/out" "\"Digest\": \"$IMG\"" "skopeo sees the same digest"
contains "$T/out" "\"org.kiln.test\": \"1\"" "skopeo reads the config"
is "$($SKOPEO inspect --tls-verify=false --raw "docker://$A/t/img:extra" | sha)" "${IMG#sha256:}" \
    "--tag: the extra tag names the same manifest"
is "$($SKOPEO inspect --tls-verify=false --raw "docker://$A/t/img:also" | sha)" "${IMG#sha256:}" \
    "--tag: the second extra tag too"
run 0 "skopeo copy back into a layout" $SKOPEO copy -q --src-tls-verify=false \
    "docker://$A/t/img:1" "oci:$T/sk-back:img"
is "$(layout_digest "$T/sk-back" img)" "$IMG" "skopeo's copy has the same manifest digest"

mark=$(log_mark "$A_DIR")
run 0 "push again" "$KILN" push --oci-dir "$L:img" "$A/t/img:1"
contains "$T/err" "0 transferred (0 B), 4 already there" "a second push uploads nothing"
log_since "$A_DIR" "$mark" >"$T/log"
lacks "$T/log" "POST" "a second push starts no upload"

run 0 "push a docker-typed layout" "$KILN" push --oci-dir "$L:dimg" "$A/t/dimg:1"
is "$(cat "$T/out")" "$DIMG" "the docker-typed manifest keeps its digest"
contains "$T/err" "3 blobs" "the docker image has two layers and a config"
$SKOPEO inspect --tls-verify=false --raw "docker://$A/t/dimg:1" >"$T/raw"
contains "$T/raw" "application/vnd.docker.distribution.manifest.v2+json" "served as docker v2s2"

run 0 "push an index layout whole" "$KILN" push --oci-dir "$L:multi" "$A/t/multi-kiln:1"
is "$(cat "$T/out")" "$MULTI" "the index is pushed under the tag"
is "$($SKOPEO inspect --tls-verify=false --raw "docker://$A/t/multi-kiln:1" | sha)" \
    "${MULTI#sha256:}" "the registry serves the same index bytes"

run 3 "push: unknown layout name" "$KILN" push --oci-dir "$L:nope" "$A/t/x:1"
contains "$T/err" "no manifest named 'nope'" "the missing name is reported"
run 1 "push: several names need one" "$KILN" push --oci-dir "$L" "$A/t/x:1"

# ---- pull: skopeo -> registry -> kiln -------------------------------------------------

run 0 "skopeo pushes a docker v2s2 image" $SKOPEO copy -q --dest-tls-verify=false --format v2s2 \
    "oci:$L:img" "docker://$A/t/sk:1"
SK=sha256:$($SKOPEO inspect --tls-verify=false --raw "docker://$A/t/sk:1" | sha)
run 0 "kiln pulls it" "$KILN" pull "$A/t/sk:1" --oci-dir "$T/pulled"
is "$(cat "$T/out")" "$SK" "pull prints the registry's digest"
is "$(layout_digest "$T/pulled" 1)" "$SK" "index.json names the tag with the same digest"
blobs_ok "$T/pulled"
ok $? "every pulled blob hashes to its name"
run 0 "pull again" "$KILN" pull "$A/t/sk:1" --oci-dir "$T/pulled" --name again
contains "$T/err" "0 transferred (0 B), 4 already there" "blobs in the layout are skipped"
is "$(layout_digest "$T/pulled" again)" "$SK" "--name names the entry"
if find "$T/pulled" -name '*tmp*' | grep -q .; then ok 1 "no temporary files left in the layout"; else ok 0 "no temporary files left in the layout"; fi

run 0 "pull with OCI media types" "$KILN" pull "$A/t/sk:1" --oci-dir "$T/pulled-oci" --oci-types
is "$(cat "$T/out")" "$IMG" "docker -> OCI conversion gives the OCI image's digest back"
run 0 "skopeo reads the converted layout" $SKOPEO inspect "oci:$T/pulled-oci:1"
if command -v umoci >/dev/null 2>&1; then
    run 0 "umoci lists the docker-typed layout" umoci ls --layout "$T/pulled"
    contains "$T/out" "again" "umoci sees the name"
fi

run 0 "kiln inspect" "$KILN" inspect "$A/t/sk:1"
contains "$T/out" "Digest:       $SK" "inspect shows the digest"
contains "$T/out" "MediaType:    application/vnd.docker.distribution.manifest.v2+json" \
    "inspect shows the media type"
contains "$T/out" "Layers:       3" "inspect counts the layers"
$SKOPEO inspect --tls-verify=false "docker://$A/t/sk:1" |
    "$REGISTRY_PYTHON" -c 'import json, sys; print("\n".join(json.load(sys.stdin)["Layers"]))' \
        >"$T/sklayers"
bad=0
while read -r l; do grep -qF "  $l  " "$T/out" || bad=1; done <"$T/sklayers"
[ "$(wc -l <"$T/sklayers")" -eq 3 ] || bad=1
ok $bad "inspect lists every layer skopeo lists"
contains "$T/out" "User:         jovyan" "inspect shows the user"
contains "$T/out" 'Entrypoint:   ["/usr/bin/tini","--"]' "inspect shows the entrypoint"
contains "$T/out" "org.kiln.test=1" "inspect shows the labels"
run 0 "inspect --raw" "$KILN" inspect --raw "$A/t/sk:1"
is "$(sha <"$T/out")" "${SK#sha256:}" "--raw prints the manifest bytes"
run 0 "inspect --config" "$KILN" inspect --config "$A/t/sk:1"
contains "$T/out" '"architecture":"amd64"' "--config prints the config"
run 3 "inspect an unknown tag" "$KILN" inspect "$A/t/sk:nope"
contains "$T/err" "manifest unknown" "the registry's reason is given"
run 3 "pull an unknown tag" "$KILN" pull "$A/t/sk:nope" --oci-dir "$T/never"
[ ! -e "$T/never" ]
ok $? "a failed pull creates no layout"

# ---- image indexes ------------------------------------------------------------------

run 0 "skopeo pushes a multi-arch index" $SKOPEO copy -q --all --dest-tls-verify=false \
    "oci:$L:multi" "docker://$A/t/multi:1"
$SKOPEO inspect --tls-verify=false --raw "docker://$A/t/multi:1" >"$T/index.json"
AMD=$(index_entry "$T/index.json" amd64)
ARM=$(index_entry "$T/index.json" arm64)
run 0 "inspect an index" "$KILN" inspect "$A/t/multi:1"
contains "$T/out" "Manifests:    2" "the index entries are counted"
contains "$T/out" "linux/arm64/v8" "the platforms are listed"
contains "$T/out" "Manifest:     $AMD" "linux/amd64 is picked by default"
run 0 "inspect --platform" "$KILN" inspect --platform linux/arm64 "$A/t/multi:1"
contains "$T/out" "Manifest:     $ARM" "--platform picks the arm64 manifest"
contains "$T/out" "Platform:     linux/arm64/v8" "its config is shown"
run 0 "pull from an index" "$KILN" pull "$A/t/multi:1" --oci-dir "$T/pm"
is "$(cat "$T/out")" "$AMD" "pull takes the linux/amd64 manifest"
grep -q '"platform":{"architecture":"amd64","os":"linux"}' "$T/pm/index.json"
ok $? "index.json records the platform"
run 3 "no such platform" "$KILN" pull --platform linux/s390x "$A/t/multi:1" --oci-dir "$T/pm"
contains "$T/err" "no manifest for platform 'linux/s390x'" "the missing platform is named"
run 0 "pull --all" "$KILN" pull --all "$A/t/multi:1" --oci-dir "$T/pm" --name all
is "$(cat "$T/out")" "sha256:$(sha <"$T/index.json")" "pull --all stores the index"
blobs_ok "$T/pm"
ok $? "every blob of the index is stored"

# ---- copy between registries, within one registry --------------------------------------

mark=$(log_mark "$B_DIR")
run 0 "copy to another registry (cold)" "$KILN" copy "$A/t/img:1" "$B/c/img:1"
is "$(cat "$T/out")" "$IMG" "copy keeps the digest"
contains "$T/err" "4 transferred" "every blob is transferred"
contains "$T/err" "of it moved in the kernel" "between plain-http registries the bytes move in the kernel"
log_since "$B_DIR" "$mark" >"$T/log"
is "$(grep -c '^PATCH /v2/c/img/blobs/uploads/' "$T/log")" 4 "one PATCH per blob"
is "$($SKOPEO inspect --tls-verify=false --raw "docker://$B/c/img:1" | sha)" "${IMG#sha256:}" \
    "the destination serves the same manifest"
run 0 "skopeo copies the copy into a layout (verifying blobs)" $SKOPEO copy -q \
    --src-tls-verify=false "docker://$B/c/img:1" "oci:$T/sk-copy:x"
blobs_ok "$T/sk-copy"
ok $? "the copied blobs hash to their digests"
mark=$(log_mark "$B_DIR")
run 0 "copy again (warm)" "$KILN" copy "$A/t/img:1" "$B/c/img:1" -t warm
contains "$T/err" "0 transferred (0 B), 4 already there" "a warm copy transfers nothing"
log_since "$B_DIR" "$mark" >"$T/log"
grep -v '^HEAD /v2/c/img/blobs/sha256:[0-9a-f]* 200$' "$T/log" |
    grep -v '^PUT /v2/c/img/manifests/\(1\|warm\) 201$' >"$T/other"
is "$(wc -l <"$T/other" | tr -d ' ')" 0 "a warm copy is only blob HEADs and manifest PUTs"
[ -s "$T/other" ] && sed 's/^/#   /' "$T/other"
is "$(grep -c '^HEAD' "$T/log")" 4 "one HEAD per blob"
mark=$(log_mark "$B_DIR")
run 0 "copy to a tag that already names the image" "$KILN" copy "$A/t/img:1" "$B/c/img:1"
is "$(cat "$T/out")" "$IMG" "the same digest"
contains "$T/err" "0 transferred (0 B), 4 already there, 0 mounted, 0 manifests" "nothing moves"
# (logfmt quotes a URI only when it holds special characters: read both forms)
tail -n +$((mark + 1)) "$B_DIR/registry.log" | grep 'http.response.status=' |
    sed -n 's/.*http.request.method=\([A-Z]*\) .*http.request.uri="\{0,1\}\([^" ]*\)"\{0,1\} .*http.response.status=\([0-9]*\).*/\1 \2 \3/p' >"$T/log"
is "$(cat "$T/log")" "HEAD /v2/c/img/manifests/1 200" \
    "one manifest HEAD at the destination, no blob lookups, no PUT"

run 0 "copy --all an index" "$KILN" copy --all "$A/t/multi:1" "$B/c/multi:1"
is "$(cat "$T/out")" "sha256:$(sha <"$T/index.json")" "the index keeps its digest"
run 0 "the arm64 manifest is there too" $SKOPEO inspect --tls-verify=false --raw \
    "docker://$B/c/multi@$ARM"
run 0 "copy one platform of an index" "$KILN" copy --platform linux/arm64 "$A/t/multi:1" "$B/c/arm:1"
is "$(cat "$T/out")" "$ARM" "the tag names the arm64 manifest"

mark=$(log_mark "$A_DIR")
run 0 "copy within one registry" "$KILN" copy "$A/t/img:1" "$A/other/img:1"
contains "$T/err" "4 mounted" "the blobs are mounted"
log_since "$A_DIR" "$mark" >"$T/log"
is "$(grep -c '^POST /v2/other/img/blobs/uploads/?mount=sha256%3A[0-9a-f]*&from=t/img 201$' "$T/log")" \
    4 "the registry answered 201 to four mounts"
lacks "$T/log" "PATCH" "no blob data was uploaded"
run 0 "copy to an OCI layout" "$KILN" copy "$A/t/img:1" "oci:$T/copied:v"
is "$(layout_digest "$T/copied" v)" "$IMG" "copy to oci: names the image"
run 0 "copy from an OCI layout" "$KILN" copy "oci:$L:big" "docker://$A/t/big:1"
is "$(cat "$T/out")" "$BIG" "copy from oci: pushes the image"

run 0 "progress on a terminal" env "KILN_PROGRESS=tty" \
    "$KILN" copy "$A/t/big:1" "$B/c/big:1"
contains "$T/err" "$(printf '\033[')" "the terminal gets cursor movements"
contains "$T/err" "done" "finished blobs get a line"
run 0 "quiet" "$KILN" copy -q "$A/t/big:1" "$B/c/big:2"
is "$(wc -c <"$T/err" | tr -d ' ')" 0 "--quiet prints nothing on stderr"
mark=$(log_mark "$B_DIR")
run 0 "copy --no-splice" "$KILN" copy --no-splice --chunk-size 1m "$A/t/big:1" "$B/c/ring:1"
is "$(cat "$T/out")" "$BIG" "copy --no-splice keeps the digest"
lacks "$T/err" "in the kernel" "--no-splice moves nothing in the kernel"
log_since "$B_DIR" "$mark" >"$T/log"
[ "$(grep -c '^PATCH /v2/c/ring/blobs/uploads/' "$T/log")" -gt 4 ]
ok $? "--no-splice streams 1 MiB PATCH chunks through memory"

# ---- credentials: Basic and token auth ---------------------------------------------------

b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
mkdir -p "$T/dc" "$T/dc-bad"
cat >"$T/dc/config.json" <<EOF
{"auths": {"$C": {"auth": "$(b64 "$USER_:$PASS_")"},
           "http://$D": {"auth": "$(b64 "$USER_:$PASS_")"}}}
EOF
cat >"$T/dc-bad/config.json" <<EOF
{"auths": {"$C": {"auth": "$(b64 "$USER_:wrong-password")"},
           "$D": {"auth": "$(b64 "$USER_:wrong-password")"}}}
EOF

run 9 "basic: no credentials" "$KILN" copy "$A/t/img:1" "$C/b/img:1"
contains "$T/err" "authentication required for '$C/b/img'" "the missing credentials are reported"
run 0 "basic: copy with DOCKER_CONFIG" env "DOCKER_CONFIG=$T/dc" \
    "$KILN" copy "$A/t/img:1" "$C/b/img:1"
is "$(cat "$T/out")" "$IMG" "copied to the Basic registry"
contains "$T/err" "of it moved in the kernel" "with Basic auth the bytes move in the kernel"
run 9 "basic: wrong password" env "DOCKER_CONFIG=$T/dc-bad" \
    "$KILN" inspect "$C/b/img:1"
contains "$T/err" "authentication failed for '$C/b/img': credentials rejected" "a clear auth error"
lacks "$T/err" "wrong-password" "the password is not printed"
run 0 "basic: REGISTRY_AUTH_FILE" env "REGISTRY_AUTH_FILE=$T/dc/config.json" \
    "$KILN" inspect "$C/b/img:1"
run 0 "basic: --authfile" "$KILN" inspect --authfile "$T/dc/config.json" "$C/b/img:1"
run 3 "--authfile must exist" "$KILN" inspect --authfile "$T/nope.json" "$C/b/img:1"
mkdir -p "$HOME/.docker" && cp "$T/dc/config.json" "$HOME/.docker/config.json"
run 0 "basic: ~/.docker/config.json" "$KILN" inspect "$C/b/img:1"
rm -f "$HOME/.docker/config.json"
run 0 "basic: KILN_REGISTRY_* variables" env \
    "KILN_REGISTRY_ENDPOINT=$C" \
    "KILN_REGISTRY_USERNAME=$USER_" \
    "KILN_REGISTRY_PASSWORD=$PASS_" \
    "$KILN" copy "$C/b/img:1" "$C/b/img2:1"
contains "$T/err" "mounted" "mounts work with Basic auth"
run 9 "basic: PRIMEHUB_* with a wrong password" env \
    "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT=https://$C" \
    "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME=$USER_" \
    "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD=wrong-password" \
    "$KILN" inspect "$C/b/img:1"
lacks "$T/err" "wrong-password" "the password is not printed"

run 0 "token: copy with DOCKER_CONFIG" env "DOCKER_CONFIG=$T/dc" \
    "$KILN" copy "$A/t/img:1" "$D/k/img:1"
is "$(cat "$T/out")" "$IMG" "copied to the token registry"
contains "$T/err" "of it moved in the kernel" "with a bearer token the bytes move in the kernel"
run 0 "token: copy within (mount)" env "DOCKER_CONFIG=$T/dc" \
    "$KILN" copy "$D/k/img:1" "$D/k/img2:1"
contains "$T/err" "4 mounted" "mounts work with token auth"
run 9 "token: wrong password" env "DOCKER_CONFIG=$T/dc-bad" \
    "$KILN" inspect "$D/k/img:1"
contains "$T/err" "credentials rejected" "a clear token auth error"
lacks "$T/err" "wrong-password" "the password is not printed"
run 0 "token: PRIMEHUB_* variables" env \
    "DOCKER_CONFIG=$T/empty" \
    "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT=http://$D" \
    "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME=$USER_" \
    "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD=$PASS_" \
    "$KILN" pull "$D/k/img:1" --oci-dir "$T/from-token"
is "$(cat "$T/out")" "$IMG" "pulled from the token registry"
run 9 "token: a pull-only user cannot push" env \
    "DOCKER_CONFIG=$T/empty" \
    "KILN_REGISTRY_ENDPOINT=$D" \
    "KILN_REGISTRY_USERNAME=$RO_USER" \
    "KILN_REGISTRY_PASSWORD=$RO_PASS" \
    "$KILN" push --oci-dir "$L:img" "$D/k/ro:1"
contains "$T/err" "denied" "the registry's denial is reported"

# ---- faults ------------------------------------------------------------------------------

faultproxy_rule "method=PATCH,path=/blobs/uploads/,hangup=1,count=2" >/dev/null
faultproxy_rule "method=PUT,path=/blobs/uploads/,status=503,retry-after=1,count=2" >/dev/null
faultproxy_rule "method=POST,path=/blobs/uploads/,status=503,count=1" >/dev/null
faultproxy_rule "method=HEAD,path=/blobs/sha256:,status=429,retry-after=1,count=1" >/dev/null
run 0 "copy through dropped uploads, 503 and 429" "$KILN" copy -v --chunk-size 1m --jobs 2 \
    "$A/t/big:1" "$P/f/big:1"
is "$(cat "$T/out")" "$BIG" "the faulty copy completes with the right digest"
contains "$T/err" "copying it through memory" "a kernel move cut by the proxy goes on through memory"
curl -s "http://$P/__faultproxy/rules" >"$T/rules"
is "$(grep -o '"fired": [0-9]*' "$T/rules" | tr '\n' ' ')" \
    '"fired": 2 "fired": 2 "fired": 1 "fired": 1 ' "every fault was injected"
faultproxy_clear
run 0 "what arrived is intact" "$KILN" pull "$B/f/big:1" --oci-dir "$T/faulty"
blobs_ok "$T/faulty"
ok $? "every blob behind the proxy hashes to its digest"

faultproxy_rule "method=GET,path=/blobs/sha256:,drop=300000,count=2" >/dev/null
run 0 "copy through dropped downloads" "$KILN" copy -v "$P/f/big:1" "$A/f/big:1"
is "$(cat "$T/out")" "$BIG" "interrupted downloads are resumed"
contains "$T/err" "ended after" "a cut source ends the kernel move, named"
contains "$T/err" "copying it through memory" "and the rest of that blob goes through memory"
faultproxy_clear
faultproxy_rule "method=GET,path=/blobs/sha256:,drop=300000,count=2" >/dev/null
run 0 "copy --no-splice through dropped downloads" "$KILN" copy -v --no-splice \
    "$P/f/big:1" "$A/f/big2:1"
is "$(cat "$T/out")" "$BIG" "interrupted downloads are resumed (through memory)"
contains "$T/err" "resuming" "the resume is logged with -v"
faultproxy_clear

faultproxy_rule "method=PATCH,path=/blobs/uploads/,status=503,count=0" >/dev/null
faultproxy_rule "method=PUT,path=/blobs/uploads/,status=503,count=0" >/dev/null
run 8 "beyond the retry bound the copy fails" "$KILN" copy --retry-times 1 --chunk-size 1m \
    "$A/t/big:1" "$P/g/big:1"
contains "$T/err" "injected by faultproxy (HTTP 503" "the error gives the registry's answer"
is "$(http_code "http://$B/v2/g/big/manifests/1")" 404 "no manifest was pushed"
is "$(http_code "http://$B/v2/g/big/tags/list")" 404 "no tag exists"
faultproxy_clear

faultproxy_rule "method=PUT,path=/manifests/,status=500,count=0" >/dev/null
run 8 "a failing manifest PUT fails the push" "$KILN" push --retry-times 1 --oci-dir "$L:img" \
    "$P/h/img:1"
faultproxy_clear

# ---- done ----------------------------------------------------------------------------------

echo "1..$n"
[ "$fails" -eq 0 ]
