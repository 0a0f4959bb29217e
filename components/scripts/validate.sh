#!/usr/bin/env bash
# Runbook 11.1 / 3.8: deployment validation, run on the application host after each deploy.
# Runs every check (never stops at the first failure), prints "✓ ..." / "✗ ...: detail" per
# check, then one line HFT_VALIDATION_REPORT=<JSON {"passed": [...], "failed": [{"check",
# "detail"}], "status": "SUCCESS"|"FAILED"}>; exits 1 when any check failed.
#
# env:
#   HFT_HOME                     /opt/hft_system (binary: $HFT_HOME/bin/hft_system)
#   HFT_CONFIG                   config file, e.g. /opt/hft_system/config/production.json
#   HFT_UNIT_NAME                hft_system
#   HFT_API                      http://127.0.0.1:8080
#   HFT_DB_HOST, HFT_DB_PORT, HFT_DB_NAME, HFT_DB_USER
#   HFT_EXPECTED_SCHEMA_VERSION  e.g. 5
#   HFT_LOG_DIR                  /var/log/hft_system
#   HFT_PROMETHEUS               http://127.0.0.1:9090
#   HFT_EXPECTED_VERSION         e.g. 1.0.0 (a leading "v" is ignored)
#   HFT_SCRAPE_TARGET            this placement's target as Prometheus scrapes it (host:port): the check
#                                reads up{job="hft_system",instance=...} (a target moved away stays 0 for a while)
#   HFT_SCRAPE_TIMEOUT           seconds to wait for that target to be up (default 15)
# payload: lib.sh
# stdin: the database password (one line), or nothing: then it is read from DB_PASSWORD in
#        $HFT_HOME/.env (systemd EnvironmentFile syntax), the file the service itself uses.
#        Either way it is used only through a 600 PGPASSFILE. The deploy passes nothing, so
#        that this step's output (every check) is shown live during `pulumi up`.
set -uo pipefail
set -e
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_HOME HFT_CONFIG HFT_UNIT_NAME HFT_API HFT_DB_NAME HFT_DB_USER \
  HFT_EXPECTED_SCHEMA_VERSION HFT_LOG_DIR HFT_PROMETHEUS HFT_EXPECTED_VERSION
