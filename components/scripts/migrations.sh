#!/usr/bin/env bash
# Runbook 3.4 step 2 / 6 (and 4.1 step 2: backup first): runs the migration engine
# (`python3 -m migrations`, psycopg 3) on the database host.
# Installs the engine to HFT_MIGRATIONS_HOME/migrations (runbook 1.3 artifact location);
# runs `plan`; when something is pending: `backup` to HFT_BACKUP_DIR, then `up --json`.
# The last line printed is the engine's JSON document (`up`, or `status` when nothing was pending).
#
# env:
#   HFT_DB_HOST          default 127.0.0.1
#   HFT_DB_PORT          default 5432
#   HFT_DB_NAME          required
#   HFT_DB_USER          required
#   HFT_BACKUP_DIR       default /var/backup
#   HFT_MIGRATIONS_HOME  default /opt/hft_system (the engine goes to <this>/migrations)
# payload: lib.sh, migrations/ (the repo's migrations package with its SQL files, as-is)
# stdin: the database password (one line); passed to the engine only through a 600 PGPASSFILE
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_DB_NAME HFT_DB_USER
require_payload migrations/__main__.py
read_secret password
host=${HFT_DB_HOST:-127.0.0.1}
port=${HFT_DB_PORT:-5432}
backup_dir=${HFT_BACKUP_DIR:-/var/backup}
home=${HFT_MIGRATIONS_HOME:-/opt/hft_system}
dest=$home/migrations

install_packages python3 python3-psycopg
command -v pg_dump >/dev/null || install_packages postgresql-client

# the engine: replaced as a whole when any file differs
if [ -d "$dest" ] && diff -rq -x __pycache__ "$HFT_PAYLOAD/migrations" "$dest" >/dev/null 2>&1; then
  ok "migration engine in $dest"
else
  mkdir -p "$home"
  rm -rf "$dest.new"
  cp -r "$HFT_PAYLOAD/migrations" "$dest.new"
  find "$dest.new" -name __pycache__ -prune -exec rm -rf {} +
  chown -R root:root "$dest.new"
  chmod -R u=rwX,go=rX "$dest.new"
  rm -rf "$dest.old"
  [ -d "$dest" ] && mv "$dest" "$dest.old"
  mv "$dest.new" "$dest"
  rm -rf "$dest.old"
  changed "migration engine installed to $dest"
fi

# a private passfile (host:port:db:user:password); the payload dir and it go at exit
umask 077
write_pgpass passfile "$host" "$port" "$HFT_DB_NAME" "$HFT_DB_USER" "$password"
unset password

cq() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
dsn="host=$(cq "$host") port=$(cq "$port") dbname=$(cq "$HFT_DB_NAME") user=$(cq "$HFT_DB_USER")"

engine() {
  (cd "$home" && PGPASSFILE=$passfile PYTHONDONTWRITEBYTECODE=1 python3 -m migrations --dsn "$dsn" --json "$@")
}
# engine_json VERB...: run, keep its JSON in $doc, fail with the engine's message
engine_json() {
  local rc=0
  doc=$(engine "$@" 2>"$HFT_PAYLOAD/engine.err") || rc=$?
  if [ "$rc" -ne 0 ]; then
    local msg
    msg=$(python3 -c 'import json,sys
try:
    d = json.loads(sys.stdin.read().strip().splitlines()[-1]); print((d.get("error") or {}).get("message", ""))
except Exception:
    print("")' <<<"$doc")
    [ -n "$msg" ] || msg=$(tail -n 5 "$HFT_PAYLOAD/engine.err" | tr '\n' ' ')
    [ -z "$doc" ] || printf '%s\n' "$doc" | tail -n 1
    die "migrations $1 failed (exit $rc): $msg"
  fi
  doc=$(printf '%s\n' "$doc" | tail -n 1)
}
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)" <<<"$doc"; }

engine_json plan
pending=$(field 'len(d.get("pending", []))')
if [ "$pending" -eq 0 ]; then
  engine_json status
  ok "schema at version $(field 'd.get("current_version")')"
  printf '%s\n' "$doc"
  exit 0
fi
ok "$pending migration(s) pending: $(field '" ".join("%03d" % p["version"] for p in d["pending"])')"
mkdir -p "$backup_dir"
chmod 700 "$backup_dir"
engine_json backup --backup-dir "$backup_dir"
changed "backup written: $(field 'd.get("file")')"
engine_json up
changed "applied $(field 'len(d.get("applied", []))') migration(s); schema at version $(field 'd.get("current_version")')"
printf '%s\n' "$doc"
