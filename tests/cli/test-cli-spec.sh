#!/bin/sh
# TAP test of `kiln spec`, `kiln dockerfile` and the top-level options.
# usage: test-cli-spec.sh KILN_BINARY SOURCE_DIR
set -u
KILN=$1
DATA=$2/data
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
n=0
fails=0

ok() { # ok COND_EXIT_STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}

# run EXPECTED_EXIT DESCRIPTION CMD...: runs, captures out/err, checks exit code
run() {
    want=$1; desc=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    [ "$got" -eq "$want" ]
    r=$?
    ok $r "$desc (exit $got, want $want)"
    [ $r -eq 0 ] || { sed 's/^/#   /' "$T/err"; }
}

contains() { # contains FILE TEXT DESCRIPTION
    grep -qF -- "$2" "$1"
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || { echo "#   want: $2"; sed 's/^/#   got:  /' "$1"; }
}

run 0 "--version" "$KILN" --version
contains "$T/out" "kiln 0." "--version prints the version"
run 0 "--help" "$KILN" --help
contains "$T/out" "exit codes:" "--help documents exit codes"
contains "$T/out" "dockerfile" "--help lists commands"
run 2 "no command is a usage error" "$KILN"
run 2 "unknown command" "$KILN" frobnicate
contains "$T/err" "unknown command 'frobnicate'" "unknown command named"
run 0 "help spec" "$KILN" help spec
contains "$T/out" "usage: kiln spec validate" "help spec shows usage"
run 0 "spec --help" "$KILN" spec validate --help
run 0 "dockerfile --help" "$KILN" dockerfile --help

run 0 "validate good specs" "$KILN" spec validate "$DATA/good.yaml" "$DATA/good-crd.yaml" "$DATA/good.json"
contains "$T/out" "good.yaml: valid" "valid file reported"

run 1 "validate a bad spec" "$KILN" spec validate "$DATA/good.yaml" "$DATA/bad.yaml"
contains "$T/err" "bad.yaml: name: 'Bad_Name' is not a valid name" "bad name reported with file and field"
contains "$T/err" "bad.yaml: packages.pip[2] (line 3): 'numpy; rm -rf /' is not a valid requirement" "injection reported with field and line"
contains "$T/err" "bad.yaml: packages.apt[0]: " "bad apt reported"
[ "$(wc -l <"$T/err")" -eq 3 ] ; ok $? "exactly one line per problem"

run 1 "yaml syntax error" "$KILN" spec validate "$DATA/syntax.yaml"
contains "$T/err" "syntax.yaml: yaml: line" "syntax error located"
run 3 "missing file" "$KILN" spec validate "$T/nope.yaml"
contains "$T/err" "nope.yaml" "missing file named"
run 2 "validate without files" "$KILN" spec validate

run 0 "hash" "$KILN" spec hash "$DATA/primehub.yaml"
contains "$T/out" "96ff7925" "PrimeHub's example revision"
run 0 "hash from stdin" sh -c "'$KILN' spec hash - < '$DATA/primehub.yaml'"
contains "$T/out" "96ff7925" "stdin revision"
run 2 "hash of two files" "$KILN" spec hash "$DATA/good.yaml" "$DATA/good.yaml"

run 0 "convert to crd json" "$KILN" spec convert "$DATA/good.yaml" --to crd --format json
cp "$T/out" "$T/crd.json"
contains "$T/crd.json" '"apiVersion": "primehub.io/v1alpha1"' "crd json has apiVersion"
run 0 "convert back to kiln yaml" "$KILN" spec convert "$T/crd.json" --to kiln --format yaml
cp "$T/out" "$T/back.yaml"
run 0 "original converted to kiln yaml" "$KILN" spec convert "$DATA/good.yaml"
cmp -s "$T/out" "$T/back.yaml"; ok $? "yaml -> crd json -> yaml is stable"
"$KILN" spec hash "$T/crd.json" >"$T/h1"; "$KILN" spec hash "$DATA/good.yaml" >"$T/h2"
cmp -s "$T/h1" "$T/h2"; ok $? "conversion keeps the revision"
run 2 "convert --to bad" "$KILN" spec convert "$DATA/good.yaml" --to docker
contains "$T/err" "--to must be 'kiln' or 'crd'" "bad --to explained"

run 0 "target from prefix" "$KILN" spec target "$DATA/primehub.yaml" --repo-prefix localhost:5000/team
contains "$T/out" "localhost:5000/team/demo:96ff7925" "prefix/name:hash"
run 0 "target from env" env KILN_PUSH_REPO=localhost:5000/all "$KILN" spec target "$DATA/primehub.yaml"
contains "$T/out" "localhost:5000/all:demo-96ff7925" "push repo from env"
run 0 "target from PrimeHub env" env -u KILN_REPO_PREFIX -u KILN_PUSH_REPO PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX=reg.example.com/hub "$KILN" spec target "$DATA/primehub.yaml"
contains "$T/out" "reg.example.com/hub/demo:96ff7925" "PrimeHub prefix variable"
run 1 "target without configuration" env -u KILN_REPO_PREFIX -u KILN_PUSH_REPO -u PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX "$KILN" spec target "$DATA/primehub.yaml"

run 0 "dockerfile" "$KILN" dockerfile "$DATA/good.yaml" --base-user jovyan
contains "$T/out" "FROM jupyter/base-notebook" "FROM line"
contains "$T/out" "apt-get install -y --no-install-recommends 'curl' 'jq'" "apt packages quoted"
contains "$T/out" "USER jovyan" "user restored"
run 1 "dockerfile of a bad spec" "$KILN" dockerfile "$DATA/bad.yaml"
run 1 "dockerfile with a bad user" "$KILN" dockerfile "$DATA/good.yaml" --base-user 'a;b'
run 2 "dockerfile without file" "$KILN" dockerfile

echo "1..$n"
[ "$fails" -eq 0 ]
