#!/usr/bin/env bash
# Runbook 3.4 step 2 / 6 (and 4.1 step 2: backup first): runs the migration engine
# (the `migrations` package, psycopg 3) on the database host.
# Installs the engine to HFT_MIGRATIONS_HOME/migrations (runbook 1.3 artifact location),
# root-owned, replaced as a whole when any file differs; HFT_MIGRATIONS_HOME itself is made
# root's (755) and every directory above the engine must be root's and not writable by others.
# Root runs it isolated: `python3 -I -B` (no PYTHON* variables, no user site, neither the
# script's directory nor the cwd on sys.path), the package loaded from its exact directory
# (nothing else in HFT_MIGRATIONS_HOME is importable), from a root-owned cwd (the engine dir).
# Goes to HFT_SCHEMA_TARGET (empty: the newest migration), always after a `backup` to
# HFT_BACKUP_DIR (runbook 4.1 step 2, 6.3 item 4):
#  - below it (runbook 5.2): `up --to TARGET`, online, as every forward migration;
#  - above it (runbook 5.2, schema rollback): only when no session of HFT_DB_USER is connected
#    (the applications were stopped for it by the schema_stop steps: the trading primary's
#    schema is never pulled from under it), then `down --to TARGET`. If a rollback script
#    fails, the backup just taken is restored (the database is exactly as the stopped
#    applications left it) and the step fails saying so.
# After each run, backups beyond retention are pruned: the newest HFT_BACKUP_KEEP always stay,
# older ones go once HFT_BACKUP_KEEP_DAYS old (0: the count alone decides).
# The last line printed is the engine's JSON document (`up`, `down`, or `status` when nothing
# changed), with the change made (direction, from, to, backup), the target, what was pruned and
# when it ran (`ran_at`).
#
# env:
#   HFT_DB_HOST          default 127.0.0.1
#   HFT_DB_PORT          default 5432
#   HFT_DB_NAME          database (required)
#   HFT_DB_USER          role the engine connects as (required)
#   HFT_BACKUP_DIR       default /var/backup
#   HFT_MIGRATIONS_HOME  default /opt/hft_system (the engine goes to <this>/migrations)
#   HFT_SCHEMA_TARGET    schema version to run; empty: the newest migration
#   HFT_BACKUP_KEEP      newest backups always kept, default 10
#   HFT_BACKUP_KEEP_DAYS older backups beyond those are pruned at this age in days, default 30
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

num() { [[ $1 =~ ^[0-9]+$ ]] || die "$2 = '$1': expected a non-negative integer"; }
target=${HFT_SCHEMA_TARGET:-}
keep=${HFT_BACKUP_KEEP:-10}
keep_days=${HFT_BACKUP_KEEP_DAYS:-30}
num "$keep" HFT_BACKUP_KEEP; num "$keep_days" HFT_BACKUP_KEEP_DAYS
[ -z "$target" ] || num "$target" HFT_SCHEMA_TARGET

engine_json status
[ "$(field 'len(d["problems"])')" -eq 0 ] || die "migrations status: $(field '"; ".join(d["problems"])')"
current=$(field 'd["current_version"]')
newest=$(field 'max([m["version"] for m in d["migrations"]] or [0])')
[ -n "$target" ] || target=$newest
[ "$target" -le "$newest" ] || die "schema version $target asked, but the newest migration is $newest"
pending=$(field "len([v for v in d['pending'] if v <= $target])")
result='{}'
backup_file=
take_backup() {
  ensure_dir "$backup_dir" 700 root:root >/dev/null
  engine_json backup --backup-dir "$backup_dir"
  backup_file=$(field 'd.get("file")')
  changed "backup written: $backup_file"
}
if [ "$current" -gt "$target" ]; then
  # the applications were stopped first: refuse while any of them is still connected
  sessions=$(cd / && pg_run -d postgres -v db="$HFT_DB_NAME" -v usr="$HFT_DB_USER" <<'SQL'
SELECT count(*) || ' ' || coalesce(string_agg(DISTINCT coalesce(client_addr::text, 'local socket'), ', '), '')
FROM pg_stat_activity WHERE datname = :'db' AND usename = :'usr' AND pid <> pg_backend_pid();
SQL
)
  if [ "${sessions%% *}" != 0 ]; then
    die "refusing to roll the schema back from $current to $target: ${sessions%% *} session(s) of $HFT_DB_USER are connected to $HFT_DB_NAME (from ${sessions#* }); stop the applications using it first (runbook 5.2 step 1)"
  fi
  ok "schema at $current, target $target: rolling back (no application connected)"
  take_backup
  if out=$(engine_json down --to "$target"; printf '%s\n' "$doc"); then
    doc=$(tail -n 1 <<<"$out")
  else
    printf '%s\n' "$out"
    engine_json restore "$backup_file"
    die "rolling the schema back to $target failed (above); $HFT_DB_NAME was restored from $backup_file, as the stopped applications left it (schema $current)"
  fi
  changed "rolled back to schema version $target ($((current - target)) rollback migration(s))"
  result=$(printf '{"direction": "down", "from": %s, "to": %s, "backup": "%s"}' "$current" "$target" "$backup_file")
  main=$doc
elif [ "$pending" -gt 0 ]; then
  ok "$pending migration(s) pending up to $target"
  take_backup
  engine_json up --to "$target"
  changed "applied $(field 'len(d.get("applied", []))') migration(s); schema at version $(field 'd.get("current_version")')"
  result=$(printf '{"direction": "up", "from": %s, "to": %s, "backup": "%s"}' "$current" "$target" "$backup_file")
  main=$doc
else
  ok "schema at version $current (target $target)"
  main=$doc
fi

# retention: the newest $keep always stay; of the others, those $keep_days days old go
if [ -d "$backup_dir" ]; then
  engine_json backups --backup-dir "$backup_dir" --prune --keep "$keep" --max-age-days "$keep_days"
  pruned=$(field 'json.dumps([b["file"] for b in d["pruned"]])')
  for f in $(field '" ".join(b["file"] for b in d["pruned"])'); do changed "pruned backup $f (retention: newest $keep kept, older ones after $keep_days days)"; done
else
  pruned='[]'
fi

python3 -I -c 'import json,sys
d = json.loads(sys.argv[1]); d["change"] = json.loads(sys.argv[2]); d["pruned"] = json.loads(sys.argv[3]); d["target_version"] = int(sys.argv[4])
d["ran_at"] = sys.argv[5]
print(json.dumps(d))' "$main" "$result" "$pruned" "$target" "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
