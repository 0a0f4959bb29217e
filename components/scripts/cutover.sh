#!/usr/bin/env bash
# Runbook 4.1 steps 7-8 and 5.1: the blue-green cutover, run on the host of the color that is
# to be live. Never two primaries: the database refuses a stale epoch's writes (migration 006),
# and this script only ever promotes after every other color confirmed its fence.
#   1. refuse unless the target answers healthy on the expected version;
#   2. fence every other color (trading off, working orders cancelled and confirmed in the
#      database, lease released);
#   3. promote the target (new epoch, positions reloaded from the database, trading on,
#      strategies started);
#   4. watch for HFT_WATCH_SECONDS: health, trading active, error count, order latency p99;
#      a failed gate fences the target and promotes the previous primary back, and fails
#      (a first promotion, with no previous primary to go back to, is not watched);
#   5. measure the trading gap from the database (last order of the old epoch to the first
#      order of the new one) and print HFT_CUTOVER_REPORT=<JSON>.
# Idempotent: when the target already holds the lease and trades, it reports and stops.
#
# env:
#   HFT_TO_COLOR          the color to make live, e.g. green (required)
#   HFT_TO_API            its API as reached from this host, e.g. http://198.18.0.14:8080 (required)
#   HFT_TO_VERSION        the version it must run, e.g. 1.1.0 (required)
#   HFT_OTHERS            the other colors: space-separated color=api, e.g. "blue=http://198.18.0.13:8080"
#   HFT_WATCH_SECONDS     watch window after promotion, runbook 4.1 step 8 (required)
#   HFT_GATE_MAX_ERRORS   most new errors (hft_errors_total) tolerated in the window (required)
#   HFT_GATE_MAX_P99_MS   highest order latency p99 tolerated in the window, in ms (required)
#   HFT_DB_HOST           the database host, as reached from this host (required)
#   HFT_DB_PORT           e.g. 5432 (required)
#   HFT_DB_NAME           e.g. hft_db (required)
#   HFT_DB_USER           e.g. hft_user (required)
#   HFT_REASON            why live changed (release.reason; may be empty), kept in the report
# payload: lib.sh
# stdin: line 1 the API token, line 2 the database password (never printed)
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_TO_COLOR HFT_TO_API HFT_TO_VERSION HFT_WATCH_SECONDS HFT_GATE_MAX_ERRORS HFT_GATE_MAX_P99_MS \
  HFT_DB_HOST HFT_DB_PORT HFT_DB_NAME HFT_DB_USER
read_secret token
read_secret password
install_packages curl jq postgresql-client >/dev/null
umask 077
write_pgpass passfile "$HFT_DB_HOST" "$HFT_DB_PORT" "$HFT_DB_NAME" "$HFT_DB_USER" "$password"
unset password
auth=$HFT_PAYLOAD/auth.header
printf 'Authorization: Bearer %s\n' "$token" >"$auth"
unset token

api() {  # api METHOD URL [BODY]: the JSON answer; fails on a non-2xx status
  local out code
  out=$(curl -sS --max-time 30 -X "$1" -H @"$auth" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} -w '\n%{http_code}' "$2") || return 1
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  printf '%s\n' "$out"
  [ "${code:0:1}" = 2 ]
}
get() { curl -sS --max-time 5 "$1"; }
sql() { PGPASSFILE=$passfile PGCONNECT_TIMEOUT=5 psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$HFT_DB_HOST" -p "$HFT_DB_PORT" \
          -U "$HFT_DB_USER" -d "$HFT_DB_NAME" -w -c "$1"; }
now_ms() { date +%s%3N; }
report() {  # report STATUS REASON
  printf 'HFT_CUTOVER_REPORT=%s\n' "$(jq -cn --arg status "$1" --arg reason "$2" --arg to "$HFT_TO_COLOR" \
    --arg why "${HFT_REASON:-}" \
    --arg from "${from_color:-}" --argjson epoch "${epoch:-null}" --argjson old_epoch "${old_epoch:-null}" \
    --argjson started "${started_ms:-null}" --argjson ended "$(now_ms)" --argjson gap_ms "${gap_ms:-null}" \
    --arg to_version "${to_version:-}" --arg from_version "${from_version:-}" \
    --argjson watched "${watched:-0}" --argjson errors "${new_errors:-null}" --argjson p99_ms "${p99_ms:-null}" \
    '{status: $status, reason: $reason, why: $why, from: $from, to: $to, from_version: $from_version, to_version: $to_version,
      epoch: $epoch, previous_epoch: $old_epoch, started_ms: $started, ended_ms: $ended, trading_gap_ms: $gap_ms,
      watched_seconds: $watched, gate: {new_errors: $errors, order_latency_p99_ms: $p99_ms}}')"
}

