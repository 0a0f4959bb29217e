#!/usr/bin/env bash
# The whole test suite with the toolchain's environment: the Go tests of the language host
# and providers built here, then pytest (unit, real CLI, real PostgreSQL, lab hosts).
# Called by `make test` after deps, venv and tools are in place; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tools/env.sh)"
cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
if [ $# -eq 0 ]; then
  echo "== go test ./... (tools/plugins)"
  (cd tools/plugins && GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod \
    GOTOOLCHAIN=local CGO_ENABLED=0 go test ./...)
fi
exec venv/bin/python -m pytest "$@"
