#!/bin/sh
# TAP test of deploy/.
# systemd: the units pass `systemd-analyze verify` (with the unit's
# /usr/local/bin/kiln replaced by the kiln under test), every variable of
# kiln.env.example is one that `kiln serve --help` documents, and each unit's
# ExecStart command line really starts (data directory and listen address
# moved to a temporary directory) and stops on SIGTERM with status 0.
# Kubernetes (deploy/kubernetes/*.yaml, read with python3's yaml module; SKIP
# without it): every manifest parses (no duplicate keys), every document has
# apiVersion, kind and metadata.name, a known kind and apiVersion, the
# namespace kiln and field names from this test's list of Kubernetes fields;
# every variable the manifests name or set is documented by `kiln serve
# --help` or `kiln worker --help`; each Deployment's selector matches its pod
# labels, its volume is mounted at the data directory its command line names,
# its grace period outlasts kiln's --grace; the Service's targetPort, the
# containerPort, the probes' port and the --listen port agree. Then each
# container's command and args start for real (the kiln under test, the
# manifests' environment, data directory and listen address moved as for the
# units), kiln serve answers its probes' paths with 200, and SIGTERM stops
# each with status 0. The checks are shown to fail on broken copies.
# No systemd and no Kubernetes cluster run here: neither the units nor the
# manifests are ever started by them.
# usage: test-deploy.sh KILN_BINARY [SOURCE_DIR]
set -u
KILN=$1
case $KILN in /*) ;; *) KILN=$(pwd)/$KILN ;; esac
HERE=$(cd "${2:-$(dirname "$0")}" && pwd)
DEPLOY=$HERE/../../deploy

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test-deploy.XXXXXX") || exit 1
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill -9 "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
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
skip() { # skip DESCRIPTION REASON
    n=$((n + 1))
    echo "ok $n # SKIP $1: $2"
}
show() { sed 's/^/#   /' "$1" | tail -n 15; }

UNITS="kiln-serve kiln-worker"

# ---- systemd-analyze verify ---------------------------------------------------------
for u in $UNITS; do
    f=$DEPLOY/systemd/$u.service
    [ -f "$f" ]
    ok $? "deploy/systemd/$u.service exists"
    grep -q '^ExecStart=/usr/local/bin/kiln ' "$f"
    ok $? "$u: ExecStart runs /usr/local/bin/kiln"
    mkdir -p "$T/units"
    sed "s|/usr/local/bin/kiln |$KILN |" "$f" >"$T/units/$u.service"
    if command -v systemd-analyze >/dev/null 2>&1; then
        systemd-analyze verify "$T/units/$u.service" >"$T/verify.out" 2>&1
        r=$?
        # a unit that verifies cleanly prints nothing
        [ $r -eq 0 ] && [ ! -s "$T/verify.out" ]
        ok $? "$u: systemd-analyze verify finds nothing to say"
        [ $r -eq 0 ] && [ ! -s "$T/verify.out" ] || show "$T/verify.out"
    else
        skip "$u: systemd-analyze verify" "systemd-analyze is not installed"
    fi
    grep -q '^KillMode=mixed$' "$f"
    ok $? "$u: SIGTERM goes to kiln alone (KillMode=mixed), so running builds get their grace"
done
# the check itself must be able to fail
if command -v systemd-analyze >/dev/null 2>&1; then
    sed 's/^Type=exec$/Type=nonsense/' "$T/units/kiln-serve.service" >"$T/units/broken.service"
    systemd-analyze verify "$T/units/broken.service" >"$T/verify.out" 2>&1
    [ -s "$T/verify.out" ]
    ok $? "systemd-analyze verify does complain about a broken unit"
fi

# ---- kiln.env.example ---------------------------------------------------------------
ENVF=$DEPLOY/kiln.env.example
"$KILN" serve --help >"$T/help" 2>&1
vars=$(sed -n 's/^#\{0,1\}\([A-Z][A-Z0-9_]*\)=.*/\1/p' "$ENVF")
[ -n "$vars" ]
ok $? "kiln.env.example names variables"
for v in $vars; do
    grep -q "$v" "$T/help"
    ok $? "kiln.env.example: $v is documented by kiln serve --help"
