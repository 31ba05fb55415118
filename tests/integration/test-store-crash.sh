#!/bin/sh
# TAP test: kill -9 during blob commits and layer extractions never leaves a
# partial blob or layer visible under a digest name; the next commit or
# extraction succeeds; gc removes the leftovers.
# usage: test-store-crash.sh HELPER   (HELPER: the store-crash-helper program)
set -u
HELPER=${1:?usage: test-store-crash.sh HELPER}
if [ ! -x "$HELPER" ]; then
    echo "Bail out! helper '$HELPER' is not an executable"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-store-crash.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
S=$T/store
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

count() { # count DIR: entries in DIR
    find "$1" -mindepth 1 -maxdepth 1 | wc -l | tr -d ' '
}

wait_for() { # wait_for FILE: up to 20 s
    i=0
    while [ ! -e "$1" ] && [ $i -lt 400 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    [ -e "$1" ]
}

# kill9 PID: SIGKILL and reap; succeeds when the process died of SIGKILL.
kill9() {
    kill -9 "$1" 2>/dev/null
    wait "$1"
    st=$?
    PID=
    [ "$st" -eq 137 ]
}

# A 32 MiB blob.
head -c 33554432 /dev/urandom >"$T/big"
HEX=$(sha256sum "$T/big" | cut -d' ' -f1)
DIGEST=sha256:$HEX

# ---- blob: kill -9 mid-write ----
"$HELPER" blob-slow "$S" "$T/big" "$DIGEST" "$T/ready" >/dev/null &
PID=$!
wait_for "$T/ready"
ok $? "slow blob writer started"
kill9 "$PID"
ok $? "blob writer killed with SIGKILL mid-write"
is "$(count "$S/blobs/sha256")" 0 "no file under any digest name"
"$HELPER" blob-has "$S" "$DIGEST" >/dev/null
is $? 1 "the blob is absent"
is "$(count "$S/tmp")" 1 "one leftover temp file"
is "$("$HELPER" gc "$S")" "tmp_removed=0 blobs_removed=0 layers_removed=0 locks_removed=0" \
    "gc with the default age keeps a fresh temp"
out=$("$HELPER" blob-put "$S" "$T/big" "$DIGEST")
is "$out" "$DIGEST" "the next commit of the same blob succeeds"
is "$(sha256sum "$S/blobs/sha256/$HEX" | cut -d' ' -f1)" "$HEX" "the committed file is complete"
is "$("$HELPER" blob-has "$S" "$DIGEST")" 33554432 "has reports the full size"
is "$("$HELPER" gc "$S" any-age)" "tmp_removed=1 blobs_removed=0 layers_removed=0 locks_removed=0" \
    "gc removes the leftover (its writer's lock died with it)"
is "$(count "$S/tmp")" 0 "tmp is empty"

# ---- blob: kill -9 at many points of a full-speed commit ----
partial=0
complete=0
for d in 0 0.01 0.02 0.04 0.06 0.08 0.1 0.13 0.16 0.2 0.25 0.3 0.4; do
    "$HELPER" blob-rm "$S" "$DIGEST" || partial=$((partial + 100))
    "$HELPER" blob-put "$S" "$T/big" "$DIGEST" >/dev/null &
    PID=$!
    sleep "$d"
    kill -9 "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=
    for f in "$S"/blobs/sha256/*; do
        [ -e "$f" ] || continue
        if [ "$(basename "$f")" = "$HEX" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$HEX" ]; then
            complete=$((complete + 1))
        else
            partial=$((partial + 1))
        fi
    done
done
echo "# $complete of 13 killed commits had finished, the others left nothing visible"
is "$partial" 0 "13 kills at 0-400 ms into a commit: a digest name is complete or absent"
"$HELPER" gc "$S" any-age >/dev/null
ok $? "gc after the kills"
is "$(count "$S/tmp")" 0 "no leftovers after gc"
out=$("$HELPER" blob-put "$S" "$T/big" "$DIGEST")
is "$out" "$DIGEST" "commit after the kills succeeds"

# ---- layer: kill -9 mid-extraction ----
DIFF=sha256:$(printf 'layer' | sha256sum | cut -d' ' -f1)
"$HELPER" layer-slow "$S" "$DIFF" "$T/lready" >/dev/null &
PID=$!
wait_for "$T/lready"
ok $? "slow extraction started"
kill9 "$PID"
ok $? "extraction killed with SIGKILL"
"$HELPER" layer-lookup "$S" "$DIFF" >/dev/null
is $? 1 "the layer is absent"
is "$(count "$S/layers/sha256")" 0 "no directory under any diff_id"
is "$(count "$S/tmp")" 1 "one leftover temp directory"
is "$("$HELPER" layer-ensure "$S" "$DIFF")" extracted "the next ensure extracts (no stale lock)"
path=$("$HELPER" layer-lookup "$S" "$DIFF")
is "$(cat "$path/usr/hello" 2>/dev/null)" hello "the layer is complete"
is "$("$HELPER" layer-ensure "$S" "$DIFF")" present "a further ensure finds it"
is "$("$HELPER" gc "$S" any-age)" "tmp_removed=1 blobs_removed=0 layers_removed=0 locks_removed=0" \
    "gc removes the leftover directory"
is "$(count "$S/tmp")" 0 "tmp is empty"
[ -d "$path" ] && [ "$("$HELPER" blob-has "$S" "$DIGEST")" = 33554432 ]
ok $? "the good layer and blob survive gc"

echo "1..$n"
[ "$fails" -eq 0 ]
