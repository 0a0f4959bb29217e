#!/usr/bin/env bash
# Build our stand-ins for the pulumi-command and pulumi-random provider plugins
# (tools/plugins, see its README: the module proxy refuses the upstream provider
# modules) into OUT_BIN_DIR, as pulumi-resource-command and pulumi-resource-random.
# Usage: tools/build-plugins.sh OUT_BIN_DIR
set -euo pipefail

out=${1:?usage: $0 OUT_BIN_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
mkdir -p "$out"
out=$(cd "$out" && pwd)

export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
# One package at a time: the machines have 2 cores and may be building the CLI too.
cd "$here/plugins"
for p in command random; do
  go build -p 1 -trimpath -ldflags "-s -w" -o "$out/pulumi-resource-$p" "./cmd/pulumi-resource-$p"
done
echo "built pulumi-resource-command and pulumi-resource-random into $out"
