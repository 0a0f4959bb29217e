#!/usr/bin/env bash
# Runbook 3.2 step 1: update the system. Its own step, so that it runs at first provisioning
# and afterwards only when the operator asks for it (a new HFT_APT_UPGRADE_REQUESTED label),
# never as a side effect of another edit on a host that is trading.
#
# env:
#   HFT_APT_UPGRADE            1: apt-get upgrade -y; 0: skipped
#   HFT_APT_UPGRADE_REQUESTED  the operator's label for this upgrade; changing it re-runs the step (required)
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_APT_UPGRADE_REQUESTED
label=$HFT_APT_UPGRADE_REQUESTED
if ! is_true "${HFT_APT_UPGRADE:-0}"; then
  skipped "apt upgrade '$label' (disabled in config)"
  exit 0
fi
apt_update_once
n=$(apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep -c '^Inst ' || true)
if [ "$n" -eq 0 ]; then
  ok "apt upgrade '$label': nothing to upgrade"
  exit 0
fi
log=$(mktemp)
DEBIAN_FRONTEND=noninteractive apt_get -q -y -o DPkg::Lock::Timeout=300 \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade >"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; die "apt-get upgrade failed"; }
rm -f "$log"
changed "apt upgrade '$label': $n package(s) upgraded"