done
# systemd's EnvironmentFile: comments, blank lines and KEY=VALUE only
bad=$(grep -v -e '^#' -e '^$' -e '^[A-Z][A-Z0-9_]*=' "$ENVF" | wc -l)
[ "$bad" -eq 0 ]
ok $? "kiln.env.example holds only comments and KEY=VALUE lines"

# ---- each ExecStart starts and stops --------------------------------------------------
# relocate NAME: the command-line arguments on stdin (one line) with
# --data-dir moved to $T/data-NAME and --listen on a free loopback port.
relocate() {
    sed -e "s|--data-dir [^ ]*|--data-dir $T/data-$1|" -e 's|--listen [^ ]*|--listen 127.0.0.1:0|'
}
# exec_start UNIT: the unit's ExecStart arguments after the binary, relocated.
exec_start() {
    sed -n 's|^ExecStart=/usr/local/bin/kiln ||p' "$DEPLOY/systemd/$1.service" | relocate "$1"
}
# start_kiln NAME READY_PATTERN ARGS [VAR=VALUE...]: start the kiln under test
# in the background with ARGS (split at spaces, as systemd does) and the given
# variables, then the test's own (no KILN_DATA_DIR, a registry never reached,
# a SQLite store that kiln serve and kiln worker share, a known admin token);
# wait for READY_PATTERN on its stderr ($T/NAME.err).
start_kiln() {
    name=$1 ready=$2 args=$3
    shift 3
    # shellcheck disable=SC2086 # the arguments, split as systemd does
    env -u KILN_DATA_DIR "$@" KILN_REGISTRY_ENDPOINT=127.0.0.1:9 KILN_STORE_URL="sqlite:$T/shared.db" \
        KILN_ADMIN_TOKEN=deploy-test-token "$KILN" $args </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    PID=$!
    i=0
    while [ $i -lt 200 ]; do
        grep -qs "$ready" "$T/$name.err" && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
# run_unit UNIT READY_PATTERN: start the unit's ExecStart, wait for the line.
run_unit() {
    start_kiln "$1" "$2" "$(exec_start "$1")"
}
stop_kiln() {
    kill -TERM "$PID"
    wait "$PID"
    rc=$?
    PID=
    return $rc
}
# serve_url NAME: the URL a started kiln serve printed.
serve_url() {
    sed -n 's/^kiln serve: listening on \(http:[^ ]*\).*$/\1/p' "$T/$1.err" | head -n 1
}

run_unit kiln-serve '^kiln serve: listening on '
r=$?
ok $r "kiln-serve's ExecStart starts kiln serve"
[ $r -eq 0 ] || show "$T/kiln-serve.err"
URL=$(serve_url kiln-serve)
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer deploy-test-token' \
    "$URL/api/v1/specs")
[ "$code" = 200 ]
ok $? "it answers the API (GET /api/v1/specs: $code)"
[ -d "$T/data-kiln-serve" ]
ok $? "it uses the unit's data directory"
stop_kiln
r=$?
ok $r "SIGTERM stops it with status 0"
[ $r -eq 0 ] || show "$T/kiln-serve.err"

run_unit kiln-worker '^kiln worker: .* running as '
r=$?
ok $r "kiln-worker's ExecStart starts kiln worker on the shared store"
[ $r -eq 0 ] || show "$T/kiln-worker.err"
stop_kiln
r=$?
ok $r "SIGTERM stops it with status 0"
[ $r -eq 0 ] || show "$T/kiln-worker.err"

# ---- deploy/kubernetes ----------------------------------------------------------------
K8S=$DEPLOY/kubernetes
MANIFESTS="kiln.yaml kiln-workers.yaml"
for m in $MANIFESTS; do
    [ -f "$K8S/$m" ]
    ok $? "deploy/kubernetes/$m exists"
done
"$KILN" serve --help >"$T/help-k8s" 2>&1
"$KILN" worker --help >>"$T/help-k8s" 2>&1

# Every KILN_* name in the manifests' text, comments included, is documented.
# shellcheck disable=SC2086 # the file names
vars=$(cd "$K8S" && grep -oh 'KILN_[A-Z0-9][A-Z0-9_]*' $MANIFESTS | sort -u)
[ -n "$vars" ]
ok $? "the manifests name KILN_* variables"
for v in $vars; do
    grep -qw "$v" "$T/help-k8s"
    ok $? "manifests: $v is documented by kiln serve --help or kiln worker --help"
done

if ! python3 -c 'import yaml' 2>/dev/null; then
    skip "deploy/kubernetes: the manifests' structure" "python3 or its yaml module is missing"
    skip "deploy/kubernetes: the containers' command lines" "python3 or its yaml module is missing"
    echo "1..$n"
    [ $fails -eq 0 ]
    exit
fi

# k8s.py check FILE...: the static checks, as lines "0|1 TAB description"
# ("# TAB text": a diagnostic). k8s.py facts DIR FILE...: for each kiln
# container (named after its Deployment), DIR/NAME.args (its args, one line),
# DIR/NAME.env (VAR=VALUE lines: its environment from the manifests),
# DIR/NAME.probes (its probes' HTTP paths); DIR/vars (the variables set);
# prints the names, kiln serve's first. Grace's default comes from `kiln serve --help` ($HELP).
cat >"$T/k8s.py" <<'EOF'
import base64, os, re, sys
import yaml

KINDS = {"Namespace": "v1", "ConfigMap": "v1", "Secret": "v1",
         "PersistentVolumeClaim": "v1", "Service": "v1", "Deployment": "apps/v1"}
NAMESPACE = "kiln"
KILN = "/usr/local/bin/kiln"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class Loader(yaml.SafeLoader):
    pass


def mapping(loader, node):
    loader.flatten_mapping(node)
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), k.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)


