#!/bin/sh
# TAP test of `kiln build` and `kiln verify`, with real parts only: a base
# made by `kiln base` (mmdebstrap from Debian's mirror) in a loopback
# docker-registry, apt packages from Debian's mirror, pip packages from a
# local wheel index, steps run by runc over overlayfs (and once by crun). The
# image is then checked from outside kiln (skopeo, umoci, runc through kiln
# verify).
# usage: test-build.sh KILN_BINARY [SOURCE_DIR]
#
# The base image layout is cached across runs in
# ${KILN_TEST_CACHE:-/var/tmp/kiln-test-cache}/base-YYYYMMDD (made once a day,
# under a lock, so that the gcc and the sanitizer runs of one CI job share it).
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
for tool in mmdebstrap skopeo umoci jq runc flock; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "1..0 # SKIP missing: $tool"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "1..0 # SKIP kiln build needs root (overlay mounts, runc)"
    exit 0
fi

T=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-test-build.XXXXXX") || exit 1
cleanup() {
    # never leave a mount behind, whatever happened
    grep " $T/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    wheelhouse_cleanup
    registry_cleanup
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
is() { # is GOT WANT DESCRIPTION
    [ "$1" = "$2" ]
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   got:  '$1'"; echo "#   want: '$2'"; }
}
show() { tail -n "${2:-15}" "$1" | sed 's/^/#   /'; }

# ---- fixtures: registry, base image, wheel index --------------------------------
registry_start noauth >/dev/null 2>&1 || { echo "1..0 # SKIP cannot start docker-registry"; exit 0; }
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

wheelhouse_make "$T/wh" kilntest-hello==1.0 kilntest-hello==1.1 >/dev/null 2>&1
wheelhouse_start "$T/wh" >/dev/null 2>&1 || { echo "1..0 # SKIP cannot start the wheel index"; exit 0; }
export KILN_PIP_INDEX_URL="$WHEELHOUSE_URL"
export KILN_DATA_DIR="$T/data"

spec() { # spec FILE APT... -- PIP...
    f=$1
    shift
    {
        echo "name: demo"
        echo "baseImage: ${SPEC_BASE:-$BASE}"
        echo "packages:"
        echo "  apt:"
        while [ $# -gt 0 ] && [ "$1" != "--" ]; do echo "    - '$1'"; shift; done
        [ $# -gt 0 ] && shift
        echo "  pip:"
        for p in "$@"; do echo "    - '$p'"; done
    } >"$f"
}

# ---- 1. build, verify, push --------------------------------------------------------
REF=$REGISTRY/team/demo:one
spec "$T/s1.yaml" curl jq -- kilntest-hello==1.0
"$KILN" build "$T/s1.yaml" --push --tag "$REF" --verify --log "$T/b1.log" >"$T/b1.out" 2>"$T/b1.err"
rc=$?
ok $rc "kiln build --push --verify succeeds (exit $rc)"
[ $rc -eq 0 ] || show "$T/b1.err" 25
last=$(tail -n 1 "$T/b1.out")
case "$last" in
"$REF@sha256:"*) ok 0 "last stdout line is REF@DIGEST" ;;
*) ok 1 "last stdout line is REF@DIGEST (got '$last')" ;;
esac
D1=${last#*@}
grep -q 'verify: ready (user 1000 uid 1000' "$T/b1.err"
ok $? "the build's verify step says ready"
grep -q ' | Setting up jq' "$T/b1.log"
ok $? "the step's output is in the log file"
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z ' "$T/b1.log"
ok $? "log lines carry timestamps"

# from outside kiln: skopeo
skopeo inspect --tls-verify=false "docker://$REF" >"$T/inspect.json" 2>"$T/sk.err"
ok $? "skopeo inspect reads the image"
is "$(jq -r .Digest "$T/inspect.json")" "$D1" "skopeo sees the pushed digest"
is "$(jq -r '.Layers | length' "$T/inspect.json")" 3 "three layers: base, apt, pip"
skopeo inspect --tls-verify=false --raw "docker://$REF" >"$T/manifest.json"
is "$(jq -r .mediaType "$T/manifest.json")" application/vnd.docker.distribution.manifest.v2+json \
    "docker v2 schema 2 manifest by default"
skopeo inspect --tls-verify=false --config "docker://$REF" >"$T/config.json"
is "$(jq -r .config.User "$T/config.json")" 1000 "USER stays the base image's user"
jq -r '.history[].created_by' "$T/config.json" >"$T/history"
grep -q 'apt-get install -y --no-install-recommends .curl. .jq.' "$T/history"
ok $? "history lists the apt step"
grep -q "pip install --no-cache-dir --no-warn-conflicts 'kilntest-hello==1.0'" "$T/history"
ok $? "history lists the pip step"
is "$(jq -r '.config.Labels["io.kiln.revision"]' "$T/config.json")" \
    "$("$KILN" spec hash "$T/s1.yaml")" "label io.kiln.revision is the spec's revision"
jq -r '.config.Labels["io.kiln.spec"]' "$T/config.json" | jq -e '.packages.apt == ["curl","jq"]' >/dev/null
ok $? "label io.kiln.spec holds the spec"

# umoci unpacks it
skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$T/oci:one" 2>"$T/copy.err"
ok $? "skopeo copies it into an OCI layout"
umoci unpack --image "$T/oci:one" "$T/bundle" >/dev/null 2>"$T/umoci.err"
rc=$?
ok $rc "umoci unpack of kiln's image"
[ $rc -eq 0 ] || show "$T/umoci.err"
R=$T/bundle/rootfs
[ -x "$R/usr/bin/jq" ] && [ -x "$R/usr/bin/curl" ]
ok $? "umoci's tree has /usr/bin/jq and /usr/bin/curl"
ls -d "$R"/usr/local/lib/python3*/dist-packages/kilntest_hello >/dev/null 2>&1
ok $? "umoci's tree has the pip package"
is "$(find "$R/var/lib/apt/lists" -type f ! -name lock | wc -l)" 0 "no apt lists in the image"
[ ! -e "$R/root/.cache/pip" ]
ok $? "no pip cache in the image"
M1=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="one") | .digest' "$T/oci/index.json" | cut -d: -f2)
apt_layer=$(jq -r '.layers[1].digest' "$T/oci/blobs/sha256/$M1" | cut -d: -f2)
tar -tzf "$T/oci/blobs/sha256/$apt_layer" >"$T/apt-layer.list" 2>/dev/null
ok $? "the apt layer is a valid tar+gzip"
grep -Eq '^(etc/hosts|etc/resolv\.conf|proc/|sys/|dev/)$' "$T/apt-layer.list"
ok $((!$?)) "the runtime's mount points are not committed (/etc/hosts, /proc ...)"

# kiln verify, as a separate command (runc, uid 1000)
"$KILN" verify "$REF" >"$T/v.out" 2>"$T/v.err"
rc=$?
ok $rc "kiln verify exits 0 for the built image"
grep -q '^ready: user 1000 (uid 1000, gid 100), home /home/jovyan writable, 3\.' "$T/v.out"
ok $? "kiln verify reports the user, home and jupyterhub-singleuser's version"
[ $rc -eq 0 ] || { show "$T/v.out"; show "$T/v.err"; }

# the loopback registry spoke plain http: kept as a hint for the next builds
grep -qx "$REGISTRY plain" "$T/data/cache/http-schemes"
ok $? "the registry's plain http is remembered in DATA/cache/http-schemes"

# ---- 2. no-op rebuild: no step runs, same digest --------------------------------------
"$KILN" build "$T/s1.yaml" --push --tag "$REF" >"$T/b2.out" 2>"$T/b2.err"
ok $? "no-op rebuild succeeds"
is "$(tail -n 1 "$T/b2.out")" "$REF@$D1" "no-op rebuild gives the same digest"
is "$(grep -c ': cached (layer' "$T/b2.err")" 2 "both steps come from the cache"
grep -q 'ran in' "$T/b2.err"
ok $((!$?)) "no step ran"
grep -q 'already has this image: tagging only' "$T/b2.err"
ok $? "the push finds the image already in the repository (one HEAD, then the tag)"
grep -q "externally managed (PEP 668)" "$T/b1.err"
ok $? "the pip step found Debian's Python externally managed (PEP 668)"

# ---- 3. pip-only change: only pip reruns; the old package version is gone --------------
spec "$T/s2.yaml" curl jq -- kilntest-hello==1.1
"$KILN" build "$T/s2.yaml" --push --tag "$REGISTRY/team/demo:two" >"$T/b3.out" 2>"$T/b3.err"
ok $? "pip-only change builds"
grep -q 'step 1/2 apt: cached' "$T/b3.err"
ok $? "the apt step comes from the cache"
grep -q 'step pip ran in' "$T/b3.err"
ok $? "the pip step reruns"

# a build on top of the first image that upgrades the package: pip deletes the
# 1.0 files and replaces the package's directory; the deletions must hold
SPEC_BASE=$REF spec "$T/s3.yaml" -- kilntest-hello==1.1
"$KILN" build "$T/s3.yaml" --push --tag "$REGISTRY/team/demo:three" >"$T/b4.out" 2>"$T/b4.err"
rc=$?
ok $rc "a build on the first image, upgrading its pip package"
[ $rc -eq 0 ] || show "$T/b4.err"
skopeo copy -q --src-tls-verify=false "docker://$REGISTRY/team/demo:three" "oci:$T/oci:three" 2>/dev/null
umoci unpack --image "$T/oci:three" "$T/bundle3" >/dev/null 2>&1
ok $? "umoci unpacks it"
P3=$(ls -d "$T"/bundle3/rootfs/usr/local/lib/python3*/dist-packages 2>/dev/null | head -n 1)
[ -n "$P3" ] && [ ! -e "$P3/kilntest_hello-1.0.dist-info" ]
ok $? "the deleted directory (kilntest_hello-1.0.dist-info) stays deleted"
[ -d "$P3/kilntest_hello-1.1.dist-info" ]
ok $? "the new version's metadata is there"
grep -q "1.1" "$P3/kilntest_hello/__init__.py" 2>/dev/null && ! grep -q "'1.0'" "$P3/kilntest_hello/__init__.py"
ok $? "the replaced package directory holds only the new version"
layer=$(jq -r '.layers[-1].digest' "$T/oci/blobs/sha256/$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="three") | .digest' "$T/oci/index.json" | cut -d: -f2)" 2>/dev/null)
tar -tzf "$T/oci/blobs/sha256/${layer#sha256:}" 2>/dev/null | grep -q 'kilntest_hello-1.0.dist-info$'
ok $? "the pip layer carries an OCI whiteout for the deleted directory"

# ---- 4. a failing apt package fails the build with apt's error ---------------------------
spec "$T/bad.yaml" kiln-no-such-package-xyz --
"$KILN" build "$T/bad.yaml" >"$T/bad.out" 2>"$T/bad.err"
rc=$?
[ $rc -ne 0 ]
ok $? "a missing apt package fails the build (exit $rc)"
grep -q 'step apt failed with exit status 100' "$T/bad.err"
ok $? "the error names the step and its exit status"
grep -q 'Unable to locate package kiln-no-such-package-xyz' "$T/bad.err"
ok $? "apt's own error is shown"
[ ! -s "$T/bad.out" ]
ok $? "nothing on stdout"
# apt-get alone would read "jq." as a regex and install libjs-jquery
spec "$T/rx.yaml" curl jq. --
"$KILN" build "$T/rx.yaml" >"$T/rx.out" 2>"$T/rx.err"
rc=$?
[ $rc -ne 0 ] && grep -q 'step apt failed with exit status 100' "$T/rx.err" &&
    grep -q 'Unable to locate package jq\. (no package has that exact name)' "$T/rx.err"
ok $? "an apt name with '.' that names no package fails the step (exit $rc)"
! grep -q -e 'for regex' -e 'libjs-jquery' "$T/rx.err"
ok $? "apt-get never selected packages by regex"

# ---- 5. kill -9 mid-build, then the next build succeeds ----------------------------------
"$KILN" build "$T/s1.yaml" --no-cache >"$T/k.out" 2>"$T/k.err" &
kpid=$!
i=0
while [ $i -lt 600 ] && ! grep -q ' | ' "$T/k.err"; do sleep 0.1; i=$((i + 1)); done
grep -q ' | ' "$T/k.err"
ok $? "the build's step is running"
kill -9 "$kpid"
wait "$kpid" 2>/dev/null
"$KILN" build "$T/s1.yaml" --no-cache >"$T/k2.out" 2>"$T/k2.err"
rc=$?
ok $rc "the next build succeeds after kill -9"
[ $rc -eq 0 ] || show "$T/k2.err"
grep -q 'cleaned up the leftovers of an interrupted build' "$T/k2.err"
ok $? "it cleans up the dead build's dir"
sleep 1
grep -q " $T/data/" /proc/self/mounts
ok $((!$?)) "no overlay of kiln's data dir stays mounted"
is "$(ls "$T/data/builds" | wc -l)" 0 "no build dir is left"
is "$(find "$T/data/store/tmp" -mindepth 1 -maxdepth 1 | wc -l)" 0 "no temp blob or layer is left"

# ---- 6. verify reports a root image --------------------------------------------------------
"$KILN" verify "$REGISTRY/kiln/base:bookworm" >/dev/null 2>&1
ok $? "the base image itself is ready"
ROOTCFG=$T/rootcfg
skopeo copy -q --src-tls-verify=false "docker://$BASE" "oci:$T/rootimg:x" 2>/dev/null
umoci config --image "$T/rootimg:x" --config.user root >/dev/null 2>&1
skopeo copy -q --dest-tls-verify=false "oci:$T/rootimg:x" "docker://$REGISTRY/kiln/rootimg:x" 2>/dev/null
"$KILN" verify "$REGISTRY/kiln/rootimg:x" >"$ROOTCFG.out" 2>/dev/null
rc=$?
is "$rc" 1 "kiln verify exits 1 for an image running as root"
grep -q '^not ready: user check failed: the image runs as root' "$ROOTCFG.out"
ok $? "and says which check failed and why"

# ---- 7. kiln gc -------------------------------------------------------------------------------
"$KILN" gc --max-size 1t >"$T/gc1.out" 2>&1
ok $? "kiln gc with room to spare"
grep -q '^blobs:  removed 0 ' "$T/gc1.out" && grep -q '^layers: removed 0 ' "$T/gc1.out"
ok $? "... removes nothing"
"$KILN" gc --all >"$T/gc2.out" 2>&1
ok $? "kiln gc --all"
is "$(find "$T/data/store/blobs/sha256" -type f | wc -l)" 0 "no blob left"
is "$(find "$T/data/store/layers/sha256" -mindepth 1 -maxdepth 1 | wc -l)" 0 "no unpacked layer left"
is "$(find "$T/data/cache/steps" -name '*.json' | wc -l)" 0 "step records of removed layers pruned"
"$KILN" gc --max-size lots >/dev/null 2>&1
is $? 2 "a bad size is a usage error"

# ---- 8. crun, where the host mounts only cgroup2 ----------------------------------------------
# kiln picks crun when /sys/fs/cgroup is cgroup2 (a systemd host) and crun is installed.
# These machines mount cgroup v1 controllers beside cgroup2 ("hybrid"), where crun refuses to
# run and kiln picks runc, so this build runs in a private mount namespace with cgroup2 on
# /sys/fs/cgroup: the OCI configs kiln writes (steps and verify) must suit crun too.
if command -v crun >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 &&
    unshare -m sh -c 'mount -t cgroup2 none /sys/fs/cgroup' 2>/dev/null; then
    unshare -m sh -c 'mount -t cgroup2 none /sys/fs/cgroup && exec "$0" build "$1" --no-cache --push --tag "$2" --verify' \
        "$KILN" "$T/s1.yaml" "$REGISTRY/team/demo:crun" >"$T/c.out" 2>"$T/c.err"
    rc=$?
    ok $rc "kiln build --no-cache --verify --push under crun (exit $rc)"
    [ $rc -eq 0 ] || show "$T/c.err"
    grep -Eq 'steps run with the OCI runtime .*/crun$' "$T/c.err"
    ok $? "kiln picks crun where /sys/fs/cgroup is cgroup2"
    grep -q 'verify: ready (user 1000 uid 1000' "$T/c.err"
    ok $? "verify runs the image under crun: ready"
    skopeo inspect --tls-verify=false "docker://$REGISTRY/team/demo:crun" >"$T/c.json" 2>/dev/null
    is "$(jq -r '.Layers | length' "$T/c.json")" 3 "the crun-built image has base, apt and pip layers"
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then want=crun; else want=runc; fi
    grep -Eq "steps run with the OCI runtime .*/$want\$" "$T/b1.err"
    ok $? "on this host's cgroups ($(stat -fc %T /sys/fs/cgroup)) the first build ran with $want"
else
    for d in "build under crun" "kiln picks crun" "verify under crun" "crun-built layers" "the host's runtime"; do
        n=$((n + 1))
        echo "ok $n # SKIP $d: crun, unshare or a cgroup2 mount is not available"
    done
fi

# gc_run NAME DESCRIPTION ARGS...: `kiln gc ARGS` into $T/NAME.out and .err, checked to exit 0
gc_run() {
    _g=$1
    _d=$2
    shift 2
    "$KILN" gc "$@" >"$T/$_g.out" 2>"$T/$_g.err"
    _rc=$?
    ok $_rc "$_d (exit $_rc)"
    [ $_rc -eq 0 ] || show "$T/$_g.err"
}

# ---- 9. a step cache shared through the registry ----------------------------------------------
# Two "hosts" (fresh data dirs) share steps through $REGISTRY/kiln/cache. The first builds with
# SOURCE_DATE_EPOCH=1600000000, so its steps are created 2020-09-13T12:26:40Z: older than a day,
# the push records "used now" in the cache manifests (io.kiln.step.used); with that annotation
# taken off (as a step pushed long ago has it), a pull records its use again.
CREPO=$REGISTRY/kiln/cache
CURL_OCI="Accept: application/vnd.oci.image.manifest.v1+json"
SDE_TIME=2020-09-13T12:26:40Z
SOURCE_DATE_EPOCH=1600000000 "$KILN" build "$T/s1.yaml" --cache-repo "$CREPO" --data-dir "$T/cacheA" \
    --push --tag "$REGISTRY/team/cached:a" >"$T/ca.out" 2>"$T/ca.err"
rc=$?
ok $rc "a build with --cache-repo and SOURCE_DATE_EPOCH on a fresh data dir (exit $rc)"
[ $rc -eq 0 ] || show "$T/ca.err"
is "$(grep -c 'step [a-z]* ran in' "$T/ca.err")" 2 "... runs both steps"
curl -fsS "$REGISTRY_URL/v2/kiln/cache/tags/list" >"$T/ctags.json" 2>/dev/null
is "$(jq -r '.tags[]' "$T/ctags.json" 2>/dev/null | grep -Ec '^step-[0-9a-f]{64}$')" 2 \
    "the cache repository has a step-<key> tag per step"
APT_TAG=
cache_doc_ok=0
sde_created=0
pushed_used=0
tp0=$(date +%s)
for tg in $(jq -r '.tags[]' "$T/ctags.json" 2>/dev/null); do
    curl -fsS -H "$CURL_OCI" "$REGISTRY_URL/v2/kiln/cache/manifests/$tg" >"$T/cm.json" 2>/dev/null
    cp "$T/cm.json" "$T/cm-$tg.json"
    cfgd=$(jq -r .config.digest "$T/cm.json")
    curl -fsSL "$REGISTRY_URL/v2/kiln/cache/blobs/$cfgd" >"$T/cc.json" 2>/dev/null
    jq -e --arg k "${tg#step-}" '.key == $k and (.diff_id | startswith("sha256:")) and (.created | length) > 0' \
        "$T/cc.json" >/dev/null &&
        jq -e '.mediaType == "application/vnd.oci.image.manifest.v1+json" and
               .config.mediaType == "application/vnd.kiln.step.v1+json" and (.layers | length) == 1' \
            "$T/cm.json" >/dev/null || cache_doc_ok=1
    [ "$(jq -r .created "$T/cc.json")" = "$SDE_TIME" ] && sde_created=$((sde_created + 1))
    jq -e --argjson t0 "$tp0" '(.annotations | keys) == ["io.kiln.step.used"] and
        (.annotations["io.kiln.step.used"] | fromdateiso8601) >= $t0 - 600' "$T/cm.json" >/dev/null &&
        pushed_used=$((pushed_used + 1))
    [ "$(jq -r .kind "$T/cc.json")" = apt ] && APT_TAG=$tg && cp "$T/cm.json" "$T/apt-cm.json"
done
ok $cache_doc_ok "each tag is an OCI manifest: a step config naming its key, one layer"
[ -n "$APT_TAG" ]
ok $? "one of them is the apt step's"
is "$sde_created" 2 "both step configs say created $SDE_TIME (SOURCE_DATE_EPOCH)"
is "$pushed_used" 2 "a push of steps created long ago records them as used now"
grep -Eq "push [0-9a-f]{12}: mounted from kiln/cache" "$T/ca.err"
ok $? "the image push mounts the step layers from the cache repository"
skopeo inspect --tls-verify=false --config "docker://$REGISTRY/team/cached:a" >"$T/ca-config.json" 2>/dev/null
jq -e --arg t "$SDE_TIME" '.created == $t and ([.history[] | select(.created_by // "" | startswith("RUN /bin/sh -c ")) | .created] | length == 2 and all(. == $t))' \
    "$T/ca-config.json" >/dev/null
ok $? "the image config's created and the steps' history entries are $SDE_TIME"
"$KILN" gc --cache-repo "$CREPO" --max-age 1 --dry-run >"$T/gcu0.out" 2>"$T/gcu0.err"
is "$(grep -c "^would keep $CREPO:step-[0-9a-f]\{64\} (last used [0-9T:-]*Z)\$" "$T/gcu0.out")" 2 \
    "kiln gc --cache-repo --max-age 1 --dry-run keeps both: just pushed"
# the manifests as a push without the annotation made them (a step pushed long ago)
strip_ok=0
for tg in $(jq -r '.tags[]' "$T/ctags.json" 2>/dev/null); do
    jq -c 'del(.annotations)' "$T/cm-$tg.json" >"$T/cm-strip.json" &&
        cp "$T/cm-strip.json" "$T/cm-$tg.json" &&
        curl -fsS -o /dev/null -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
            --data-binary "@$T/cm-strip.json" "$REGISTRY_URL/v2/kiln/cache/manifests/$tg" || strip_ok=1
done
ok $strip_ok "(the test takes the annotation off both step manifests)"
"$KILN" gc --cache-repo "$CREPO" --max-age 1 --dry-run >"$T/gcu1.out" 2>"$T/gcu1.err"
is "$(grep -c "^would remove $CREPO:step-[0-9a-f]\{64\} (created $SDE_TIME)\$" "$T/gcu1.out")" 2 \
    "... then kiln gc --max-age 1 --dry-run would remove both steps, created in 2020"

# a cache repository that refuses manifest PUTs: the pull cannot record its use (an INFO line
# per step), the build goes on with the cache on (both steps still come from it)
if faultproxy_start --rule 'path=/manifests/step-,method=PUT,status=403,count=0' >/dev/null 2>&1; then
    "$KILN" build "$T/s1.yaml" --cache-repo "$FAULTPROXY/kiln/cache" --data-dir "$T/cacheR" \
        >"$T/cr.out" 2>"$T/cr.err"
    rc=$?
    faultproxy_stop
    ok $rc "a build whose cache repository refuses to record a use succeeds (exit $rc)"
    [ $rc -eq 0 ] || show "$T/cr.err"
    grep -q '(0 steps run, 2 cached)' "$T/cr.err" && ! grep -q 'warning:' "$T/cr.err"
    ok $? "... takes both steps from the cache, with no warning"
    is "$(grep -c "step [a-z]*: could not record its use in 127.0.0.1:[0-9]*/kiln/cache: " "$T/cr.err")" 2 \
        "... an INFO line per step says the use was not recorded"
else
    for d in "refused touch: build" "refused touch: cached" "refused touch: INFO"; do
        n=$((n + 1))
        echo "ok $n # SKIP $d: cannot start the fault proxy"
    done
fi

tb0=$(date +%s)
"$KILN" build "$T/s1.yaml" --cache-repo "$CREPO" --data-dir "$T/cacheB" --push \
    --tag "$REGISTRY/team/cached:b" >"$T/cb.out" 2>"$T/cb.err"
rc=$?
ok $rc "the same spec on another fresh data dir with the same --cache-repo (exit $rc)"
[ $rc -eq 0 ] || show "$T/cb.err"
grep -q '(0 steps run, 2 cached)' "$T/cb.err" && ! grep -q 'ran in' "$T/cb.err"
ok $? "... runs no step"
is "$(grep -c "step [12]/2 [a-z]*: cached in $CREPO (layer [0-9a-f]\{12\})" "$T/cb.err")" 2 \
    "... the log says both came from the cache repository"
is "$(grep -c "step [a-z]*: recorded as used in $CREPO (created $SDE_TIME)" "$T/cb.err")" 2 \
    "... and that it recorded their use (created in 2020)"
used_ok=0
for tg in $(jq -r '.tags[]' "$T/ctags.json" 2>/dev/null); do
    curl -fsS -H "$CURL_OCI" "$REGISTRY_URL/v2/kiln/cache/manifests/$tg" >"$T/cm.json" 2>/dev/null
    jq -e --argjson t0 "$tb0" --slurpfile old "$T/cm-$tg.json" \
        '(.annotations | keys) == ["io.kiln.step.used"] and
         (.annotations["io.kiln.step.used"] | fromdateiso8601) >= $t0 and
         .config == $old[0].config and .layers == $old[0].layers' "$T/cm.json" >/dev/null || used_ok=1
done
ok $used_ok "the step manifests now carry io.kiln.step.used (this build's time), same config and layer"
"$KILN" gc --cache-repo "$CREPO" --max-age 1 --dry-run >"$T/gcu2.out" 2>"$T/gcu2.err"
is "$(tail -n 1 "$T/gcu2.out")" "cache $CREPO: would remove 0 of 2 step manifests (2 kept, 0 unreadable)" \
    "kiln gc --cache-repo --max-age 1 --dry-run now removes nothing"
is "$(grep -c "^would keep $CREPO:step-[0-9a-f]\{64\} (last used [0-9T:-]*Z)\$" "$T/gcu2.out")" 2 \
    "... saying that the steps' last use counted"
DA=$(tail -n 1 "$T/ca.out")
DB=$(tail -n 1 "$T/cb.out")
case "$DA" in *@sha256:*) ;; *) DA=unset-a ;; esac
is "${DB#*@}" "${DA#*@}" "... and gives the same image digest"
# nothing ran, so no base layer was unpacked: only the two pulled step layers
is "$(ls "$T/cacheB/store/layers/sha256" 2>/dev/null | wc -l)" 2 \
    "the pulled step layers are unpacked in the layer store"

