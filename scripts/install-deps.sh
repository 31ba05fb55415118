#!/bin/sh
# Install every package kiln needs to build, test and run, with apt-get.
# Idempotent: packages already present are not touched, and nothing is printed
# for them. Must run as root on Debian 12 (bookworm).
#
#   scripts/install-deps.sh            build + run dependencies
#   scripts/install-deps.sh --test     also the test and fuzzing tools
#   scripts/install-deps.sh --bench    also the benchmarks' peers and tools
#                                      (bench/: docker.io, buildah, wrk, pigz)
set -eu

build_pkgs="gcc clang meson ninja-build pkg-config clang-format
libyaml-dev libjansson-dev libssl-dev libcurl4-openssl-dev libarchive-dev
zlib1g-dev libdeflate-dev libisal-dev libzstd-dev libsqlite3-dev libpq-dev libmicrohttpd-dev"
run_pkgs="runc crun docker-registry mmdebstrap ca-certificates"
test_pkgs="libclang-rt-14-dev apache2-utils skopeo umoci postgresql chromium
python3 python3-pip python3-venv python3-wheel python3-cryptography curl jq time busybox-static
systemd"
bench_pkgs="docker.io buildah wrk pigz"

want="$build_pkgs $run_pkgs"
case ${1:-} in
'' | --test | --bench) ;;
*)
    echo "install-deps: unknown option '$1' (--test, --bench)" >&2
    exit 2
    ;;
esac
if [ "${1:-}" = "--bench" ]; then
    want="$want $bench_pkgs"
    set -- --test
fi
if [ "${1:-}" = "--test" ]; then
    want="$want $test_pkgs"
    # Node.js may come from another packager that bundles npm (and conflicts
    # with Debian's npm package): only ask apt for it when npm is absent.
    if ! command -v npm >/dev/null 2>&1; then
        want="$want nodejs npm"
    fi
fi

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Services must not start on install: kiln's tests start their own instances.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
