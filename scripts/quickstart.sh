#!/bin/sh
# kiln's main job on embedded defaults, on a fresh Debian 12 machine (as root):
# install the dependencies, build kiln, start a local registry, bootstrap the
# JupyterHub base image into it, and take the sample spec as far as kiln goes
# today (validate, revision, target, Dockerfile). The build engine, service
# and web UI join this script as their issues land.
#
# The registry keeps running afterwards (127.0.0.1:5000, data in
# /var/lib/kiln/registry); stop it with: kill "$(cat /var/lib/kiln/registry.pid)"
set -eu
cd "$(dirname "$0")/.."

REGISTRY=${KILN_QUICKSTART_REGISTRY:-127.0.0.1:5000}
STATE=${KILN_STATE_DIR:-/var/lib/kiln}
BASE=$REGISTRY/kiln/base:bookworm

scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release -Dwerror=true >/dev/null
fi
ninja -C build >/dev/null
KILN=build/kiln
echo "== kiln $($KILN --version | cut -d' ' -f2)"

# A local registry (Debian's docker-registry), started once.
if ! curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
    mkdir -p "$STATE/registry"
    cat >"$STATE/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
YML
    echo "== starting docker-registry on $REGISTRY (data in $STATE/registry)"
    docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
    echo $! >"$STATE/registry.pid"
    i=0
    until curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 50 ] || { echo "docker-registry did not start: see $STATE/registry.log"; exit 1; }
        sleep 0.2
    done
fi

# The JupyterHub base image, bootstrapped from Debian packages once.
if $KILN inspect -q "$BASE" >/dev/null 2>&1; then
    echo "== base image $BASE is there"
else
    echo "== bootstrapping the base image $BASE (mmdebstrap, about a minute)"
    $KILN base --push "$BASE"
fi
$KILN inspect "$BASE"

spec=examples/demo.yaml
echo "== the sample spec $spec"
$KILN spec validate "$spec"
echo "== revision: $($KILN spec hash "$spec")"
echo "== target:   $($KILN spec target "$spec" --repo-prefix "${KILN_REPO_PREFIX:-$REGISTRY/kiln}")"
echo "== Dockerfile:"
$KILN dockerfile "$spec" --base-user jovyan
echo "== as a PrimeHub ImageSpec resource:"
$KILN spec convert "$spec" --to crd