# Field names this test knows (from the Kubernetes API reference; a subset
# for volumes): f("a", b={...}) is {"a": None, "b": {...}}, None = free-form.
def f(*names, **subs):
    d = dict.fromkeys(names)
    d.update(subs)
    return d


META = f("name", "namespace", "labels", "annotations")
REF = f("name", "optional")
KEYREF = f("name", "key", "optional")
PROBE = f("exec", "failureThreshold", "grpc", "initialDelaySeconds", "periodSeconds",
          "successThreshold", "tcpSocket", "terminationGracePeriodSeconds",
          "timeoutSeconds", httpGet=f("host", "httpHeaders", "path", "port", "scheme"))
CONTAINER = f(
    "args", "command", "image", "imagePullPolicy", "lifecycle", "name", "resizePolicy",
    "restartPolicy", "stdin", "stdinOnce", "terminationMessagePath",
    "terminationMessagePolicy", "tty", "volumeDevices", "workingDir",
    env=f("name", "value", valueFrom=f("configMapKeyRef", "secretKeyRef", "fieldRef",
                                       "resourceFieldRef")),
    envFrom=f("prefix", configMapRef=REF, secretRef=REF),
    ports=f("containerPort", "hostIP", "hostPort", "name", "protocol"),
    livenessProbe=PROBE, readinessProbe=PROBE, startupProbe=PROBE,
    resources=f("claims", "limits", "requests"),
    securityContext=f("allowPrivilegeEscalation", "appArmorProfile", "privileged",
                      "procMount", "readOnlyRootFilesystem", "runAsGroup", "runAsNonRoot",
                      "runAsUser", "seLinuxOptions", "windowsOptions",
                      capabilities=f("add", "drop"),
                      seccompProfile=f("type", "localhostProfile")),
    volumeMounts=f("mountPath", "mountPropagation", "name", "readOnly", "recursiveReadOnly",
                   "subPath", "subPathExpr"))
