#!/usr/bin/env bash
# Runbook 5.3 steps 1-2 for a strategy removed from config (the Strategy step's delete): remove
# config/strategies/<id>.json so that no restart or reload loads it again, then stop it (its
# working orders are cancelled) and unload it. The workload keeps its strategies row (enabled = false)
# as the history of its orders. When the API does not answer, the service is not running it:
# the file is removed all the same and a warning says so.
#
# env:
#   HFT_STRATEGY_ID  the strategy's id (required)
#   HFT_HOME         e.g. /opt/hft_system (required)
#   HFT_API          the service's API from this host, e.g. http://127.0.0.1:8080 (required)
#   HFT_PLACEMENT    e.g. app:blue, for messages (required)
# payload: lib.sh
# stdin: nothing
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_STRATEGY_ID HFT_HOME HFT_API HFT_PLACEMENT
id=$HFT_STRATEGY_ID
[[ "$id" =~ ^[A-Za-z0-9_.-]{1,64}$ && "$id" != . && "$id" != .. ]] || die "invalid HFT_STRATEGY_ID: $id"
home=${HFT_HOME%/}
where="strategy $id on $HFT_PLACEMENT"
install_packages curl jq

# the API client (read_token, api, api_fail): lib.sh

# the file first, so that no restart or reload loads it again (rm removes a link itself, never its target)
file=$home/config/strategies/$id.json
for d in "$home" "$home/config" "$home/config/strategies"; do
  [ ! -L "$d" ] || die "$where: $d is a symlink; hft-deploy does not follow symlinks"
done
if [ -e "$file" ] || [ -L "$file" ]; then
  rm -f -- "$file"
  changed "removed $file"
else
  ok "$file absent"
fi

if [ -f "$home/.env" ]; then
  read_token
  api GET "/strategies/$id"
  case $API_CODE in
    200)
      api POST "/strategies/$id/stop"; [ "$API_CODE" = 200 ] || api_fail "POST /strategies/$id/stop"
      changed "$where stopped"
      api DELETE "/strategies/$id"; [ "$API_CODE" = 200 ] || api_fail "DELETE /strategies/$id"
      changed "$where unloaded"
      ;;
    404) ok "$where not loaded" ;;
    000) warn "$where: the service's API does not answer at $HFT_API: it is not running the strategy" ;;
    *) api_fail "GET /strategies/$id" ;;
  esac
else
  warn "$where: $home/.env is missing: the service is not deployed here"
fi
if [ "$HFT_CHANGES" -eq 0 ]; then ok "$where: already removed"; else echo "changed: $where removed: $HFT_CHANGES change(s)"; fi
