#!/usr/bin/env bash
# Runbook 3.4 step 2 / 6 (and 4.1 step 2: backup first): runs the migration engine
# (the `migrations` package, psycopg 3) on the database host.
# Installs the engine to HFT_MIGRATIONS_HOME/migrations (runbook 1.3 artifact location),
# root-owned, replaced as a whole when any file differs; HFT_MIGRATIONS_HOME itself is made
# root's (755) and every directory above the engine must be root's and not writable by others.
# Root runs it isolated: `python3 -I -B` (no PYTHON* variables, no user site, neither the
# script's directory nor the cwd on sys.path), the package loaded from its exact directory
# (nothing else in HFT_MIGRATIONS_HOME is importable), from a root-owned cwd (the engine dir).
# Runs `plan`; when something is pending: `backup` to HFT_BACKUP_DIR, then `up --json`.
# The last line printed is the engine's JSON document (`up`, or `status` when nothing was pending).
#
# env:
#   HFT_DB_HOST          default 127.0.0.1
#   HFT_DB_PORT          default 5432
#   HFT_DB_NAME          database (required)
#   HFT_DB_USER          role the engine connects as (required)
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

# the engine: root's, in root's directories, replaced as a whole when any file (or owner) differs
ensure_dir "$home" 755 root:root
if [ -d "$dest" ] && [ ! -L "$dest" ] && diff -rq "$HFT_PAYLOAD/migrations" "$dest" >/dev/null 2>&1 \
    && [ -z "$(find "$dest" \( ! -user root -o -perm /022 -o \( ! -type f ! -type d \) \) -print -quit)" ]; then
  ok "migration engine in $dest"
else
  rm -rf "$dest.new"
  cp -r "$HFT_PAYLOAD/migrations" "$dest.new"
  find "$dest.new" -name __pycache__ -prune -exec rm -rf {} +
  chown -R root:root "$dest.new"
  chmod -R u=rwX,go=rX "$dest.new"
  rm -rf "$dest.old"
  if [ -e "$dest" ] || [ -L "$dest" ]; then mv -T "$dest" "$dest.old"; fi
  mv -T "$dest.new" "$dest"
  rm -rf "$dest.old"
  changed "migration engine installed to $dest"
fi

# a private passfile (host:port:db:user:password); the payload dir and it go at exit
umask 077
write_pgpass passfile "$host" "$port" "$HFT_DB_NAME" "$HFT_DB_USER" "$password"
unset password

cq() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
dsn="host=$(cq "$host") port=$(cq "$port") dbname=$(cq "$HFT_DB_NAME") user=$(cq "$HFT_DB_USER")"

# every directory the engine is loaded from: root's, not writable by group or others
p=$dest
while :; do
  if [ -L "$p" ] || [ "$(stat -c %u "$p")" != 0 ] || [ -n "$(find "$p" -maxdepth 0 -perm /022 ! -perm -1000)" ]; then
    die "refusing to run the migration engine: $p is a symlink, not root's, or writable by others"
  fi
  [ "$p" = / ] && break
  p=$(dirname "$p")
done
# shellcheck disable=SC2016
load_engine='import importlib.util, sys
d = sys.argv[1]
spec = importlib.util.spec_from_file_location("migrations", d + "/__init__.py", submodule_search_locations=[d])
mod = importlib.util.module_from_spec(spec)
sys.modules["migrations"] = mod
spec.loader.exec_module(mod)
from migrations.cli import main
sys.exit(main(sys.argv[2:]))'
engine() {
  (cd "$dest" && PGPASSFILE=$passfile python3 -I -B -c "$load_engine" "$dest" --dsn "$dsn" --json "$@")
}
# engine_json VERB...: run, keep its JSON in $doc, fail with the engine's message
engine_json() {
  local rc=0
  doc=$(engine "$@" 2>"$HFT_PAYLOAD/engine.err") || rc=$?
  if [ "$rc" -ne 0 ]; then
    local msg
    msg=$(python3 -I -c 'import json,sys
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
field() { python3 -I -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)" <<<"$doc"; }

engine_json plan
pending=$(field 'len(d.get("pending", []))')
if [ "$pending" -eq 0 ]; then
  engine_json status
  ok "schema at version $(field 'd.get("current_version")')"
  printf '%s\n' "$doc"
  exit 0
fi
ok "$pending migration(s) pending: $(field '" ".join("%03d" % p["version"] for p in d["pending"])')"
ensure_dir "$backup_dir" 700 root:root >/dev/null
engine_json backup --backup-dir "$backup_dir"
changed "backup written: $(field 'd.get("file")')"
engine_json up
changed "applied $(field 'len(d.get("applied", []))') migration(s); schema at version $(field 'd.get("current_version")')"
printf '%s\n' "$doc"
