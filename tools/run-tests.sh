#!/usr/bin/env bash
# The whole test suite with the toolchain's environment: the Go tests of the language host
# and providers built here, then pytest (unit, real CLI, real PostgreSQL, lab hosts).
# Called by `make test` after deps, venv and tools are in place; arguments go to pytest.
#
# Without arguments the lab VM tests (one QEMU guest, mostly one busy core under TCG) run in a
# second pytest process beside the rest, which builds on the lab containers: the suite's wall
# time is then about the longer of the two instead of their sum. Both must pass; the VM run's
# report is printed after the main one.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tools/env.sh)"
cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
if [ $# -gt 0 ]; then
  exec venv/bin/python -m pytest "$@"
fi
echo "== go test ./... (tools/plugins)"
(cd tools/plugins && GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod \
  GOTOOLCHAIN=local CGO_ENABLED=0 go test ./...)
vm_tests=(tests/test_lab_vm.py tests/test_vm_stack.py)
vm_log=$(mktemp /tmp/hft-vm-tests.XXXXXX)
echo "== pytest ${vm_tests[*]} (in the background; report below)"
venv/bin/python -m pytest -p no:cacheprovider "${vm_tests[@]}" >"$vm_log" 2>&1 &
vm_pid=$!
trap 'kill "$vm_pid" 2>/dev/null || true' EXIT
main_rc=0
venv/bin/python -m pytest $(printf -- '--ignore=%s ' "${vm_tests[@]}") || main_rc=$?
vm_rc=0
wait "$vm_pid" || vm_rc=$?
trap - EXIT
echo "== lab VM tests (${vm_tests[*]}): exit $vm_rc"
cat "$vm_log"
rm -f "$vm_log"
[ "$main_rc" -eq 0 ] && [ "$vm_rc" -eq 0 ]