POD = f(
    "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "dnsConfig",
    "dnsPolicy", "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC",
    "hostNetwork", "hostPID", "hostUsers", "hostname", "imagePullSecrets", "nodeName",
    "nodeSelector", "os", "overhead", "preemptionPolicy", "priority", "priorityClassName",
    "readinessGates", "resourceClaims", "restartPolicy", "runtimeClassName",
    "schedulerName", "schedulingGates", "securityContext", "serviceAccount",
    "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "subdomain",
    "terminationGracePeriodSeconds", "tolerations",
    containers=CONTAINER, initContainers=CONTAINER,
    topologySpreadConstraints=f("labelSelector", "matchLabelKeys", "maxSkew", "minDomains",
                                "nodeAffinityPolicy", "nodeTaintsPolicy", "topologyKey",
                                "whenUnsatisfiable"),
    volumes=f("name", "configMap", "secret", "hostPath", "projected", "downwardAPI",
              "ephemeral", "csi", "nfs", emptyDir=f("medium", "sizeLimit"),
              persistentVolumeClaim=f("claimName", "readOnly")))
TOP = {
    "Namespace": f("apiVersion", "kind", "spec", metadata=META),
    "ConfigMap": f("apiVersion", "kind", "data", "binaryData", "immutable", metadata=META),
    "Secret": f("apiVersion", "kind", "data", "stringData", "type", "immutable", metadata=META),
    "PersistentVolumeClaim": f("apiVersion", "kind", metadata=META, spec=f(
        "accessModes", "dataSource", "dataSourceRef", "selector", "storageClassName",
        "volumeAttributesClassName", "volumeMode", "volumeName",
        resources=f("limits", "requests"))),
    "Service": f("apiVersion", "kind", metadata=META, spec=f(
        "allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs",
        "externalName", "externalTrafficPolicy", "healthCheckNodePort",
        "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy", "loadBalancerClass",
        "loadBalancerIP", "loadBalancerSourceRanges", "publishNotReadyAddresses", "selector",
        "sessionAffinity", "sessionAffinityConfig", "trafficDistribution", "type",
        ports=f("appProtocol", "name", "nodePort", "port", "protocol", "targetPort"))),
    "Deployment": f("apiVersion", "kind", metadata=META, spec=f(
        "minReadySeconds", "paused", "progressDeadlineSeconds", "replicas",
        "revisionHistoryLimit", selector=f("matchLabels", "matchExpressions"),
        strategy=f("type", rollingUpdate=f("maxSurge", "maxUnavailable")),
        template=f(metadata=META, spec=POD))),
}


def unknown(obj, schema, path, out):
    if isinstance(obj, list):
        for i, x in enumerate(obj):
            unknown(x, schema, "%s[%d]" % (path, i), out)
    elif isinstance(obj, dict) and schema is not None:
        for k, v in obj.items():
            if k not in schema:
                out.append("%s.%s" % (path, k))
            else:
                unknown(v, schema[k], "%s.%s" % (path, k), out)


def check(cond, desc, why=None):
    print("%d\t%s" % (0 if cond else 1, desc))
    if not cond and why:
        print("#\t%s" % why)
    return cond


def load(paths, report):
    docs = []
    for p in paths:
        base = os.path.basename(p)
        try:
            with open(p) as fh:
                ds = [d for d in yaml.load_all(fh, Loader=Loader) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            if report:
                check(False, "%s parses as YAML, no duplicate keys" % base,
                      " ".join(str(e).split()))
            continue
        if report:
            check(True, "%s parses as YAML, no duplicate keys" % base)
            check(ds, "%s holds documents" % base)
        docs += [(base, i + 1, d) for i, d in enumerate(ds)]
    return docs


def well_formed(d):
    m = d.get("metadata") if isinstance(d, dict) else None
    return (isinstance(d.get("apiVersion") if m is not None else None, str)
            and isinstance(d.get("kind"), str) and isinstance(m, dict)
            and isinstance(m.get("name"), str) and m["name"] != "")


def dig(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def opt(args, name):
    """The value after `name` in args (the test moves only this form)."""
    for i, a in enumerate(args[:-1]):
        if a == name:
            return args[i + 1]
    return None


def strings(m):
    return isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str)
                                       for k, v in m.items())


def values(obj):
    """The variables a ConfigMap or Secret gives (data decoded)."""
    out = {}
    for k, v in (obj.get("data") or {}).items():
        out[k] = base64.b64decode(v).decode() if obj["kind"] == "Secret" else v
    out.update(obj.get("stringData") or {})
    return out


