#!/bin/sh
# kiln's main job on embedded defaults, on a fresh Debian 12 machine (as root):
# install the dependencies, build kiln, and run it on the sample spec.
#
# What runs today (the foundation): the sample spec is validated, its
# revision hash and target image are computed, and the Dockerfile its build
# follows is rendered. Later stages (local registry, base image bootstrap,
# build, web UI) are added here as they land; see docs/ and the issues.
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release -Dwerror=true >/dev/null
fi
ninja -C build >/dev/null

spec=examples/demo.yaml
echo "== kiln $(build/kiln --version | cut -d' ' -f2): $spec"
build/kiln spec validate "$spec"
echo "== revision: $(build/kiln spec hash "$spec")"
echo "== target:   $(build/kiln spec target "$spec" --repo-prefix "${KILN_REPO_PREFIX:-127.0.0.1:5000/kiln}")"
echo "== Dockerfile:"
build/kiln dockerfile "$spec" --base-user jovyan
echo "== as a PrimeHub ImageSpec resource:"
build/kiln spec convert "$spec" --to crd
