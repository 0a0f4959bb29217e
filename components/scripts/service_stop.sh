#!/usr/bin/env bash
# Delete of HftService: stop and disable the unit, remove its unit file and the .env this deploy
# put there (the secrets). Keeps the application user, the releases and config in $HFT_HOME and
# the logs: data is never deleted here.
#
# env:
#   HFT_UNIT_NAME  e.g. hft_system (required)
#   HFT_USER       only named in the report
#   HFT_HOME       where the service's .env (its secrets) is removed from
#   HFT_LOG_DIR    only named in the report
# payload: lib.sh
# stdin:   not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_UNIT_NAME
unit=$HFT_UNIT_NAME
unit_file=/etc/systemd/system/$unit.service
if systemctl is-active --quiet "$unit" || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
  systemctl disable --now --quiet "$unit" || die "systemctl disable --now $unit failed"
  changed "$unit stopped and disabled"
else
  ok "$unit not running, not enabled"
fi
if [ -e "$unit_file" ]; then
  rm -f "$unit_file"
  systemctl daemon-reload
  changed "$unit_file removed"
else
  ok "$unit_file absent"
fi
# The secrets this deploy put on the host go with the service (runbook 3.5 step 7's .env).
envf=${HFT_HOME:-/opt/hft_system}/.env
if [ -e "$envf" ] || [ -L "$envf" ]; then
  rm -f -- "$envf"
  changed "$envf removed (exchange keys, database password, API token)"
else
  ok "$envf absent"
fi
ok "kept user ${HFT_USER:-hft_user}, the releases and config in ${HFT_HOME:-/opt/hft_system}, and ${HFT_LOG_DIR:-/var/log/hft_system} (data is not deleted)"
