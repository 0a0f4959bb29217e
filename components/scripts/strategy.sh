#!/usr/bin/env bash
# Runbook 7.2 (strategy deployment without a restart) and 5.3 (single-strategy rollback), for one
# strategy on one app placement, through the service's local API:
#   1. config/strategies/<id>.json, root-owned, readable by the service group (7.2 step 1);
#   2. load it when it is not loaded (step 3); when something the API cannot change differs
#      (name, symbol, exchange, max_position) stop, unload and load the file again: the 5.3
#      rollback, which leaves every other strategy alone;
#   3. paper or live (steps 4 and 6). Paper -> live is refused until the strategy has been in
#      paper for HFT_MIN_PAPER_SECONDS by the workload's own record (paper_since); nothing is
#      changed then, and the error says how long is left. On a standby the gate also passes
#      when the primary already runs the strategy live (its step passed the gate there);
#   4. running or stopped;
#   5. HFT_STRATEGY_REPORT=<json>: what the workload reports afterwards.
# Idempotent: with nothing to do it prints only "ok:" lines.
# The API token is read here, as root, from $HFT_HOME/.env; it reaches curl in a mode-600 header
# file in the payload directory, never in argv, the command text, stdin or the output.
#
# env:
#   HFT_STRATEGY_ID        the strategy's id, e.g. mm_btc_usd (required)
#   HFT_MODE               paper or live (required)
#   HFT_STATE              running or stopped (required)
#   HFT_MIN_PAPER_SECONDS  paper time required before live, e.g. 86400; 0 = no wait (required)
#   HFT_HOME               e.g. /opt/hft_system (required)
#   HFT_USER               the service user, whose group may read the file (required)
#   HFT_API                the service's API from this host, e.g. http://127.0.0.1:8080 (required)
#   HFT_PLACEMENT          e.g. app:blue, for messages (required)
#   HFT_ROLE               primary or standby, as configured (required)
#   HFT_PRIMARY_API        a standby's view of the primary's API (only on a standby)
# payload: lib.sh, <id>.json (-> $HFT_HOME/config/strategies/<id>.json, 640 root:<service group>)
# stdin: nothing
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_STRATEGY_ID HFT_MODE HFT_STATE HFT_MIN_PAPER_SECONDS HFT_HOME HFT_USER HFT_API HFT_PLACEMENT HFT_ROLE
id=$HFT_STRATEGY_ID
[[ "$id" =~ ^[A-Za-z0-9_.-]{1,64}$ && "$id" != . && "$id" != .. ]] || die "invalid HFT_STRATEGY_ID: $id"
case $HFT_MODE in paper|live) ;; *) die "HFT_MODE must be paper or live, got $HFT_MODE" ;; esac
case $HFT_STATE in running|stopped) ;; *) die "HFT_STATE must be running or stopped, got $HFT_STATE" ;; esac
case $HFT_ROLE in primary|standby) ;; *) die "HFT_ROLE must be primary or standby, got $HFT_ROLE" ;; esac
[[ "$HFT_MIN_PAPER_SECONDS" =~ ^[0-9]+$ ]] || die "HFT_MIN_PAPER_SECONDS must be a number of seconds"
require_payload "$id.json"
home=${HFT_HOME%/}
where="strategy $id on $HFT_PLACEMENT"
want_paper=$([ "$HFT_MODE" = paper ] && echo true || echo false)
min=$HFT_MIN_PAPER_SECONDS

install_packages curl jq
group=$(id -gn "$HFT_USER" 2>/dev/null) || die "user $HFT_USER does not exist (is the service deployed on this host?)"

# the API client (read_token, api, api_fail): lib.sh
# the strategies directory, never reached through a symlink
strategies_dir=$home/config/strategies
for d in "$home" "$home/config" "$strategies_dir"; do
  [ ! -L "$d" ] || die "$where: $d is a symlink; hft-deploy does not follow symlinks"
  [ -d "$d" ] || die "$where: $d is missing (is the service deployed on this host?)"
done
read_token

# --- what the workload runs now
api GET /status
[ "$API_CODE" = 200 ] || die "$where: the service's API does not answer at $HFT_API (HTTP $API_CODE); is it running?"
wl_role=$(jq -r '.role' <<<"$API_BODY")
api GET "/strategies/$id"
case $API_CODE in
  200) loaded=1; current=$API_BODY ;;
  404) loaded=0; current='{}' ;;
  *) api_fail "GET /strategies/$id" ;;
esac
desired=$(cat "$HFT_PAYLOAD/$id.json")
# fields only a new load applies (the API sets paper_trading and running/stopped)
differs=0
if [ "$loaded" = 1 ]; then
  differs=$(jq -n --argjson c "$current" --argjson d "$desired" \
    'if ($c.name == $d.name and $c.symbol == $d.symbol and $c.exchange == $d.exchange
         and $c.max_position == $d.max_position) then 0 else 1 end')
fi
cur_paper=$(jq -r 'if has("paper_trading") then .paper_trading else "none" end' <<<"$current")

