#!/bin/sh
# TAP test of `kiln base`: bootstrap the JupyterHub base with mmdebstrap (the
# host's apt sources: Debian's mirror), push it to a real docker-registry on
# loopback, and check it from outside kiln: skopeo reads the config, umoci
# unpacks the layer, and jupyterhub-singleuser runs in it as uid 1000.
# usage: test-base.sh KILN_BINARY [SOURCE_DIR]
set -u
KILN=$1
HERE=$(cd "${2:-$(dirname "$0")}" && pwd)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"

if ! registry_available; then
    echo "1..0 # SKIP $REGISTRY_MISSING"
    exit 0
fi
for tool in mmdebstrap skopeo umoci jq; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP missing: $tool"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "1..0 # SKIP kiln base needs root (mmdebstrap --mode=root)"
    exit 0
fi

T=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-test-base.XXXXXX") || exit 1
trap 'registry_cleanup; rm -rf "$T"' EXIT
trap 'registry_cleanup; rm -rf "$T"; exit 130' INT TERM HUP
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

registry_start noauth >/dev/null 2>&1 || { echo "1..0 # SKIP cannot start docker-registry"; exit 0; }
REF=$REGISTRY/kiln/base:test

# The first bootstrap also fills the per-day base cache that test-build.sh and
# the e2e tests use (under its lock, so that they wait instead of running a
# second mmdebstrap at the same time).
CACHE=${KILN_TEST_CACHE:-/var/tmp/kiln-test-cache}
mkdir -p "$CACHE"
BASE_LAYOUT=$CACHE/base-$(date -u +%Y%m%d)
exec 9>"$CACHE/base.lock"
flock 9
"$KILN" base --push "$REF" --oci-dir "$T/layout:base" --work-dir "$T" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && [ ! -f "$BASE_LAYOUT/index.json" ]; then
    rm -rf "$BASE_LAYOUT.tmp" && cp -a "$T/layout" "$BASE_LAYOUT.tmp" && mv "$BASE_LAYOUT.tmp" "$BASE_LAYOUT"
fi
flock -u 9
exec 9>&-
ok $rc "kiln base --push succeeds (exit $rc)"
[ $rc -eq 0 ] || tail -20 "$T/err" | sed 's/^/#   /'
last=$(tail -n 1 "$T/out")
case "$last" in
"$REF@sha256:"*) ok 0 "last stdout line is REF@DIGEST" ;;
*) ok 1 "last stdout line is REF@DIGEST (got '$last')" ;;
esac
grep -q "mmdebstrap: I:" "$T/err"
ok $? "mmdebstrap's progress is shown"
ls "$T" | grep -q '^kiln-base-' && ok 1 "scratch root file system removed" || ok 0 "scratch root file system removed"

"$KILN" base --push "$REGISTRY/kiln/base:tmp" --include python3,passwd --work-dir "$T" -q \
    >/dev/null 2>"$T/err2"
ok $? "kiln base without --oci-dir (a temporary layout) succeeds"
ls "$T" | grep -q '^kiln-base' && ok 1 "the temporary layout and root file system are removed" ||
    ok 0 "the temporary layout and root file system are removed"

SK="skopeo --insecure-policy"
$SK inspect --tls-verify=false --config "docker://$REF" >"$T/config.json" 2>"$T/skerr"
ok $? "skopeo reads the pushed image's config"
is "$(jq -r .config.User "$T/config.json")" "1000" "USER 1000"
is "$(jq -r '.config.Cmd | join(" ")' "$T/config.json")" "jupyterhub-singleuser" "CMD jupyterhub-singleuser"
is "$(jq -r .config.WorkingDir "$T/config.json")" "/home/jovyan" "WORKDIR the home"
env_has() { jq -e --arg e "$1" '.config.Env | index($e)' "$T/config.json" >/dev/null; }
env_has "NB_USER=jovyan"; ok $? "ENV NB_USER=jovyan"
env_has "NB_UID=1000"; ok $? "ENV NB_UID=1000"
env_has "HOME=/home/jovyan"; ok $? "ENV HOME"
env_has "LANG=C.UTF-8"; ok $? "ENV LANG"
is "$(jq -r '.rootfs.diff_ids | length' "$T/config.json")" "1" "one layer"
$SK inspect --tls-verify=false --raw "docker://$REF" >"$T/manifest.json"
is "$(jq -r .mediaType "$T/manifest.json")" "application/vnd.docker.distribution.manifest.v2+json" \
    "docker v2 schema 2 manifest by default"

# Unpack with umoci, from a layout skopeo copies (a second reader besides kiln).
$SK copy -q --src-tls-verify=false "docker://$REF" "oci:$T/sk:base" >/dev/null 2>&1
ok $? "skopeo copies the image (verifying every blob)"
umoci unpack --image "$T/sk:base" "$T/bundle" >/dev/null 2>&1
ok $? "umoci unpacks it"
R=$T/bundle/rootfs
[ -x "$R/usr/bin/jupyterhub-singleuser" ]; ok $? "jupyterhub-singleuser is installed"
[ -x "$R/usr/bin/pip3" ] || [ -x "$R/usr/bin/pip" ]; ok $? "pip is installed"
is "$(grep '^jovyan:' "$R/etc/passwd" | cut -d: -f3,4,6)" "1000:100:/home/jovyan" "user jovyan 1000:100"
is "$(stat -c %u:%g "$R/home/jovyan")" "1000:100" "the home belongs to the user"
lists=$(find "$R/var/lib/apt/lists" -type f ! -name lock 2>/dev/null | wc -l)
is "$lists" "0" "no apt lists in the image"
out=$(chroot --userspec=1000:100 "$R" /usr/bin/env HOME=/home/jovyan jupyterhub-singleuser --version 2>&1)
rc=$?
ok $rc "jupyterhub-singleuser --version runs as uid 1000 (prints '$(printf '%s\n' "$out" | tail -n 1)')"

echo "1..$n"
[ "$fails" -eq 0 ]