def environment(c, objs):
    """(variables, missing refs) of container c."""
    env, missing = {}, []
    for ef in c.get("envFrom") or []:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = ef.get(key)
            if ref is None:
                continue
            o = objs.get((kind, ref.get("name")))
            if o is not None:
                for k, v in values(o).items():
                    env[(ef.get("prefix") or "") + k] = v
            elif not ref.get("optional"):
                missing.append("%s/%s" % (kind, ref.get("name")))
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = dig(e, "valueFrom", key)
            if ref is None:
                continue
            o = objs.get((kind, ref.get("name")))
            if o is not None and ref.get("key") in values(o):
                env[e["name"]] = values(o)[ref["key"]]
            elif not ref.get("optional"):
                missing.append("%s/%s key %s" % (kind, ref.get("name"), ref.get("key")))
    return env, missing


def kiln_containers(objs):
    """(name, deployment, container) for every container running kiln."""
    out = []
    for (kind, dname), d in sorted(objs.items()):
        if kind != "Deployment":
            continue
        cs = dig(d, "spec", "template", "spec", "containers") or []
        for c in cs:
            if c.get("command") == [KILN]:
                out.append((dname if len(cs) == 1 else "%s-%s" % (dname, c.get("name")), d, c))
    return out


def resolve_port(port, c):
    """A probe's or Service's port (a number or a containerPort's name) as a number."""
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def default_grace():
    with open(os.environ["HELP"]) as fh:
        m = re.search(r"--grace SECS\s.*?\((\d+)\)", fh.read())
    return int(m.group(1)) if m else None