# --- the paper-time gate (7.2 step 5), before anything changes
human() { local s=$1; printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60)); }
primary_runs_it_live() {  # a standby: the primary already trades it live (its own gate passed)
  [ "$HFT_ROLE" = standby ] && [ "$wl_role" = standby ] && [ -n "${HFT_PRIMARY_API:-}" ] || return 1
  local out
  out=$(curl -sS --max-time 10 "$HFT_PRIMARY_API/api/v1/strategies/$id" 2>/dev/null) || return 1
  [ "$(jq -r '.paper_trading' <<<"$out" 2>/dev/null)" = false ]
}
if [ "$HFT_MODE" = live ] && [ "$cur_paper" != false ]; then
  if [ "$min" -eq 0 ]; then
    ok "$where: minPaperSeconds is 0: no paper time required"
  elif primary_runs_it_live; then
    ok "$where: standby: the primary ($HFT_PRIMARY_API) runs it live already, having passed the paper-time gate"
  elif [ "$loaded" = 0 ]; then
    also=""
    [ "$HFT_ROLE" != standby ] || also=", and the primary (${HFT_PRIMARY_API:-unknown}) does not run it live"
    die "$where: refusing to load it live: it has no paper record here$also. Deploy it with mode: paper first; it may go live after $(human "$min") in paper (minPaperSeconds $min)"
  else
    since=$(jq -r '.paper_since // empty' <<<"$current")
    [ -n "$since" ] || die "$where: refusing to go live: the workload reports no paper_since for it (migration 007 applied? workload release older than the paper record?)"
    since_s=$(jq -rn --arg t "$since" '$t | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601') \
      || die "$where: cannot read paper_since \"$since\""
    elapsed=$(( $(date -u +%s) - since_s ))
    [ "$elapsed" -ge 0 ] || elapsed=0
    if [ "$elapsed" -lt "$min" ]; then
      left=$((min - elapsed))
      die "$where: refusing to go live: in paper for $(human "$elapsed") (since $since), minPaperSeconds is $min ($(human "$min")): $(human "$left") left. It stays in paper, unchanged; run the update again after $(date -u -d "@$((since_s + min))" +%Y-%m-%dT%H:%M:%SZ)"
    fi
    if [ "$differs" = 1 ]; then
      die "$where: refusing to go live with parameters that differ from the ones it ran in paper with (name, symbol, exchange or max_position): change them in paper first, or go live with the paper ones"
    fi
    ok "$where: in paper for $(human "$elapsed") since $since (at least $(human "$min")): may go live"
  fi
fi

# --- 7.2 step 1: the file (root's, the service group reads it; never written through a link)
install_file "$HFT_PAYLOAD/$id.json" "$strategies_dir/$id.json" 640 "root:$group"

# --- 5.3: what only a new load applies differs: stop, unload, load the file again
if [ "$differs" = 1 ]; then
  api POST "/strategies/$id/stop"; [ "$API_CODE" = 200 ] || api_fail "POST /strategies/$id/stop"
  changed "$where stopped (its configuration changed)"
  api DELETE "/strategies/$id"; [ "$API_CODE" = 200 ] || api_fail "DELETE /strategies/$id"
  changed "$where unloaded"
  loaded=0
fi
# --- 7.2 step 3: load
if [ "$loaded" = 0 ]; then
  api POST /strategies/load "$(jq -cn --arg f "$strategies_dir/$id.json" '{config_file: $f}')"
  [ "$API_CODE" = 201 ] || api_fail "POST /strategies/load"
  current=$API_BODY
  changed "$where loaded from $strategies_dir/$id.json ($(jq -r '.status' <<<"$current"), paper_trading $(jq -r '.paper_trading' <<<"$current"))"
else
  ok "$where loaded"
fi
# --- 7.2 steps 4 and 6: paper or live
if [ "$(jq -r '.paper_trading' <<<"$current")" = "$want_paper" ]; then
  ok "$where: mode $HFT_MODE"
else
  api PUT "/strategies/$id/config" "{\"paper_trading\": $want_paper}"
  [ "$API_CODE" = 200 ] || api_fail "PUT /strategies/$id/config"
  current=$API_BODY
  changed "$where: mode $HFT_MODE"
fi
# --- start or stop
if [ "$(jq -r '.status' <<<"$current")" = "$HFT_STATE" ]; then
  ok "$where $HFT_STATE"
else
  verb=$([ "$HFT_STATE" = running ] && echo start || echo stop)
  api POST "/strategies/$id/$verb"; [ "$API_CODE" = 200 ] || api_fail "POST /strategies/$id/$verb"
  changed "$where $HFT_STATE"
fi

# --- what the workload reports now
api GET "/strategies/$id"
[ "$API_CODE" = 200 ] || api_fail "GET /strategies/$id"
if [ "$HFT_CHANGES" -eq 0 ]; then ok "$where: no changes"; else echo "changed: $where: $HFT_CHANGES change(s)"; fi
printf 'HFT_STRATEGY_REPORT=%s\n' "$(jq -c --arg placement "$HFT_PLACEMENT" --arg role "$wl_role" \
  --argjson changes "$HFT_CHANGES" \
  '{id, placement: $placement, role: $role, status, paper_trading, paper_since, symbol, exchange, max_position,
    position, changes: $changes}' <<<"$API_BODY")"
