#!/usr/bin/env bash
# Runbook 3.2 step 5: disable unnecessary services (absent ones are fine).
#
# env:
#   HFT_DISABLED_SERVICES  space-separated units to `systemctl disable --now`
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

for svc in ${HFT_DISABLED_SERVICES:-}; do
  load=$(systemctl show -p LoadState --value "$svc" 2>/dev/null || true)
  if [ "$load" != loaded ]; then
    ok "$svc not installed"
    continue
  fi
  enabled=$(systemctl is-enabled "$svc" 2>/dev/null || true)
  active=$(systemctl is-active "$svc" 2>/dev/null || true)
  if [ "$enabled" = enabled ] || [ "$active" = active ] || [ "$active" = activating ]; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || die "systemctl disable --now $svc failed"
    changed "$svc disabled and stopped"
  else
    ok "$svc disabled ($enabled, $active)"
  fi
done