def cmd_check(paths):
    docs = load(paths, True)
    objs = {}
    for base, i, d in docs:
        if not check(isinstance(d, dict) and well_formed(d),
                     "%s document %d has apiVersion, kind and metadata.name" % (base, i)):
            continue
        kind, name = d["kind"], d["metadata"]["name"]
        label = "%s: %s/%s" % (base, kind, name)
        check(KINDS.get(kind) == d["apiVersion"],
              "%s: a known kind with its apiVersion (%s)" % (label, d["apiVersion"]),
              "known: %s" % ", ".join("%s %s" % kv for kv in sorted(KINDS.items())))
        if kind != "Namespace":
            check(d["metadata"].get("namespace") == NAMESPACE,
                  "%s: in the namespace %s" % (label, NAMESPACE))
        bad = []
        unknown(d, TOP.get(kind), kind, bad)
        check(not bad, "%s: field names known (this test's list of Kubernetes fields)" % label,
              "unknown: %s" % ", ".join(bad))
        check((kind, name) not in objs, "%s: the only %s of that name" % (label, kind))
        objs[(kind, name)] = d

    ns = objs.get(("Namespace", NAMESPACE))
    check(ns is not None and dig(ns, "metadata", "labels",
                                 "pod-security.kubernetes.io/enforce") == "privileged",
          "Namespace/%s is defined and lets privileged pods in (pod-security enforce)"
          % NAMESPACE)
    for (kind, name), d in sorted(objs.items()):
        if kind in ("ConfigMap", "Secret"):
            keys = list((d.get("data") or {}).keys()) + list((d.get("stringData") or {}).keys())
            check(strings(d.get("data") or {}) and strings(d.get("stringData") or {})
                  and all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) for k in keys),
                  "%s/%s: variable names, string values" % (kind, name))

    grace0 = default_grace()
    check(grace0 is not None, "kiln serve --help gives --grace's default (%s s)" % grace0)
    containers = kiln_containers(objs)
    subs = {}
    for (kind, dname), d in sorted(objs.items()):
        if kind != "Deployment":
            continue
        spec = d.get("spec") or {}
        sel = dig(spec, "selector", "matchLabels") or {}
        labels = dig(spec, "template", "metadata", "labels") or {}
        check(sel and not dig(spec, "selector", "matchExpressions")
              and all(labels.get(k) == v for k, v in sel.items()),
              "Deployment/%s: its selector matches its pod template's labels" % dname)
        cs = dig(spec, "template", "spec", "containers") or []
        check(cs and all(c.get("command") == [KILN] for c in cs),
              "Deployment/%s: its containers' command is [%s]" % (dname, KILN))
        claims = [dig(v, "persistentVolumeClaim", "claimName")
                  for v in dig(spec, "template", "spec", "volumes") or []]
        rwo = [c for c in claims if c and "ReadWriteOnce" in
               (dig(objs.get(("PersistentVolumeClaim", c)), "spec", "accessModes") or [])]
        if rwo:
            check(spec.get("replicas") == 1 and dig(spec, "strategy", "type") == "Recreate",
                  "Deployment/%s: replicas 1 and strategy Recreate (ReadWriteOnce %s, SQLite)"
                  % (dname, ", ".join(rwo)))

    images = set()
    for name, d, c in containers:
        label = "Deployment %s" % name
        pod = dig(d, "spec", "template", "spec")
        args = c.get("args")
        sub = args[0] if isinstance(args, list) and args else None
        subs[name] = sub
        images.add(c.get("image"))
        check(isinstance(args, list) and all(isinstance(a, str) and a and not re.search(r"\s", a)
                                             for a in args) and sub in ("serve", "worker"),
              "%s: args are strings without spaces, kiln serve or kiln worker (%s)"
              % (label, sub))
        if not isinstance(args, list):
            continue
        args = [str(a) for a in args]
        env, missing = environment(c, objs)
        check(not missing, "%s: the ConfigMaps and Secrets it reads are defined (or optional)"
              % label, "missing: %s" % ", ".join(missing))
        check(all("\n" not in v for v in env.values()),
              "%s: its variables are one line each" % label)
        dd = opt(args, "--data-dir")
        check(dd is not None, "%s: args name the data directory (--data-dir DIR)" % label)
        mounts = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == dd]
        vols = {v.get("name"): v for v in pod.get("volumes") or []}
        vol = vols.get(mounts[0].get("name")) if mounts else None
        claim = dig(vol, "persistentVolumeClaim", "claimName")
        check(vol is not None and (claim is None or ("PersistentVolumeClaim", claim) in objs),
              "%s: a volume of the pod is mounted at its data directory %s%s"
              % (label, dd, " (claim %s, defined here)" % claim if claim else ""))
        g = opt(args, "--grace")
        g = int(g) if g is not None and g.isdigit() else grace0
        tg = pod.get("terminationGracePeriodSeconds", 30)
        check(isinstance(tg, int) and g is not None and tg > g,
              "%s: terminationGracePeriodSeconds (%s) outlasts kiln's --grace (%s s)"
              % (label, tg, g))
        sc = c.get("securityContext") or {}
        check(sc.get("privileged") is True and sc.get("runAsUser", 0) == 0
              and not sc.get("runAsNonRoot"),
              "%s: root and privileged (overlayfs mounts, runc)" % label)
        listen = opt(args, "--listen")
        if sub != "serve":
            check(listen is None and not any(c.get(p) for p in
                                             ("livenessProbe", "readinessProbe", "startupProbe")),
                  "%s: kiln %s serves no HTTP: no --listen, no probes" % (label, sub))
            continue
        m = re.match(r"^(.*):([0-9]+)$", listen or "")
        port = int(m.group(2)) if m else None
        check(m and m.group(1) not in LOOPBACK,
              "%s: --listen %s, not on loopback (the Service and the kubelet reach the pod)"
              % (label, listen))
        check(any(p.get("containerPort") == port for p in c.get("ports") or []),
              "%s: a containerPort is the --listen port (%s)" % (label, port))
        probes = [(k, c.get(k)) for k in ("startupProbe", "livenessProbe", "readinessProbe")
                  if c.get(k)]
        check(c.get("livenessProbe") and c.get("readinessProbe"),
              "%s: has liveness and readiness probes" % label)
        for k, p in probes:
            h = p.get("httpGet") or {}
            check(h.get("path") and resolve_port(h.get("port"), c) == port,
                  "%s: %s GET %s on the --listen port (%s)" % (label, k, h.get("path"), port))

    check({"kiln-serve": "serve", "kiln-worker": "worker"}.items() <= subs.items(),
          "Deployments kiln-serve (kiln serve) and kiln-worker (kiln worker)")
    check(len(images) == 1, "every kiln container runs the same image (%s)"
          % ", ".join(sorted(str(i) for i in images)))

    services = [(n, d) for (k, n), d in sorted(objs.items()) if k == "Service"]
    check(services, "a Service is defined")
    for sname, s in services:
        sel = dig(s, "spec", "selector") or {}
        chosen = [(name, c) for name, d, c in containers
                  if sel and all((dig(d, "spec", "template", "metadata", "labels") or {})
                                 .get(k) == v for k, v in sel.items())]
        check(chosen and all(subs.get(n) == "serve" for n, _ in chosen),
              "Service/%s selects kiln serve's pods only (%s)"
              % (sname, ", ".join(n for n, _ in chosen)))
        for sp in dig(s, "spec", "ports") or []:
            tp = sp.get("targetPort", sp.get("port"))
            got = [(resolve_port(tp, c), opt(c.get("args") or [], "--listen")) for _, c in chosen]
            check(chosen and all(p is not None and lst and lst.endswith(":%d" % p)
                                 for p, lst in got),
                  "Service/%s port %s: targetPort %s is the containerPort kiln serve listens on"
                  % (sname, sp.get("port"), tp), "got %s" % got)


