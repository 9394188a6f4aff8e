#!/usr/bin/env bash
# A real Kubernetes control plane for the e2e suite, with no container runtime: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler built from their Go modules,
# and kwok standing in for the kubelet of one fake node, started by kwokctl's binary runtime.
#
#   scripts/cluster.sh up [--without ADDON]...
#                                build what is missing (cached by version), start, wait until a Job
#                                runs, then add the addons (keda-crds, keda, monitoring-crds) unless left out
#   scripts/cluster.sh env       print `export KUBECONFIG=...` and the API server's and etcd's URLs
#   scripts/cluster.sh versions  print the version of every control-plane binary
#   scripts/cluster.sh kill C    SIGKILL one component (kube-apiserver, etcd, ...), as a crash would
#   scripts/cluster.sh start     start every component that is not running (after `kill`)
#   scripts/cluster.sh down      stop every process `up` started and remove the cluster's state
#   scripts/cluster.sh keda-env  print the KEDA processes' ports and log files (when running)
#
# `up` on a running cluster is a no-op. Versions: scripts/cluster/versions.env. Everything lives
# under .tools/cluster/ (gitignored): the builds, and run/ (kwokctl's workdir: PKI, kubeconfig,
# etcd data, logs, pid files). Pods are driven by the kwok Stages in scripts/cluster/stages/ (by
# image: e2e/ok[:N], e2e/exit-3, e2e/forever, e2e/pull-error) and read their logs from
# scripts/cluster/logs/ through the API server's pods/log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"
# shellcheck source=cluster/versions.env
source "$here/cluster/versions.env"

tools="$repo_root/.tools/cluster"
export KWOK_WORKDIR="$tools/run"
name="${E2E_CLUSTER_NAME:-mstc-e2e}"
cluster_dir="$KWOK_WORKDIR/clusters/$name"
kubeconfig="$cluster_dir/kubeconfig.yaml"
kube_bin="$tools/kubernetes-$KUBERNETES_VERSION/bin"
etcd_bin="$tools/etcd-$ETCD_VERSION/bin"
kwok_bin="$tools/kwok-$KWOK_VERSION/bin"
# kwokctl runs kubectl from PATH (and would download one otherwise): ours, from install-tools.sh.
export PATH="$repo_root/.tools/bin:$kwok_bin:$PATH"

# The one fake node, and the namespace-less pieces every test relies on.
node_name="kwok-node-0"

# What is added once the control plane is up, in order: each is a function `addon_<name>`
# (install it, wait for it; a no-op when it is there already), listed when its version is set
# in versions.env. `up --without NAME` leaves one out (`--without keda`: KEDA's CRDs but no
# operator, and nothing of KEDA built).
addons=()
[[ -n "${KEDA_VERSION:-}" ]] && addons+=(keda-crds keda)
[[ -n "${PROMETHEUS_OPERATOR_VERSION:-}" ]] && addons+=(monitoring-crds)
keda_bin="$tools/keda-${KEDA_VERSION:-none}/bin"
# KEDA's processes run outside the cluster, like the control plane: their certificates, pid
# files, logs and ports live here, and go with the cluster (`down`).
keda_dir="$cluster_dir/keda"
# KEDA's own namespace (KEDA_CLUSTER_OBJECT_NAMESPACE, POD_NAMESPACE), and the home of the
# metrics adapter's Service.
keda_namespace=keda

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

kctl() { kubectl --kubeconfig "$kubeconfig" "$@"; }

api_ready() { [[ -f "$kubeconfig" ]] && kctl get --raw /readyz >/dev/null 2>&1; }

