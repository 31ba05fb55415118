#!/bin/sh
# TAP test of `kiln unpack`: a two-layer image made with umoci (files, a
# hard link, symlinks, a fifo, odd modes; the second layer deletes a file,
# replaces a directory, empties one and changes a file, so its tar holds
# whiteouts) is pushed to a docker-registry with `kiln push`, then
# `kiln unpack` of the registry reference and of the local layout must give
# the same tree as `umoci unpack` of the same image: same paths, types,
# modes, sizes and link targets.
# usage: test-unpack.sh KILN_BINARY [SOURCE_DIR]   (SOURCE_DIR holds lib/)
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
if ! command -v umoci >/dev/null 2>&1; then
    echo "1..0 # SKIP missing: umoci"
    exit 0
fi
ROOTLESS=
[ "$(id -u)" -eq 0 ] || ROOTLESS=--rootless

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-unpack.XXXXXX") || exit 1
trap 'registry_cleanup; rm -rf "$T"' EXIT
trap 'registry_cleanup; rm -rf "$T"; exit 130' INT TERM HUP

mkdir -p "$T/home" "$T/tmp" "$T/work"
HOME=$T/home
TMPDIR=$T/tmp
KILN_PROGRESS=plain
export HOME TMPDIR KILN_PROGRESS
unset DOCKER_CONFIG REGISTRY_AUTH_FILE KILN_INSECURE_REGISTRIES \
    PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT KILN_REGISTRY_ENDPOINT \
    http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

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
    [ $r -eq 0 ] || sed 's/^/#   err: /' "$T/err" | head -n 20
}

bail() {
    echo "Bail out! $*"
    exit 1
}

# listing ROOT: one sorted line per entry: path, type, mode, size (not of
# directories), link target
listing() {
    (
        cd "$1" || exit 1
        find . -mindepth 1 -type d -printf '%P %y %m\n'
        find . -mindepth 1 ! -type d -printf '%P %y %m %s %l\n'
    ) | LC_ALL=C sort
}

# same_tree A B DESCRIPTION
same_tree() {
    listing "$1" >"$T/list.a"
    listing "$2" >"$T/list.b"
    diff -u "$T/list.a" "$T/list.b" >"$T/list.diff"
    r=$?
    [ "$(wc -l <"$T/list.a")" -ge 15 ] || r=1
    ok $r "$3"
    [ $r -eq 0 ] || sed 's/^/#   /' "$T/list.diff" | head -n 40
}

# ---- the image, made with umoci ---------------------------------------------------------------
IMG=$T/img
{
    umoci init --layout "$IMG" &&
        umoci new --image "$IMG:base" &&
        umoci unpack $ROOTLESS --image "$IMG:base" "$T/b1"
} >"$T/umoci.log" 2>&1 || { cat "$T/umoci.log"; bail "umoci init"; }
R=$T/b1/rootfs
mkdir -p "$R/etc" "$R/usr/bin" "$R/opt/app/sub" "$R/var/cache/apt" "$R/srv/data"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'hello\n' >"$R/etc/motd"
printf '#!/bin/sh\necho v1\n' >"$R/usr/bin/tool"
chmod 0755 "$R/usr/bin/tool"
ln "$R/usr/bin/tool" "$R/usr/bin/tool-link"
ln -s usr/bin "$R/bin"
ln -s /etc/passwd "$R/etc/passwd-abs"
printf 'one\n' >"$R/opt/app/old1"
printf 'two\n' >"$R/opt/app/sub/old2"
head -c 100000 /dev/urandom >"$R/var/cache/apt/pkgcache.bin"
printf 'data\n' >"$R/srv/data/file"
chmod 0600 "$R/etc/motd"
chmod 1777 "$R/srv/data"
mkfifo "$R/etc/fifo"
umoci repack --image "$IMG:v1" "$T/b1" >>"$T/umoci.log" 2>&1 || {
    cat "$T/umoci.log"
    bail "umoci repack v1"
}

umoci unpack $ROOTLESS --image "$IMG:v1" "$T/b2" >>"$T/umoci.log" 2>&1 || bail "umoci unpack v1"
R=$T/b2/rootfs
rm "$R/etc/motd"                         # a whiteout
rm -rf "$R/opt/app" && mkdir "$R/opt/app" # a directory replaced
printf 'new\n' >"$R/opt/app/new"
rm -rf "$R/var/cache/apt"/*              # emptied
printf '#!/bin/sh\necho v2\n' >"$R/usr/bin/tool" # changed (the link follows)
rm "$R/bin"                              # a symlink deleted
mkdir "$R/bin"                           # ... and replaced by a directory
printf 'x\n' >"$R/bin/sh"
chmod 0755 "$R/bin/sh"
umoci repack --image "$IMG:v2" "$T/b2" >>"$T/umoci.log" 2>&1 || bail "umoci repack v2"

# the reference tree
umoci unpack $ROOTLESS --image "$IMG:v2" "$T/ref" >>"$T/umoci.log" 2>&1 || bail "umoci unpack v2"

echo "1..14"

registry_start noauth 2>/dev/null || bail "registry_start"
REF=$REGISTRY/kiln/unpack:v2
run 0 "kiln push the umoci image" "$KILN" push -q --oci-dir "$IMG:v2" "$REF"

# ---- kiln unpack from the registry --------------------------------------------------------------
run 0 "kiln unpack REF DIR" "$KILN" unpack --work-dir "$T/work" "$REF" "$T/root"
[ "$(cat "$T/out")" = "$T/root" ]
ok $? "stdout is DIR"
grep -q '2 layers' "$T/err"
ok $? "summary on stderr names 2 layers"
same_tree "$T/ref/rootfs" "$T/root" "same tree as umoci unpack"
[ ! -e "$T/root/etc/motd" ] && [ "$(cat "$T/root/opt/app/new")" = new ] &&
    [ ! -e "$T/root/opt/app/old1" ] && [ -d "$T/root/bin" ]
ok $? "whiteouts applied"
left=$(find "$T/work" -mindepth 1 | wc -l)
[ "$left" -eq 0 ]
ok $? "temporary layout removed ($left entries left in the work dir)"

# ---- kiln unpack of the local layout ------------------------------------------------------------
run 0 "kiln unpack oci:LAYOUT:NAME DIR" "$KILN" unpack -q "oci:$IMG:v2" "$T/root2"
same_tree "$T/ref/rootfs" "$T/root2" "local layout: same tree as umoci unpack"

# ---- refusals ------------------------------------------------------------------------------------
run 4 "a non-empty DIR is refused" "$KILN" unpack -q "oci:$IMG:v2" "$T/root"
grep -q 'not empty' "$T/err"
ok $? "the message says why"
run 0 "--force unpacks over it" "$KILN" unpack -q --force "oci:$IMG:v2" "$T/root"
run 3 "an unknown name fails" "$KILN" unpack -q "oci:$IMG:nope" "$T/root3"
[ ! -e "$T/root3" ]
ok $? "and leaves no directory behind"

[ "$fails" -eq 0 ]
