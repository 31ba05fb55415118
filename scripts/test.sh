#!/bin/sh
# kiln's whole test run, for a fresh Debian 12 machine (as root) and for CI:
#   1. install every dependency (scripts/install-deps.sh --test)
#   2. build with gcc and -Werror; run every test (unit, fuzz corpora, CLI)
#   3. build with clang, ASan+UBSan (-fno-sanitize-recover=all) and the
#      libFuzzer targets; run every test again
#   4. check formatting with clang-format
# Ends with the line "N passed, N failed" (one count per test program and
# build); exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.." || exit 1

scripts/install-deps.sh --test || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
skipped=0

# count_log BUILD_DIR: add the results in meson's testlog.json to the totals.
count_log() {
    log="$1/meson-logs/testlog.json"
    if [ ! -f "$log" ]; then
        failed=$((failed + 1))
        return
    fi
    set -- $(python3 -c '
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
print(p, f, s)' "$log")
    passed=$((passed + $1))
    failed=$((failed + $2))
    skipped=$((skipped + $3))
}

# suite NAME BUILD_DIR [meson setup args...]; MESON_TEST_ARGS: extra `meson test` args
suite() {
    name="$1"
    dir="$2"
    shift 2
    echo "== $name: configure and build ($dir)"
    if [ ! -f "$dir/build.ninja" ]; then
        if ! meson setup "$dir" "$@" >"$dir.setup.log" 2>&1; then
            cat "$dir.setup.log"
            echo "== $name: configure FAILED"
            failed=$((failed + 1))
            return
        fi
    else
        meson configure "$dir" "$@" >/dev/null 2>&1 || true
    fi
    if ! ninja -C "$dir"; then
        echo "== $name: build FAILED"
        failed=$((failed + 1))
        return
    fi
    echo "== $name: test"
    rm -f "$dir/meson-logs/testlog.json"
    # shellcheck disable=SC2086
    meson test -C "$dir" --print-errorlogs --num-processes 2 ${MESON_TEST_ARGS:-}
    count_log "$dir"
}

suite "gcc -Werror" build -Dwerror=true -Dfuzzing=false

# The sanitizer build skips the 'bootstrap' suite (`kiln base`: two mmdebstrap
# runs, about 4 minutes): it is mostly mmdebstrap's time, and the C paths it
# takes (pack, layout writer, push) run under the sanitizers in the unit and
# integration tests; the gcc build runs it.
MESON_TEST_ARGS="--no-suite bootstrap" CC=clang suite "clang ASan+UBSan" build-asan -Dwerror=true -Dfuzzing=true \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args=-fno-sanitize-recover=all -Dc_link_args=-fno-sanitize-recover=all

echo "== format: clang-format --dry-run --Werror"
if git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror; then
    passed=$((passed + 1))
else
    echo "== format: FAILED (run: git ls-files '*.c' '*.h' | xargs clang-format -i)"
    failed=$((failed + 1))
fi

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
