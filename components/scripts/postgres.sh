#!/usr/bin/env bash
# Runbook 3.3 step 3 (and 10: listen/pg_hba for replicas): PostgreSQL from Debian's packages,
# TimescaleDB where its repository is configured, tuning, pg_hba entries, cluster running.
# Restarts only when the server reports a setting pending restart after a reload
# (pg_settings.pending_restart: listen_addresses, shared_buffers, shared_preload_libraries,
# wal_level, ...); otherwise a changed config or pg_hba is applied with a reload.
#
# env:
#   HFT_PG_PACKAGES   e.g. "postgresql postgresql-contrib" (required)
#   HFT_TIMESCALEDB   1: add TimescaleDB's apt repository (runbook 3.3 step 3) and install
#                     timescaledb-2-postgresql-<major>; 0: skipped (default 0)
#   HFT_TIMESCALEDB_REPO     its repository URL, or per OS family HFT_TIMESCALEDB_REPO_DEBIAN /
#                            _UBUNTU (chosen on the host); suite: the host's codename, component main
#   HFT_TIMESCALEDB_KEY_URL  its ASCII-armored signing key (-> /etc/apt/keyrings/timescaledb.asc,
#                            trusted for that repository only: signed-by)
# payload: lib.sh, postgresql.conf (-> /etc/postgresql/<major>/main/conf.d/90-hft.conf),
#          pg_hba.block (kept in a marked block at the top of pg_hba.conf)
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_PG_PACKAGES
require_payload postgresql.conf pg_hba.block
# shellcheck disable=SC2086
install_packages $HFT_PG_PACKAGES

# the cluster: the one pg_lsclusters lists (Debian creates <major>/main on install)
read -r ver cluster _ < <(pg_lsclusters -h 2>/dev/null | sort -k1,1nr | head -n 1) || true
if [ -z "${ver:-}" ]; then
  ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -nr | head -n 1)
  [ -n "$ver" ] || die "no PostgreSQL server installed under /usr/lib/postgresql"
  cluster=main
  pg_createcluster "$ver" "$cluster" >/dev/null || die "pg_createcluster $ver $cluster failed"
  changed "cluster $ver/$cluster created"
fi
ok "postgresql $ver/$cluster"
etc=/etc/postgresql/$ver/$cluster
[ -f "$etc/postgresql.conf" ] || die "$etc/postgresql.conf not found"
grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf.d'" "$etc/postgresql.conf" \
  || die "$etc/postgresql.conf does not include conf.d (include_dir = 'conf.d')"

if is_true "${HFT_TIMESCALEDB:-0}"; then
  pkg=timescaledb-2-postgresql-$ver
  repo=$(by_family HFT_TIMESCALEDB_REPO)
  [ -n "${HFT_TIMESCALEDB_KEY_URL:-}" ] || die "HFT_TIMESCALEDB_KEY_URL is required with HFT_TIMESCALEDB=1"
  codename=$( (. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}") )
  [ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release: cannot name the TimescaleDB suite"
  keyring=/etc/apt/keyrings/timescaledb.asc
  tmp=$(mktemp)
  if [ ! -s "$keyring" ]; then
    install_packages curl ca-certificates
    curl -fsSL --max-time 60 "$HFT_TIMESCALEDB_KEY_URL" -o "$tmp" 2>"$HFT_PAYLOAD/curl.err" \
      || die "cannot fetch TimescaleDB's signing key from $HFT_TIMESCALEDB_KEY_URL (postgres.timescaledbKeyUrl): $(tail -n 1 "$HFT_PAYLOAD/curl.err")"
    grep -q -- '-----BEGIN PGP PUBLIC KEY BLOCK-----' "$tmp" \
      || die "$HFT_TIMESCALEDB_KEY_URL (postgres.timescaledbKeyUrl) is not an ASCII-armored PGP key"
    ensure_dir /etc/apt/keyrings 755 root:root >/dev/null
    install_file "$tmp" "$keyring" 644 root:root
  fi
  list=/etc/apt/sources.list.d/timescaledb.list
  had_list=0
  [ -f "$list" ] && had_list=1
  printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$repo" "$codename" >"$tmp"
  install_file "$tmp" "$list" 644 root:root
  [ "$FILE_CHANGED" = 0 ] || apt_sources_changed
  rm -f "$tmp"
  if ! pkg_installed "$pkg"; then
    # a repository that does not serve the package is not left behind for every later apt-get update
    drop_new_list() { [ "$had_list" = 1 ] || rm -f "$list"; }
    ( apt_update_once ) || { drop_new_list; die "apt-get update failed with $repo (postgres.timescaledbRepository)"; }
    apt_update_once   # (in this shell: later installs need no other update)
    pkg_installable "$pkg" || { drop_new_list; die "$pkg is not installable from $repo $codename (postgres.timescaledbRepository): set postgres.timescaledb false and remove timescaledb from database.extensions, or fix the repository"; }
    install_packages "$pkg"
  else
    ok "$pkg installed"
  fi
else
  skipped "timescaledb (not configured)"
fi

install_file "$HFT_PAYLOAD/postgresql.conf" "$etc/conf.d/90-hft.conf" 644 postgres:postgres
conf_changed=$FILE_CHANGED
replace_block "$etc/pg_hba.conf" "$HFT_PAYLOAD/pg_hba.block" top
hba_changed=$FILE_CHANGED

unit=postgresql@$ver-$cluster
systemctl enable --quiet postgresql 2>/dev/null || true
wait_ready() {
  local i
  for i in $(seq 1 60); do
    pg_isready -q -p "$(pg_conftool -s "$ver" "$cluster" show port 2>/dev/null || echo 5432)" && return 0
    sleep 1
  done
  journalctl -u "$unit" -n 20 --no-pager >&2 || true
  die "postgresql $ver/$cluster not ready after 60 s"
}
if ! systemctl is-active --quiet "$unit"; then
  systemctl start "$unit" || { journalctl -u "$unit" -n 20 --no-pager >&2 || true; die "cannot start $unit"; }
  wait_ready
  changed "postgresql $ver/$cluster started"
else
  wait_ready
  if [ "$conf_changed" = 1 ] || [ "$hba_changed" = 1 ]; then
    systemctl reload "$unit" || die "reload of $unit failed"
    sleep 1
    pending=$(echo "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE pending_restart;" | pg_run)
    if [ -n "$pending" ]; then
      systemctl restart "$unit" || { journalctl -u "$unit" -n 20 --no-pager >&2 || true; die "restart of $unit failed"; }
      wait_ready
      changed "postgresql restarted (pending restart: $pending)"
    else
      changed "postgresql reloaded"
    fi
  else
    ok "postgresql running, unchanged"
  fi
fi
# a configuration error shows up here, not as a silently ignored line
errs=$(echo "SELECT string_agg(name || ': ' || coalesce(error, ''), '; ') FROM pg_file_settings WHERE error IS NOT NULL;" | pg_run)
[ -z "$errs" ] || die "postgresql configuration errors: $errs"

if [ "$HFT_CHANGES" -eq 0 ]; then ok "postgres: no changes"; else echo "changed: postgres: $HFT_CHANGES change(s)"; fi