def cmd_facts(outdir, paths):
    objs = {}
    for _, _, d in load(paths, False):
        if isinstance(d, dict) and well_formed(d):
            objs[(d["kind"], d["metadata"]["name"])] = d
    names = set()
    # kiln serve first
    for name, d, c in sorted(kiln_containers(objs), key=lambda x: (x[2].get("args") or [""])[0]):
        args = [str(a) for a in c.get("args") or []]
        env, _ = environment(c, objs)
        names.update(env)
        # the test moves the data directory through --data-dir only
        env.pop("KILN_DATA_DIR", None)
        with open(os.path.join(outdir, name + ".args"), "w") as fh:
            fh.write(" ".join(args) + "\n")
        with open(os.path.join(outdir, name + ".env"), "w") as fh:
            fh.writelines("%s=%s\n" % kv for kv in sorted(env.items()))
        paths_ = []
        for k in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = dig(c, k, "httpGet", "path")
            if p and p not in paths_:
                paths_.append(p)
        with open(os.path.join(outdir, name + ".probes"), "w") as fh:
            fh.writelines(p + "\n" for p in paths_)
        print(name)
    with open(os.path.join(outdir, "vars"), "w") as fh:
        fh.writelines(v + "\n" for v in sorted(names))


if sys.argv[1] == "check":
    cmd_check(sys.argv[2:])
else:
    cmd_facts(sys.argv[2], sys.argv[3:])
EOF

TAB=$(printf '\t')
# k8s_check DIR: run the static checks on DIR's manifests into $T/k8s.checks.
k8s_check() {
    # shellcheck disable=SC2086 # the file names
    (cd "$1" && HELP=$T/help-k8s python3 "$T/k8s.py" check $MANIFESTS) >"$T/k8s.checks" 2>"$T/k8s.py.err"
}
k8s_check "$K8S"
r=$?
ok $r "the manifest checks ran to their end"
[ $r -eq 0 ] || show "$T/k8s.py.err"
while IFS=$TAB read -r st desc; do
    case $st in
    '#') echo "#   $desc" ;;
    *) ok "$st" "$desc" ;;
    esac
done <"$T/k8s.checks"