# 1. the target: healthy, on the version the config names
to_status=$(get "$HFT_TO_API/api/v1/status") || die "cutover refused: $HFT_TO_COLOR's API does not answer at $HFT_TO_API"
to_version=$(jq -r '.version' <<<"$to_status")
[ "${to_version%%-*}" = "${HFT_TO_VERSION#v}" ] \
  || { report REFUSED "target runs $to_version, config names $HFT_TO_VERSION"; die "cutover refused: $HFT_TO_COLOR runs $to_version, the config names ${HFT_TO_VERSION#v}; the live color keeps trading"; }
[ "$(get "$HFT_TO_API/api/v1/health" | jq -r '.status // empty' 2>/dev/null)" = healthy ] \
  || { report REFUSED "target not healthy"; die "cutover refused: $HFT_TO_COLOR is not healthy; the live color keeps trading"; }
if [ "$(jq -r '.lease.held_by_me and .trading_active' <<<"$to_status")" = true ]; then
  epoch=$(jq '.lease.my_epoch' <<<"$to_status")
  ok "$HFT_TO_COLOR is live already (epoch $epoch)"
  report LIVE "already live"
  exit 0
fi

# 2. fence every other color, remembering which was the primary
started_ms=$(now_ms)
from_color="" from_api="" old_epoch=null
for pair in ${HFT_OTHERS:-}; do
  color=${pair%%=*} url=${pair#*=}
  st=$(get "$url/api/v1/status" || true)
  if [ -n "$st" ] && [ "$(jq -r '.lease.held_by_me' <<<"$st")" = true ]; then
    from_color=$color from_api=$url from_version=$(jq -r '.version' <<<"$st")
  fi
  if ! out=$(api POST "$url/api/v1/fence" '{"reason": "cutover to '"$HFT_TO_COLOR"'"}'); then
    report FAILED "fence of $color failed"
    die "cutover stopped before promotion: $color did not confirm its fence: $(tr '\n' ' ' <<<"$out" | cut -c1-300); $HFT_TO_COLOR was not promoted"
  fi
  open=$(jq -r '.working_orders_in_db' <<<"$out")
  [ "$open" = 0 ] || { report FAILED "$color has $open working orders after fence"; die "cutover stopped: $color still has $open working orders in the database"; }
  released=$(jq -r '.epoch_released // empty' <<<"$out")
  [ -z "$released" ] || old_epoch=$released
  changed "$color fenced (orders cancelled: $(jq -r '.orders_cancelled' <<<"$out"), epoch released: ${released:-none})"
done

# 3. promote the target
# Strategies keep the state the config gives them (the Strategy steps manage it): not all started.
if ! out=$(api POST "$HFT_TO_API/api/v1/promote" '{"start_strategies": false}'); then
  msg=$(tr '\n' ' ' <<<"$out" | cut -c1-300)
  if [ -n "$from_api" ]; then api POST "$from_api/api/v1/promote" '{"start_strategies": false}' >/dev/null || true; fi
  report FAILED "promotion failed: $msg"
  die "cutover failed: $HFT_TO_COLOR could not be promoted ($msg); ${from_color:-the previous primary} promoted back"
fi
epoch=$(jq '.epoch' <<<"$out")
changed "$HFT_TO_COLOR promoted (epoch $epoch, positions reloaded from the database)"

# 4. watch window with gates (runbook 4.1 step 8)
metric_sum() { get "$HFT_TO_API/api/v1/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%d\n", s}'; }
buckets() { get "$HFT_TO_API/api/v1/metrics" | awk '/^hft_order_latency_seconds_bucket/ {
  match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); print le, $2}'; }