pids_alive() {
    local pid_file
    [[ -d "$cluster_dir/pids" ]] || return 1
    for pid_file in "$cluster_dir"/pids/*.pid; do
        [[ -f "$pid_file" ]] || return 1
        kill -0 "$(cat "$pid_file")" 2>/dev/null || return 1
    done
}

# The kwok configuration: our Stages, one file per behaviour, and the pods' logs (CRI format).
# kwok picks logs by namespace and pod name only (ClusterLogs), never by image, so the
# original client's test runs in the namespace e2e-python-test, whose pods say SUCCESS.
write_kwok_config() {
    local config="$1" stage
    {
        for stage in "$here"/cluster/stages/*.yaml; do
            echo "# --- $(basename "$stage")"
            cat "$stage"
            echo "---"
        done
        cat <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: python-test
spec:
  selector:
    matchNamespaces: [e2e-python-test]
  logs:
  - logsFile: $here/cluster/logs/python-test.log
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: every-pod
spec:
  logs:
  - logsFile: $here/cluster/logs/job.log
EOF
    } >"$config"
}

create_node() {
    kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node_name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $node_name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec: {}
EOF
    kctl wait --for=condition=Ready "node/$node_name" --timeout=120s >/dev/null
}

# Up means a Job's pod is scheduled, run by kwok and counted by the Job controller.
wait_for_a_job() {
    local job=cluster-up-probe
    kctl -n default delete job "$job" --ignore-not-found --wait=true >/dev/null
    kctl -n default create job "$job" --image=e2e/ok:0 >/dev/null
    if ! kctl -n default wait --for=condition=Complete "job/$job" --timeout=180s >/dev/null; then
        kctl -n default get job,pod -o wide >&2 || true
        die "the probe Job did not complete; see the logs under $cluster_dir/logs"
    fi
    kctl -n default delete job "$job" --cascade=foreground --wait=true >/dev/null
}

# The directory of a Go module (MODULE@VERSION) in the module cache, downloaded if missing; the
# proxy's error on stderr, and a non-zero status, when it is not served.
module_dir() {
    go mod download -json "$1" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'
}

# The prometheus-operator's PodMonitor and PrometheusRule CRDs (only those two: the chart's
# monitoring objects), from its Go module's example/prometheus-operator-crd: so the API server
# validates what the chart renders with `monitoring.podMonitor` / `monitoring.prometheusRule` on.
# No operator runs; nothing reads these objects.
addon_monitoring-crds() {
    local dir kind
    dir="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")" ||
        die "prometheus-operator $PROMETHEUS_OPERATOR_VERSION: its module is not served"
    for kind in podmonitors prometheusrules; do
        kctl apply --server-side --field-manager=cluster-sh \
            -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" >/dev/null
        kctl wait --for=condition=Established "crd/$kind.monitoring.coreos.com" --timeout=60s >/dev/null
    done
    say "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs installed (PodMonitor, PrometheusRule)"
}

# KEDA's CustomResourceDefinitions, from its Go module (config/crd/bases): so the API server
# validates ScaledObjects, ScaledJobs and TriggerAuthentications for real.
addon_keda-crds() {
    local dir
    dir="$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")" || die "KEDA $KEDA_VERSION: its module is not served"
    kctl apply --server-side --field-manager=cluster-sh -f "$dir/config/crd/bases/" >/dev/null
    kctl wait --for=condition=Established crd --all --timeout=60s >/dev/null
    say "KEDA $KEDA_VERSION CRDs installed ($(ls "$dir/config/crd/bases" | wc -l) from github.com/kedacore/keda/v2 config/crd/bases)"
}

# The KEDA operator and its metrics adapter, built from github.com/kedacore/keda/v2 (build.sh),
# run as plain processes with the admin kubeconfig, every listener on 127.0.0.1 at a free port
# (recorded in $keda_dir/ports.env), so two checkouts' clusters can run side by side.
#   operator: WATCH_NAMESPACE="" (every namespace); its gRPC metrics service uses mutual TLS with
#             the certificates below (--cert-dir: ca.crt, tls.crt, tls.key); no webhooks, no
#             certificate rotation, no leader election (one replica).
#   adapter:  serves external.metrics.k8s.io to the HPAs KEDA creates, asking the operator. The
#             API server reaches it through an APIService whose Service is an ExternalName
#             (127.0.0.1): the aggregator resolves such a Service to that name and the
#             APIService's port, and needs no endpoints for it. It authenticates the aggregator
#             by its client certificate, which the cluster's CA signed. kwokctl's API server has
#             no --requestheader-client-ca-file, so the adapter sees the aggregator's own user
#             (kwok-admin, system:masters) rather than the HPA controller's, and its log repeats
#             "missing content for CA bundle ... requestheader-client-ca-file" (harmless).
addon_keda() {
    [[ " ${wanted[*]} " == *" keda-crds "* ]] || die "keda needs its CRDs: leave it out too (--without keda)"
    [[ -x "$keda_bin/keda-operator" && -x "$keda_bin/keda-adapter" ]] ||
        die "KEDA $KEDA_VERSION is not built in $keda_bin (scripts/cluster/build.sh keda)"
    if keda_running && keda_ready; then
        say "KEDA $KEDA_VERSION is running (operator pid $(cat "$keda_dir/operator.pid"), adapter pid $(cat "$keda_dir/adapter.pid"))"
        return 0
    fi
    local started=$SECONDS
    keda_stop
    mkdir -p "$keda_dir/certs"
    keda_certs
    keda_ports
    # shellcheck source=/dev/null
    source "$keda_dir/ports.env"
    kctl create namespace "$keda_namespace" --dry-run=client -o yaml | kctl apply -f - >/dev/null
    local common=(env KUBECONFIG="$kubeconfig" WATCH_NAMESPACE="" POD_NAMESPACE="$keda_namespace"
        KEDA_CLUSTER_OBJECT_NAMESPACE="$keda_namespace")
    # setsid, and every stream a file: the processes outlive this script and hold none of its
    # caller's pipes (pytest reads `cluster.sh up`'s output to its end).
    setsid "${common[@]}" "$keda_bin/keda-operator" \
        --metrics-bind-address "127.0.0.1:$KEDA_OPERATOR_METRICS_PORT" \
        --health-probe-bind-address "127.0.0.1:$KEDA_OPERATOR_PROBE_PORT" \
        --metrics-service-bind-address "127.0.0.1:$KEDA_METRICS_SERVICE_PORT" \
        --cert-dir "$keda_dir/certs" \
        --enable-cert-rotation=false --enable-webhook-patching=false \
        --enable-apiservice-patching=false --leader-elect=false \
        --zap-log-level=info --zap-encoder=console \
        </dev/null >"$keda_dir/operator.log" 2>&1 &
    echo $! >"$keda_dir/operator.pid"
    setsid "${common[@]}" "$keda_bin/keda-adapter" \
        --lister-kubeconfig "$kubeconfig" \
        --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$KEDA_ADAPTER_PORT" --port "$KEDA_ADAPTER_METRICS_PORT" \
        --cert-dir "$keda_dir/certs" --tls-cert-file "$keda_dir/certs/tls.crt" \
        --tls-private-key-file "$keda_dir/certs/tls.key" --client-ca-file "$keda_dir/certs/clients.crt" \
        --metrics-service-address "127.0.0.1:$KEDA_METRICS_SERVICE_PORT" \
        --zap-log-level=info --zap-encoder=console \
        </dev/null >"$keda_dir/adapter.log" 2>&1 &
    echo $! >"$keda_dir/adapter.pid"
    keda_apiservice
    local i
    for i in $(seq 1 600); do
        if ! keda_running; then
            tail -n 20 "$keda_dir/operator.log" "$keda_dir/adapter.log" >&2
            die "a KEDA process exited (logs above; under $keda_dir)"
        fi
        keda_ready && break
        sleep 0.2
    done
    keda_ready || die "KEDA did not become ready within 120 s (logs under $keda_dir)"
    say "KEDA $KEDA_VERSION up in $((SECONDS - started))s: operator (pid $(cat "$keda_dir/operator.pid")), metrics adapter (pid $(cat "$keda_dir/adapter.pid")), external.metrics.k8s.io Available; logs under $keda_dir"
}

keda_running() {
    local process
    for process in operator adapter; do
        [[ -f "$keda_dir/$process.pid" ]] && kill -0 "$(cat "$keda_dir/$process.pid")" 2>/dev/null || return 1
    done
}

# Ready: the operator's readiness probe answers, the API server calls the adapter Available, and
# a request for external.metrics.k8s.io goes through the aggregator to the adapter (the condition
# alone may still be the previous adapter's).
keda_ready() {
    [[ -f "$keda_dir/ports.env" ]] || return 1
    # shellcheck source=/dev/null
    source "$keda_dir/ports.env"
    curl -fsS "http://127.0.0.1:$KEDA_OPERATOR_PROBE_PORT/readyz" >/dev/null 2>&1 || return 1
    [[ "$(kctl get apiservice v1beta1.external.metrics.k8s.io \
        -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" == True ]] || return 1
    kctl get --raw /apis/external.metrics.k8s.io/v1beta1 >/dev/null 2>&1
}

keda_stop() {
    local process pid i
    for process in operator adapter; do
        [[ -f "$keda_dir/$process.pid" ]] || continue
        pid="$(cat "$keda_dir/$process.pid")"
        if kill -TERM "$pid" 2>/dev/null; then
            for i in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$keda_dir/$process.pid"
    done
}

# KEDA's own CA, and one certificate for both ends of the operator's gRPC service (mutual TLS)
# and for the adapter's API. clients.crt adds the cluster's CA, which signed the client
# certificate the aggregator presents.
keda_certs() {
    local c="$keda_dir/certs"
    if [[ ! -f "$c/ca.crt" || ! -f "$c/tls.crt" ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/O=mstc-e2e/CN=keda-ca" \
            -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/O=mstc-e2e/CN=keda" \
            -keyout "$c/tls.key" -out "$c/tls.csr" 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth,clientAuth" \
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:keda-operator.$keda_namespace.svc.cluster.local,DNS:keda-metrics-apiserver.$keda_namespace.svc" \
            >"$c/tls.ext"
        openssl x509 -req -in "$c/tls.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
            -days 3650 -extfile "$c/tls.ext" -out "$c/tls.crt" 2>/dev/null
        rm -f "$c/tls.csr" "$c/tls.ext"
    fi
    cat "$c/ca.crt" "$cluster_dir/pki/ca.crt" >"$c/clients.crt"
}

# Free ports on 127.0.0.1, held open together while they are chosen so no two are the same.
keda_ports() {
    python3 - >"$keda_dir/ports.env" <<'PY'
import socket
held = []
for name in ("KEDA_OPERATOR_METRICS_PORT", "KEDA_OPERATOR_PROBE_PORT", "KEDA_METRICS_SERVICE_PORT",
             "KEDA_ADAPTER_PORT", "KEDA_ADAPTER_METRICS_PORT"):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    held.append(sock)
    print(f"{name}={sock.getsockname()[1]}")
PY
}

keda_apiservice() {
    kctl apply --server-side --field-manager=cluster-sh --force-conflicts -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: keda-metrics-apiserver
  namespace: $keda_namespace
spec:
  type: ExternalName
  externalName: 127.0.0.1
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.external.metrics.k8s.io
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $(base64 -w0 "$keda_dir/certs/ca.crt")
  service:
    name: keda-metrics-apiserver
    namespace: $keda_namespace
    port: $KEDA_ADAPTER_PORT
EOF
}

keda_env() {
    [[ -f "$keda_dir/ports.env" ]] && keda_running || die "KEDA is not running in $name (scripts/cluster.sh up)"
    sed 's/^/export /' "$keda_dir/ports.env"
    echo "export KEDA_VERSION=$KEDA_VERSION"
    echo "export KEDA_OPERATOR_LOG=$keda_dir/operator.log"
    echo "export KEDA_ADAPTER_LOG=$keda_dir/adapter.log"
}

versions() {
    echo "kube-apiserver          $("$kube_bin/kube-apiserver" --version 2>&1)"
    echo "kube-controller-manager $("$kube_bin/kube-controller-manager" --version 2>&1)"
    echo "kube-scheduler          $("$kube_bin/kube-scheduler" --version 2>&1)"
    echo "etcd                    $("$etcd_bin/etcd" --version 2>&1 | tr '\n' ' ')"
    echo "kwok                    $("$kwok_bin/kwok" --version 2>&1)"
    echo "kwokctl                 $("$kwok_bin/kwokctl" --version 2>&1)"
    if [[ -x "$keda_bin/keda-operator" ]]; then
        # The binaries print their version only as they start: the running ones' logs say it.
        local process said
        for process in operator adapter; do
            said="$(sed -n 's/.*\(KEDA Version: .*\)/\1/p' "$keda_dir/$process.log" 2>/dev/null | tail -1)"
            keda_running || said="not running"
            printf '%-23s %s\n' "keda-$process" "${said:-no version in its log} (github.com/kedacore/keda/v2 $KEDA_VERSION; $(head -1 "$tools/keda-$KEDA_VERSION/built" 2>/dev/null))"
        done
    fi
    echo "kubectl                 $(kubectl version --client 2>/dev/null | head -1)"
    if api_ready; then
        echo "server (/version)       $(kctl version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
    fi
}

up() {
    local started=$SECONDS without=() wanted=() addon
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --without) without+=("${2:?addon name}"); shift 2 ;;
            *) die "up: unknown argument $1" ;;
        esac
    done
    for addon in "${addons[@]}"; do
        [[ " ${without[*]} " == *" $addon "* ]] || wanted+=("$addon")
    done
    local components=(kubernetes etcd kwok)
    [[ " ${wanted[*]} " == *" keda "* ]] && components+=(keda)
    bash "$here/cluster/build.sh" "${components[@]}"
    [[ -x "$repo_root/.tools/bin/kubectl" ]] || bash "$here/install-tools.sh"
    local config="$KWOK_WORKDIR/$name-config.yaml"
    # kwok reads its Stages once, at the cluster's creation: a cluster made before they changed
    # is made again (its namespaces are the tests' own, so nothing of value is lost).
    if [[ -d "$cluster_dir" && -f "$config" ]]; then
        write_kwok_config "$config.new"
        if ! cmp -s "$config" "$config.new"; then
            say "the kwok configuration (scripts/cluster/stages/, logs) changed since $name was made: recreating it"
            down
        fi
        rm -f "$config.new"
    fi
    if api_ready && pids_alive; then
        for addon in "${wanted[@]}"; do "addon_$addon"; done
        say "$name is already up ($kubeconfig)"
        return 0
    fi
    if [[ -d "$cluster_dir" ]]; then
        say "$name exists but is not all running: starting what stopped"
        if ! kwokctl start cluster --name "$name" >&2 || ! api_ready; then
            say "could not restart $name: recreating it"
            down
        fi
    fi
    if [[ ! -d "$cluster_dir" ]]; then
        mkdir -p "$KWOK_WORKDIR"
        write_kwok_config "$config"
        say "creating $name (kwokctl --runtime binary, every binary a local path)"
        # --kubeconfig "": leave the user's ~/.kube/config alone; ours is $kubeconfig.
        kwokctl create cluster --name "$name" --runtime binary --kubeconfig "" \
            --kube-apiserver-binary "$kube_bin/kube-apiserver" \
            --kube-controller-manager-binary "$kube_bin/kube-controller-manager" \
            --kube-scheduler-binary "$kube_bin/kube-scheduler" \
            --etcd-binary "$etcd_bin/etcd" \
            --kwok-controller-binary "$kwok_bin/kwok" \
            --secure-port=true --kube-authorization=true --kube-admission=true \
            --config "$config" --timeout 5m --wait 2m >&2
    fi
    create_node
    wait_for_a_job
    for addon in "${wanted[@]}"; do "addon_$addon"; done
    say "$name is up in $((SECONDS - started))s: $(kctl get --raw /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])'), node $node_name Ready, a Job ran"
    say "$(env_lines | head -1)"
}

# KEY=VALUE of the running cluster, read from kwokctl's own record of it.
env_lines() {
    echo "export KUBECONFIG=$kubeconfig"
    if [[ -f "$kubeconfig" ]]; then
        echo "export E2E_KUBE_API_SERVER=$(sed -n 's/^[[:space:]]*server:[[:space:]]*//p' "$kubeconfig" | head -1)"
    fi
    if [[ -f "$cluster_dir/kwok.yaml" ]]; then
        echo "export E2E_ETCD_URL=http://127.0.0.1:$(sed -n 's/^[[:space:]]*etcdPort:[[:space:]]*//p' "$cluster_dir/kwok.yaml" | head -1)"
    fi
    echo "export E2E_CLUSTER_DIR=$cluster_dir"
}