# a bad document under the apt step's tag: a config naming another key
printf '{"created":"2024-01-01T00:00:00Z","created_by":"x","diff_id":"%s","key":"%s","kind":"apt","kiln_version":"0"}' \
    "sha256:$(printf '%064d' 0)" "$(printf '%064d' 1)" >"$T/badcfg.json"
bad=sha256:$(sha256sum "$T/badcfg.json" | cut -d' ' -f1)
loc=$(curl -fsS -X POST -D - -o /dev/null "$REGISTRY_URL/v2/kiln/cache/blobs/uploads/" 2>/dev/null |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case "$loc" in /*) loc=$REGISTRY_URL$loc ;; esac
case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$T/badcfg.json" \
    "$loc${sep}digest=$bad" >/dev/null 2>&1 &&
    jq -c --arg d "$bad" --argjson s "$(wc -c <"$T/badcfg.json")" '.config.digest = $d | .config.size = $s' \
        "$T/apt-cm.json" >"$T/bad-cm.json" &&
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$T/bad-cm.json" "$REGISTRY_URL/v2/kiln/cache/manifests/$APT_TAG" >/dev/null 2>&1
ok $? "(a wrong config is put under the apt step's tag)"
"$KILN" build "$T/s1.yaml" --cache-repo "$CREPO" --data-dir "$T/cacheC" >"$T/cbad.out" 2>"$T/cbad.err"
rc=$?
ok $rc "a build whose cached apt step has a bad document succeeds (exit $rc)"
[ $rc -eq 0 ] || show "$T/cbad.err"
is "$(grep -c "warning: shared step cache $CREPO: look up step apt .*names another key.*the step runs" "$T/cbad.err")" 1 \
    "... with one warning naming the problem"
grep -q 'step apt ran in' "$T/cbad.err"
ok $? "... and the apt step runs"
curl -fsS -H "$CURL_OCI" "$REGISTRY_URL/v2/kiln/cache/manifests/$APT_TAG" 2>/dev/null | jq -r .config.digest >"$T/cd"
curl -fsSL "$REGISTRY_URL/v2/kiln/cache/blobs/$(cat "$T/cd")" 2>/dev/null | jq -e --arg k "${APT_TAG#step-}" '.key == $k' >/dev/null
ok $? "the step that ran replaced the bad document"

# the pip step's layer blob deleted from the cache repository: the apt step still comes from
# the cache, the pip step warns and runs, and its push puts the blob back
PIP_TAG=$(jq -r '.tags[]' "$T/ctags.json" 2>/dev/null | grep -v "^$APT_TAG\$" | head -n 1)
pipl=$(curl -fsS -H "$CURL_OCI" "$REGISTRY_URL/v2/kiln/cache/manifests/$PIP_TAG" 2>/dev/null | jq -r '.layers[0].digest')
curl -fsS -X DELETE "$REGISTRY_URL/v2/kiln/cache/blobs/$pipl" >/dev/null 2>&1
ok $? "(the pip step's layer blob is deleted from the cache repository)"
"$KILN" build "$T/s1.yaml" --cache-repo "$CREPO" --data-dir "$T/cacheE" >"$T/cdel.out" 2>"$T/cdel.err"
rc=$?
ok $rc "a build whose cached pip layer is gone succeeds (exit $rc)"
[ $rc -eq 0 ] || show "$T/cdel.err"
grep -q "step 1/2 apt: cached in $CREPO" "$T/cdel.err" && grep -q 'step pip ran in' "$T/cdel.err" &&
    ! grep -q 'step apt ran in' "$T/cdel.err"
ok $? "... the apt step comes from the cache repository, the pip step runs"
is "$(grep -c "warning: shared step cache $CREPO: look up step pip .*the step runs" "$T/cdel.err")" 1 \
    "... after one warning"
! grep -q 'recorded as used' "$T/cdel.err"
ok $? "... a step created (run and pushed) less than a day ago is not touched by its pull"
pipl=$(curl -fsS -H "$CURL_OCI" "$REGISTRY_URL/v2/kiln/cache/manifests/$PIP_TAG" 2>/dev/null | jq -r '.layers[0].digest')
curl -fsS -o /dev/null -I "$REGISTRY_URL/v2/kiln/cache/blobs/$pipl" 2>/dev/null
ok $? "... and the step's push puts a layer back under its tag"

# a cache repository on a registry that cannot be reached: a warning, the build goes on
spec "$T/s4.yaml" -- kilntest-hello==1.0
t0=$(date +%s)
"$KILN" build "$T/s4.yaml" --cache-repo 127.0.0.1:1/x --data-dir "$T/cacheD" >"$T/cu.out" 2>"$T/cu.err"
rc=$?
ok $rc "a build with an unreachable cache repository succeeds (exit $rc, $(($(date +%s) - t0)) s)"
[ $rc -eq 0 ] || show "$T/cu.err"
is "$(grep -c 'warning: shared step cache 127.0.0.1:1/x: ' "$T/cu.err")" 1 "... with one warning"
grep -q 'step pip ran in' "$T/cu.err"
ok $? "... and the step runs"
"$KILN" build "$T/s4.yaml" --cache-repo "$REGISTRY/kiln/cache:tag" >/dev/null 2>"$T/ctag.err"
is $? 2 "a cache repository with a tag is a usage error"

# ---- 10. kiln gc --cache-repo: old step manifests removed from the cache repository -------------
ctags() { curl -fsS "$REGISTRY_URL/v2/kiln/cache/tags/list" 2>/dev/null | jq -r '(.tags // [])[]' | sort; }
# a tag that is not a step's, on a manifest of its own, is left alone
jq -c '.annotations = {"kiln.test": "other"}' "$T/apt-cm.json" >"$T/other-cm.json" &&
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$T/other-cm.json" "$REGISTRY_URL/v2/kiln/cache/manifests/other" >/dev/null 2>&1
ok $? "(a tag that is not a step's is put in the cache repository)"
ctags >"$T/gc-before"
is "$(grep -c '^step-' "$T/gc-before")" 2 "(the cache repository holds 2 step tags)"
gc_run gc1 "kiln gc --cache-repo --max-age 36500" --cache-repo "$CREPO" --max-age 36500
is "$(tail -n 1 "$T/gc1.out")" "cache $CREPO: removed 0 of 2 step manifests (2 kept, 0 unreadable)" \
    "... removes nothing younger than 100 years"
gc_run gc2 "kiln gc --cache-repo --max-age 0 --dry-run" --cache-repo "$CREPO" --max-age 0 --dry-run
is "$(grep -c "^would remove $CREPO:step-[0-9a-f]\{64\} (created " "$T/gc2.out")" 2 "... lists both steps"
is "$(tail -n 1 "$T/gc2.out")" "cache $CREPO: would remove 2 of 2 step manifests (0 kept, 0 unreadable)" \
    "... in its summary"
ctags | cmp -s - "$T/gc-before"
ok $? "... and removes nothing"
gc_run gc3 "kiln gc --cache-repo --max-age 0" --cache-repo "$CREPO" --max-age 0
is "$(tail -n 1 "$T/gc3.out")" "cache $CREPO: removed 2 of 2 step manifests (0 kept, 0 unreadable)" \
    "... removes both step manifests"
is "$(ctags | tr '\n' ' ')" "other " "... the step tags are gone, the other tag stays"
"$KILN" build "$T/s1.yaml" --cache-repo "$CREPO" --data-dir "$T/cacheF" >"$T/cf.out" 2>"$T/cf.err"
rc=$?
ok $rc "a build with the pruned --cache-repo on a fresh data dir (exit $rc)"
[ $rc -eq 0 ] || show "$T/cf.err"
is "$(grep -c 'step [a-z]* ran in' "$T/cf.err")" 2 "... runs both steps again"
"$KILN" gc --cache-repo "$CREPO" >/dev/null 2>&1
is $? 2 "kiln gc --cache-repo without --max-age is a usage error"

echo "1..$n"
[ $fails -eq 0 ]
