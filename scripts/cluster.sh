#!/usr/bin/env bash
# A real Kubernetes control plane for the e2e suite, with no container runtime: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler built from their Go modules,
# and kwok standing in for the kubelet of one fake node, started by kwokctl's binary runtime.
#
#   scripts/cluster.sh up [--without ADDON]...
#                                build what is missing (cached by version), start, wait until a Job
#                                runs, then add the addons (keda-crds) unless left out
#   scripts/cluster.sh env       print `export KUBECONFIG=...` and the API server's and etcd's URLs
#   scripts/cluster.sh versions  print the version of every control-plane binary
#   scripts/cluster.sh kill C    SIGKILL one component (kube-apiserver, etcd, ...), as a crash would
#   scripts/cluster.sh start     start every component that is not running (after `kill`)
#   scripts/cluster.sh down      stop every process `up` started and remove the cluster's state
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
# in versions.env. `up --without NAME` leaves one out. (The KEDA operator, issue 21, goes here.)
addons=()
[[ -n "${KEDA_VERSION:-}" ]] && addons+=(keda-crds)

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

# KEDA's CustomResourceDefinitions, from its Go module (config/crd/bases): so the API server
# validates ScaledObjects, ScaledJobs and TriggerAuthentications for real.
addon_keda-crds() {
    local dir
    dir="$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')" ||
        die "KEDA $KEDA_VERSION: its module is not served"
    kctl apply --server-side --field-manager=cluster-sh -f "$dir/config/crd/bases/" >/dev/null
    kctl wait --for=condition=Established crd --all --timeout=60s >/dev/null
    say "KEDA $KEDA_VERSION CRDs installed ($(ls "$dir/config/crd/bases" | wc -l) from github.com/kedacore/keda/v2 config/crd/bases)"
}

versions() {
    echo "kube-apiserver          $("$kube_bin/kube-apiserver" --version 2>&1)"
    echo "kube-controller-manager $("$kube_bin/kube-controller-manager" --version 2>&1)"
    echo "kube-scheduler          $("$kube_bin/kube-scheduler" --version 2>&1)"
    echo "etcd                    $("$etcd_bin/etcd" --version 2>&1 | tr '\n' ' ')"
    echo "kwok                    $("$kwok_bin/kwok" --version 2>&1)"
    echo "kwokctl                 $("$kwok_bin/kwokctl" --version 2>&1)"
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
    bash "$here/cluster/build.sh"
    [[ -x "$repo_root/.tools/bin/kubectl" ]] || bash "$here/install-tools.sh"
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
        local config="$KWOK_WORKDIR/$name-config.yaml"
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
    kill) kill_component "${2:?component}" ;;
    start) start ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