kill_component() {
    local component="$1" pid_file="$cluster_dir/pids/$1.pid" pid
    [[ -f "$pid_file" ]] || die "no such component: $component (see $cluster_dir/pids)"
    pid="$(cat "$pid_file")"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    say "killed $component (pid $pid)"
}

# The controller-manager acts again (its informers re-watch after an API server restart with
# a backoff): a new namespace gets its default ServiceAccount.
controllers_act() {
    local ns="cluster-sh-probe-$RANDOM" i
    kctl create namespace "$ns" >/dev/null
    for i in $(seq 1 600); do
        if kctl -n "$ns" get serviceaccount default >/dev/null 2>&1; then
            kctl delete namespace "$ns" --wait=false >/dev/null
            return 0
        fi
        sleep 0.2
    done
    kctl delete namespace "$ns" --wait=false >/dev/null
    return 1
}

start() {
    [[ -d "$cluster_dir" ]] || die "$name does not exist: scripts/cluster.sh up"
    local started=$SECONDS i
    kwokctl start cluster --name "$name" >&2
    for i in $(seq 1 600); do
        api_ready && break
        sleep 0.2
    done
    api_ready || die "the API server did not become ready within 120 s"
    controllers_act || die "the controller-manager did not act within 120 s of the API server's start"
    say "$name is running ($((SECONDS - started))s)"
}

down() {
    keda_stop
    if [[ -d "$cluster_dir" ]]; then
        if [[ -x "$kwok_bin/kwokctl" ]]; then
            kwokctl delete cluster --name "$name" --kubeconfig "$kubeconfig" >&2 || true
        fi
        # Whatever kwokctl could not stop (a component it no longer knows about).
        local pid_file
        for pid_file in "$cluster_dir"/pids/*.pid; do
            [[ -f "$pid_file" ]] && kill -KILL "$(cat "$pid_file")" 2>/dev/null || true
        done
        rm -rf "$cluster_dir"
        say "$name is down"
    else
        say "$name is not up"
    fi
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    env) env_lines ;;
    versions) versions ;;
    keda-env) keda_env ;;
    kill) kill_component "${2:?component}" ;;
    start) start ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