# the checks must be able to fail: broken copies of kiln.yaml
mkdir -p "$T/broken"
# broken SED_EXPR CHECK WHAT: kiln.yaml edited by SED_EXPR fails the check
# whose description holds CHECK.
broken() {
    cp "$K8S"/*.yaml "$T/broken/"
    sed "$1" "$K8S/kiln.yaml" >"$T/broken/kiln.yaml"
    k8s_check "$T/broken"
    ! cmp -s "$K8S/kiln.yaml" "$T/broken/kiln.yaml" && grep "^1$TAB" "$T/k8s.checks" | grep -qF "$2"
    ok $? "the checks find $3"
}
broken 's/^  KILN_RUNTIME: "runc"/&\n  KILN_RUNTIME: "crun"/' 'kiln.yaml parses as YAML' \
    'a duplicate key'
broken 's/livenessProbe:/livenesProbe:/' 'field names known' 'a misspelt field'
broken 's/- "1"$/- 1/' 'args are strings' 'an argument that is a number'
broken '/matchLabels:/,/component:/s/component: serve$/component: server/' \
    'kiln-serve: its selector matches' 'a selector that misses its pods'
broken 's/"--data-dir"/"--state-dir"/' 'args name the data directory' \
    'a command line without --data-dir'
broken 's|mountPath: /var/lib/kiln|mountPath: /data|' 'mounted at its data directory' \
    'a volume mounted beside the data directory'
broken 's/terminationGracePeriodSeconds: 60/terminationGracePeriodSeconds: 30/' \
    'outlasts kiln' "a grace period no longer than kiln's --grace"
broken 's/"0.0.0.0:8080"/"127.0.0.1:8080"/' 'not on loopback' 'kiln serve listening on loopback'
broken 's/containerPort: 8080/containerPort: 8081/' 'targetPort http is the containerPort' \
    "a containerPort that is not kiln serve's"
broken 's/targetPort: http/targetPort: 9090/' 'targetPort 9090' \
    "a Service whose targetPort is not kiln serve's port"
broken 's/privileged: true/privileged: false/' 'root and privileged' \
    'a container that is not privileged'

# ---- each container's command line starts and stops -----------------------------------
mkdir -p "$T/k8s"
# shellcheck disable=SC2086 # the file names
names=$(cd "$K8S" && python3 "$T/k8s.py" facts "$T/k8s" $MANIFESTS)
[ -n "$names" ]
ok $? "the Deployments run kiln ($(echo "$names" | tr '\n' ' ' | sed 's/ $//'))"
touch "$T/k8s/vars"
while IFS= read -r v; do
    grep -qw "$v" "$T/help-k8s"
    ok $? "manifests: the variable $v is documented by kiln serve --help or kiln worker --help"
done <"$T/k8s/vars"
# (kiln serve first: kiln worker uses the store it made)
for dep in $names; do
    args=$(relocate "k8s-$dep" <"$T/k8s/$dep.args")
    case $args in
    serve\ *) sub=serve ready='^kiln serve: listening on ' ;;
    *) sub=worker ready='^kiln worker: .* running as ' ;;
    esac
    set --
    while IFS= read -r kv; do set -- "$@" "$kv"; done <"$T/k8s/$dep.env"
    start_kiln "k8s-$dep" "$ready" "$args" "$@"
    r=$?
    ok $r "Deployment $dep: its command and args start kiln $sub (kiln under test, its environment)"
    [ $r -eq 0 ] || show "$T/k8s-$dep.err"
    [ -d "$T/data-k8s-$dep" ]
    ok $? "it uses the data directory of its args"
    if [ $sub = serve ]; then
        URL=$(serve_url "k8s-$dep")
        while IFS= read -r path; do
            code=$(curl -s -o /dev/null -w '%{http_code}' "$URL$path" </dev/null)
            [ "$code" = 200 ]
            ok $? "its probes' GET $path answers 200 with no token ($code)"
        done <"$T/k8s/$dep.probes"
        # the check above can fail: a path kiln does not serve
        code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz-not-served")
        [ "$code" = 404 ]
        ok $? "a path it does not serve answers 404, not 200 ($code)"
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer deploy-test-token' \
            "$URL/api/v1/specs")
        [ "$code" = 200 ]
        ok $? "it answers the API (GET /api/v1/specs: $code)"
    fi
    stop_kiln
    r=$?
    ok $r "SIGTERM stops it with status 0"
    [ $r -eq 0 ] || show "$T/k8s-$dep.err"
done

echo "1..$n"
[ $fails -eq 0 ]
