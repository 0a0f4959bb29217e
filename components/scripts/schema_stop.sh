#!/usr/bin/env bash
# Runbook 5.2 step 1, before a schema rollback: stop the application on this host when the
# schema it runs on is above the target (the database is shared by every color: no standby
# side to roll back on), so that no running service has its schema pulled from under it.
# The stop is systemd's graceful one (SIGTERM): trading stops, working orders are cancelled,
# positions flushed, the trading lease released. A service that holds the trading lease (the
# primary) is stopped only with HFT_ALLOW_PRIMARY_STOP=1 (hft:service.allowPrimaryRestart);
# otherwise the step fails before anything changed. A service that runs at or below the
# target, or is not running, is left alone (raising the schema stops nothing).
# The stop is recorded in /var/lib/hft-deploy/schema-stopped-<unit>: schema_start.sh starts
# exactly what this stopped, after the rollback.
#
# env:
#   HFT_UNIT_NAME           e.g. hft_system (required)
#   HFT_API                 the service's API from this host, e.g. http://10.0.0.5:8080 (required)
#   HFT_SCHEMA_TARGET       the schema version the database goes to (required)
#   HFT_PLACEMENT           e.g. app:blue, for messages (required)
#   HFT_ALLOW_PRIMARY_STOP  1: the trading primary may be stopped for it (a trading gap)
# payload: lib.sh
# stdin: nothing
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_UNIT_NAME HFT_API HFT_SCHEMA_TARGET HFT_PLACEMENT
unit=$HFT_UNIT_NAME
[[ "$unit" =~ ^[A-Za-z0-9_.@-]+$ ]] || die "invalid HFT_UNIT_NAME: $unit"
target=$HFT_SCHEMA_TARGET
[[ "$target" =~ ^[0-9]+$ ]] || die "invalid HFT_SCHEMA_TARGET: $target"
marker=/var/lib/hft-deploy/schema-stopped-$unit

if ! systemctl is-active --quiet "$unit"; then
  ok "$unit ($HFT_PLACEMENT) not running: nothing to stop for schema $target"
  exit 0
fi
install_packages curl jq >/dev/null
st=$(curl -fsS --max-time 5 "$HFT_API/api/v1/status") \
  || die "$unit ($HFT_PLACEMENT) is running but $HFT_API/api/v1/status does not answer: cannot tell its schema or whether it trades; refusing to lower the schema under it"
ver=$(jq -r '.database.schema_version // empty' <<<"$st")
held=$(jq -r '.lease.held_by_me == true' <<<"$st")
if [ -n "$ver" ] && [ "$ver" -le "$target" ]; then
  ok "$unit ($HFT_PLACEMENT) runs on schema $ver, at or below $target: keeps running"
  exit 0
fi
if [ "$held" = true ] && ! is_true "${HFT_ALLOW_PRIMARY_STOP:-0}"; then
  die "refusing to stop $unit ($HFT_PLACEMENT): it holds the trading lease (the trading primary). Lowering the schema from ${ver:-?} to $target stops every application using the database (runbook 5.2 step 1), a trading gap: set hft:service.allowPrimaryRestart true to allow it (nothing was stopped)"
fi
# /var/lib/hft-deploy is root's (755, made by the step wrapper): nobody else can plant the record
rm -f -- "$marker"
printf 'stopped_at=%s from=%s target=%s primary=%s\n' "$(date -u +%FT%TZ)" "${ver:-unknown}" "$target" "$held" >"$marker"
systemctl stop "$unit" || die "systemctl stop $unit failed"
changed "$unit ($HFT_PLACEMENT) stopped for the schema rollback ${ver:-?} -> $target at $(date -u +%FT%T.%NZ) (graceful: orders cancelled, lease released$([ "$held" = true ] && echo ', it was the trading primary'))"