# The window exists to decide whether to go back to the previous primary. A first promotion
# (nothing held the lease) has none to go back to: it gets no window, and the validation step
# that follows checks the new primary.
window=$HFT_WATCH_SECONDS
[ -n "$from_api" ] || { window=0; ok "first promotion: no previous primary to roll back to, no watch window"; }
errors0=$(metric_sum hft_errors_total)
buckets >"$HFT_PAYLOAD/b0"
failure="" watched=0
while [ "$watched" -lt "$window" ]; do
  sleep 1
  watched=$((watched + 1))
  h=$(get "$HFT_TO_API/api/v1/health" | jq -r '.status // "no answer"' 2>/dev/null || echo "no answer")
  [ "$h" = healthy ] || { failure="health: $h"; break; }
  a=$(get "$HFT_TO_API/api/v1/status" | jq -r '.trading_active' 2>/dev/null || echo false)
  [ "$a" = true ] || { failure="trading not active"; break; }
done
new_errors=$(( $(metric_sum hft_errors_total) - errors0 ))
buckets >"$HFT_PAYLOAD/b1"
p99_ms=$(awk 'NR == FNR {b0[$1] = $2; next} {d[$1] = $2 - b0[$1]; order[++n] = $1}
  END {total = d["+Inf"]; if (total <= 0) {print "null"; exit}
       for (i = 1; i <= n; i++) if (order[i] != "+Inf" && d[order[i]] >= 0.99 * total) {printf "%.3f\n", order[i] * 1000; exit}
       print "null"}' "$HFT_PAYLOAD/b0" "$HFT_PAYLOAD/b1")
[ -n "$failure" ] || [ "$new_errors" -le "$HFT_GATE_MAX_ERRORS" ] || failure="errors: $new_errors new (gate $HFT_GATE_MAX_ERRORS)"
if [ -z "$failure" ] && [ "$p99_ms" != null ] && awk -v p="$p99_ms" -v g="$HFT_GATE_MAX_P99_MS" 'BEGIN {exit !(p > g)}'; then
  failure="order latency p99 ${p99_ms} ms (gate $HFT_GATE_MAX_P99_MS ms)"
fi
if [ -n "$failure" ]; then
  api POST "$HFT_TO_API/api/v1/fence" '{"reason": "cutover gate failed"}' >/dev/null || true
  back="no previous primary to promote back"
  if [ -n "$from_api" ]; then
    back="$from_color could not be promoted back: its lease is still held; promote it by hand"
    # a target that stopped answering cannot release its lease: it expires after its TTL
    for _ in $(seq 30); do
      if api POST "$from_api/api/v1/promote" '{"start_strategies": false}' >/dev/null; then back="$from_color promoted back"; break; fi
      sleep 1
    done
  fi
  report ROLLED_BACK "$failure"
  die "cutover to $HFT_TO_COLOR rolled back after ${watched}s: $failure; $back"
fi
ok "watched $HFT_TO_COLOR for ${watched}s: healthy, trading, $new_errors new errors, order latency p99 ${p99_ms} ms"

# 5. the trading gap, from the database
if [ "$old_epoch" != null ]; then
  gap_ms=$(sql "SELECT coalesce(round(extract(epoch FROM (SELECT min(created_at) FROM orders WHERE epoch = $epoch)
                 - (SELECT max(created_at) FROM orders WHERE epoch = $old_epoch)) * 1000)::text, 'null')")
fi
report SUCCESS ""
