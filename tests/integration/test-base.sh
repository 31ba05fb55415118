#!/bin/sh
# TAP test of `kiln base`: bootstrap the JupyterHub base with mmdebstrap (the
# host's apt sources: Debian's mirror), push it to a real docker-registry on
# loopback, and check it from outside kiln: skopeo reads the config, umoci
# unpacks the layer, and jupyterhub-singleuser runs in it as uid 1000.
# Then `kiln base --self` (kiln's own image, one more mmdebstrap run), checked
# the same way: the binary, its libraries, runc and mmdebstrap run in the
# unpacked root file system, and kiln serve started from it (chroot, in a
# mount namespace of its own) answers HTTP on loopback and exits 0 on SIGTERM.
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
SPID=
cleanup() {
    # kiln serve from kiln's image, when a check left it running
    if [ -n "$SPID" ]; then
        kill -9 "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
        SPID=
    fi
    # its mounts live in its own mount namespace; never leave one here anyway
    grep " $T/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    registry_cleanup
    rm -rf --one-file-system "$T"
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

# ---- kiln base --self: kiln's own image ----------------------------------------------
skip() { # skip DESCRIPTION REASON
    n=$((n + 1))
    echo "ok $n - $1 # SKIP $2"
}
show() { tail -n "${2:-15}" "$1" | sed 's/^/#   /'; }
self_t0=$(date +%s)
"$KILN" base --self --user x --oci-dir "$T/nope" >/dev/null 2>"$T/self-user.err"
is "$?" 2 "--self with --user is a usage error (exit 2)"
[ ! -e "$T/nope" ]; ok $? "... and writes no layout"

SELF_REF=$REGISTRY/kiln/kiln:test
"$KILN" base --self --push "$SELF_REF" --oci-dir "$T/self:kiln" --work-dir "$T" \
    >"$T/self.out" 2>"$T/self.err"
rc=$?
ok $rc "kiln base --self --push succeeds (exit $rc, $(($(date +%s) - self_t0)) s)"
[ $rc -eq 0 ] || show "$T/self.err" 20
last=$(tail -n 1 "$T/self.out")
case "$last" in
"$SELF_REF@sha256:"*) ok 0 "last stdout line is REF@DIGEST" ;;
*) ok 1 "last stdout line is REF@DIGEST (got '$last')" ;;
esac
jq -e '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "kiln")' \
    "$T/self/index.json" >/dev/null 2>&1
ok $? "the layout holds it under the name kiln"
ls "$T" | grep -q '^kiln-base-' && ok 1 "scratch root file system removed" || ok 0 "scratch root file system removed"

C=$T/self-config.json
$SK inspect --tls-verify=false --config "docker://$SELF_REF" >"$C" 2>"$T/skerr"
ok $? "skopeo reads the config of kiln's image"
is "$(jq -c .config.Entrypoint "$C")" '["/usr/local/bin/kiln"]' "ENTRYPOINT /usr/local/bin/kiln"
is "$(jq -c .config.Cmd "$C")" '["serve","--listen","0.0.0.0:8080"]' "CMD serve --listen 0.0.0.0:8080"
is "$(jq -r .config.User "$C")" "0" "USER 0"
is "$(jq -r .config.WorkingDir "$C")" "/var/lib/kiln" "WORKDIR /var/lib/kiln"
is "$(jq -c '.config.ExposedPorts | keys' "$C")" '["8080/tcp"]' "EXPOSE 8080/tcp"
is "$(jq -c '.config.Volumes | keys' "$C")" '["/var/lib/kiln"]' "VOLUME /var/lib/kiln"
version=$("$KILN" --version)
is "$(jq -r '.config.Labels["org.opencontainers.image.version"]' "$C")" "${version#kiln }" \
    "label org.opencontainers.image.version is kiln's version"
is "$(jq -r '.config.Labels["org.opencontainers.image.title"]' "$C")" "kiln" \
    "label org.opencontainers.image.title=kiln"
env_in() { jq -e --arg e "$1" '.config.Env | index($e)' "$C" >/dev/null; }
env_in "LANG=C.UTF-8"; ok $? "ENV LANG=C.UTF-8"
env_in "KILN_DATA_DIR=/var/lib/kiln"; ok $? "ENV KILN_DATA_DIR=/var/lib/kiln"
jq -e '.config.Env | map(select(startswith("PATH=") and contains("/usr/local/bin"))) | length == 1' \
    "$C" >/dev/null
ok $? "ENV PATH has /usr/local/bin"
is "$(jq -r '[.config.Env[] | select(startswith("NB_"))] | length' "$C")" "0" "no notebook user in ENV"

