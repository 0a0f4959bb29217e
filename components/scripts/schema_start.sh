#!/usr/bin/env bash
# Runbook 5.2 step 3: start the application again after a schema change, when schema_stop.sh
# stopped it for that change (its record /var/lib/hft-deploy/schema-stopped-<unit>), and wait
# until it is healthy. A service this did not stop is left as it is. The record goes only
# once the service is healthy, so a failed start is retried by the next run.
#
# env:
#   HFT_UNIT_NAME       e.g. hft_system (required)
#   HFT_HEALTH_URL      e.g. http://10.0.0.5:8080/api/v1/health (required)
#   HFT_PLACEMENT       e.g. app:blue, for messages (required)
#   HFT_HEALTH_TIMEOUT  seconds, default 90
# payload: lib.sh
# stdin: nothing
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_UNIT_NAME HFT_HEALTH_URL HFT_PLACEMENT
unit=$HFT_UNIT_NAME
[[ "$unit" =~ ^[A-Za-z0-9_.@-]+$ ]] || die "invalid HFT_UNIT_NAME: $unit"
marker=/var/lib/hft-deploy/schema-stopped-$unit
timeout=${HFT_HEALTH_TIMEOUT:-90}
[[ "$timeout" =~ ^[0-9]+$ ]] || die "invalid HFT_HEALTH_TIMEOUT: $timeout"

if [ ! -f "$marker" ] || [ -L "$marker" ] || [ "$(stat -c %u "$marker")" != 0 ]; then
  ok "$unit ($HFT_PLACEMENT) was not stopped for a schema change: left as it is"
  exit 0
fi
systemctl start "$unit" || die "systemctl start $unit failed"
if ! wait_http "$HFT_HEALTH_URL" "$timeout" healthy; then
  journalctl -u "$unit" -n 30 --no-pager >&2 || true
  die "$unit ($HFT_PLACEMENT) started after the schema change but not healthy at $HFT_HEALTH_URL after $timeout s"
fi
rm -f -- "$marker"
changed "$unit ($HFT_PLACEMENT) started again after the schema change, healthy"