password=""
IFS= read -r password || true
if [ -z "$password" ]; then
  [ -r "$HFT_HOME/.env" ] || die "no password on stdin and $HFT_HOME/.env is not readable"
  password=$(python3 -c '
import shlex, sys
for line in open(sys.argv[1]):
    if line.startswith("DB_PASSWORD="):
        print(shlex.split(line.split("=", 1)[1])[0])
' "$HFT_HOME/.env")
  [ -n "$password" ] || die "DB_PASSWORD not found in $HFT_HOME/.env"
fi
db_host=${HFT_DB_HOST:-127.0.0.1}
db_port=${HFT_DB_PORT:-5432}
# tools the checks use (quiet: a validation run reports checks, not installs)
install_packages curl jq postgresql-client >/dev/null

umask 077
write_pgpass passfile "$db_host" "$db_port" "$HFT_DB_NAME" "$HFT_DB_USER" "$password"
unset password
set +e

echo "HFT System Deployment Validation"
echo "================================="
passed=() failed_json=""
pass() { passed+=("$1"); echo "✓ $1${2:+ ($2)}"; }
fail() {
  local d
  d=$(printf '%s' "$2" | tr '\n' ' ' | sed 's/[[:space:]]*$//' | cut -c1-300)
  failed_json+="${failed_json:+,}{\"check\":$(json_str "$1"),\"detail\":$(json_str "$d")}"
  echo "✗ $1: $d"
}

bin=$HFT_HOME/bin/hft_system
if [ -x "$bin" ]; then pass "System binaries installed" "$(readlink -f "$bin")"; else fail "System binaries installed" "$bin not found or not executable"; fi

if [ -f "$HFT_CONFIG" ]; then pass "Configuration files present" "$HFT_CONFIG"; else fail "Configuration files present" "$HFT_CONFIG not found"; fi

if [ -x "$bin" ] && [ -f "$HFT_CONFIG" ]; then
  if out=$("$bin" --validate-config --config="$HFT_CONFIG" 2>&1); then pass "Configuration valid"
  else fail "Configuration valid" "$out"; fi
else
  fail "Configuration valid" "binary or config missing"
fi

psqlq() {
  PGPASSFILE=$passfile PGCONNECT_TIMEOUT=5 psql -X -A -t -q -v ON_ERROR_STOP=1 \
    -h "$db_host" -p "$db_port" -U "$HFT_DB_USER" -d "$HFT_DB_NAME" -w "$@"
}
if out=$(psqlq -c 'SELECT 1' 2>&1) && [ "$out" = 1 ]; then
  pass "Database connection successful" "$HFT_DB_USER@$db_host:$db_port/$HFT_DB_NAME"
  if ver=$(psqlq -c 'SELECT max(version) FROM schema_version' 2>&1) && [ "$ver" = "$HFT_EXPECTED_SCHEMA_VERSION" ]; then
    pass "Migrations up to date" "version $ver"
  else
    fail "Migrations up to date" "schema version ${ver:-none}, expected $HFT_EXPECTED_SCHEMA_VERSION"
  fi
else
  fail "Database connection successful" "$out"
  fail "Migrations up to date" "database unreachable"
fi

state=$(systemctl is-active "$HFT_UNIT_NAME" 2>/dev/null)
if [ "$state" = active ]; then pass "Service running" "$HFT_UNIT_NAME"; else fail "Service running" "$HFT_UNIT_NAME is ${state:-unknown}"; fi

health=$(curl -sS --max-time 5 "$HFT_API/api/v1/health" 2>&1)
if [ "$(jq -r '.status // empty' <<<"$health" 2>/dev/null)" = healthy ]; then pass "API responding" "healthy"
else fail "API responding" "$HFT_API/api/v1/health: ${health:-no answer}"; fi

status=$(curl -fsS --max-time 5 "$HFT_API/api/v1/status" 2>&1)
if jq -e . >/dev/null 2>&1 <<<"$status"; then
  got=$(jq -r '.version // empty' <<<"$status")
  if [ "${got#v}" = "${HFT_EXPECTED_VERSION#v}" ]; then pass "Version" "$got"
  else fail "Version" "running ${got:-unknown}, expected ${HFT_EXPECTED_VERSION#v}"; fi
  total=$(jq '[.exchanges[]? | select(.status != "disabled")] | length' <<<"$status")
  conn=$(jq '[.exchanges[]? | select(.status == "connected")] | length' <<<"$status")
  if [ "$total" -gt 0 ] && [ "$conn" -eq "$total" ]; then pass "Exchange connections" "$conn/$total connected"
  else fail "Exchange connections" "$conn/$total connected: $(jq -c '[.exchanges[]? | {name, status}]' <<<"$status")"; fi
else
  fail "Version" "$HFT_API/api/v1/status: ${status:-no answer}"
  fail "Exchange connections" "$HFT_API/api/v1/status: ${status:-no answer}"
fi

if [ -s "$HFT_LOG_DIR/system.log" ]; then pass "Logs being written" "$HFT_LOG_DIR/system.log"
else fail "Logs being written" "$HFT_LOG_DIR/system.log missing or empty"; fi

if out=$(curl -fsS --max-time 5 "$HFT_PROMETHEUS/-/healthy" 2>&1); then
  pass "Monitoring configured" "Prometheus healthy"
  deadline=$((SECONDS + ${HFT_SCRAPE_TIMEOUT:-15}))
  while :; do
    up=$(curl -fsS --max-time 5 -G "$HFT_PROMETHEUS/api/v1/query" --data-urlencode "query=up{job=\"hft_system\",instance=\"$HFT_SCRAPE_TARGET\"}" 2>/dev/null \
         | jq -r '[.data.result[]?.value[1]] | if length == 0 then "no target" else join(",") end' 2>/dev/null)
    [ "$up" = 1 ] && break
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 1
  done
  if [ "$up" = 1 ]; then pass "Prometheus scraping hft_system" "up{instance=\"$HFT_SCRAPE_TARGET\"} == 1"
  else fail "Prometheus scraping hft_system" "up{job=\"hft_system\",instance=\"$HFT_SCRAPE_TARGET\"} = ${up:-no answer}"; fi
else
  fail "Monitoring configured" "$HFT_PROMETHEUS/-/healthy: $out"
  fail "Prometheus scraping hft_system" "Prometheus not responding"
fi

echo "================================="
if [ -z "$failed_json" ]; then
  echo "✓ All checks passed"
  echo "Deployment Status: SUCCESS"
  report_status=SUCCESS
else
  echo "Deployment Status: FAILED"
  report_status=FAILED
  # The engine shows a failed command's stderr: list every failed check there, not the first.
  grep -o '"check":"[^"]*","detail":"[^"]*"' <<<"$failed_json" \
    | sed -e 's/^"check":"/✗ /' -e 's/","detail":"/: /' -e 's/"$//' >&2
  echo "validation FAILED: every check above marked ✗" >&2
fi
echo "HFT_VALIDATION_REPORT={\"passed\":$(json_list "${passed[@]}"),\"failed\":[${failed_json}],\"status\":\"$report_status\"}"
[ "$report_status" = SUCCESS ]