$SK copy -q --src-tls-verify=false "docker://$SELF_REF" "oci:$T/sk:kiln" >/dev/null 2>&1
ok $? "skopeo copies kiln's image (verifying every blob)"
umoci unpack --image "$T/sk:kiln" "$T/selfbundle" >/dev/null 2>&1
ok $? "umoci unpacks it"
R=$T/selfbundle/rootfs
is "$(stat -c '%a %u:%g' "$R/usr/local/bin/kiln" 2>&1)" "755 0:0" "/usr/local/bin/kiln is root's, mode 755"
cmp -s "$KILN" "$R/usr/local/bin/kiln"; ok $? "it is the binary that ran kiln base --self"
is "$(stat -c '%a %u:%g' "$R/var/lib/kiln" 2>&1)" "700 0:0" "/var/lib/kiln is root's, mode 700"
[ -f "$R/etc/passwd" ] && ! grep -q '^jovyan:' "$R/etc/passwd"; ok $? "no user jovyan"
lists=$(find "$R/var/lib/apt/lists" -type f ! -name lock 2>/dev/null | wc -l)
is "$lists" "0" "no apt lists in kiln's image"

out=$(chroot "$R" runc --version 2>&1)
rc=$?
ok $rc "runc --version in the image ($(printf '%s\n' "$out" | head -n 1))"
out=$(chroot "$R" mmdebstrap --version 2>&1)
rc=$?
ok $rc "mmdebstrap --version in the image ($(printf '%s\n' "$out" | head -n 1))"

# A sanitizer build of kiln needs its runtime (or /proc) in the image: the
# image is made and checked, but kiln is not run in it.
if grep -q __asan_init "$KILN" || ldd "$KILN" | grep -q 'libasan\|libubsan\|libtsan'; then
    for d in "kiln --version" "ldd" "kiln serve listens" "GET /healthz" "GET /api/v1/specs" \
        "data in KILN_DATA_DIR" "SIGTERM: exit 0" "no mount left"; do
        skip "$d in kiln's image" "kiln is built with a sanitizer"
    done
else
    is "$(chroot "$R" /usr/local/bin/kiln --version 2>&1)" "$version" "kiln --version in the image"
    out=$(chroot "$R" ldd /usr/local/bin/kiln 2>&1)
    rc=$?
    missing=$(printf '%s\n' "$out" | grep 'not found')
    [ $rc -eq 0 ] && [ -z "$missing" ]
    ok $? "ldd in the image finds every library kiln links (exit $rc)"
    [ -z "$missing" ] || printf '%s\n' "$missing" | sed 's/^/#   /'

    # kiln serve as the image would start it: its Env only (plus a known admin
    # token), its Entrypoint, a free loopback port, no --data-dir (KILN_DATA_DIR
    # comes from the Env). /proc, /tmp and /dev are mounted in a mount
    # namespace of its own (private), so they go when it ends; unshare, sh, env
    # and chroot exec, so $! is kiln serve itself.
    STOKEN=self-test-token-$$
    entry=$(jq -r '.config.Entrypoint[0]' "$C")
    set --
    while IFS= read -r e; do set -- "$@" "$e"; done <<EOF
$(jq -r '.config.Env[]' "$C")
EOF
    unshare -m --propagation private sh -c 'R=$1; shift
        mount -t proc proc "$R/proc" && mount -t tmpfs tmpfs "$R/tmp" &&
            mount --rbind /dev "$R/dev" || exit 99
        exec env -i "$@"' sh "$R" "$@" "KILN_ADMIN_TOKEN=$STOKEN" \
        chroot "$R" "$entry" serve --listen 127.0.0.1:0 \
        </dev/null >"$T/self-serve.out" 2>"$T/self-serve.err" &
    SPID=$!
    SURL=
    i=0
    while [ $i -lt 300 ]; do
        SURL=$(sed -n 's/^kiln serve: listening on \(http:[^ ]*\)$/\1/p' "$T/self-serve.err" | head -n 1)
        [ -n "$SURL" ] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    [ -n "$SURL" ]
    ok $? "kiln serve from the image listens (${SURL:-no URL})"
    [ -n "$SURL" ] || show "$T/self-serve.err"
    code=$(curl -s -o "$T/self-health" -w '%{http_code}' "${SURL:-http://127.0.0.1:1}/healthz")
    is "$code $(cat "$T/self-health" 2>/dev/null)" "200 ok" "GET /healthz from the host: 200 ok"
    code=$(curl -s -o "$T/self-specs" -w '%{http_code}' -H "Authorization: Bearer $STOKEN" \
        "${SURL:-http://127.0.0.1:1}/api/v1/specs")
    is "$code" "200" "GET /api/v1/specs with the admin token: 200 (the SQLite store works)"
    [ -f "$R/var/lib/kiln/kiln.db" ]; ok $? "its database is in KILN_DATA_DIR (/var/lib/kiln/kiln.db)"
    kill -TERM "$SPID" 2>/dev/null
    i=0
    while kill -0 "$SPID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$SPID" 2>/dev/null
    wait "$SPID"
    rc=$?
    SPID=
    is "$rc" "0" "SIGTERM: kiln serve exits 0"
    [ $rc -eq 0 ] || show "$T/self-serve.err"
    grep -q " $R/" /proc/self/mounts && ok 1 "no mount left behind" || ok 0 "no mount left behind"
fi
echo "# kiln base --self section: $(($(date +%s) - self_t0)) s"

echo "1..$n"
[ "$fails" -eq 0 ]
