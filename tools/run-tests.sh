#!/usr/bin/env bash
# The whole test suite (unit, real CLI, real PostgreSQL, lab hosts) with the toolchain's
# environment. Called by `make test` after deps, venv and tools are in place.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tools/env.sh)"
exec venv/bin/python -m pytest "$@"
