"""On-call database commands (runbook 5.2): list and prune backups, restore a named one.

    python -m ops backups -s prod              # the backups on the db host, newest first, age and size
    python -m ops backups -s prod --prune      # and delete those beyond hft:database.backupRetention*
    python -m ops restore hft_db_20251125_100000.dump -s prod

Both run the migration engine the stack installed on the database host
(``<hft:service.home>/migrations``, root's, run isolated as the Migrations step runs it), over
SSH with the stack's pinned host keys.

`restore`, in this order (runbook 5.2 steps 1-3):
  1. reads the dump's schema_version on the db host and refuses, before anything is stopped, a
     dump newer than the code (a version the deployed migrations do not have), one below
     ``hft:database.minSchemaVersion`` (the releases cannot run on it), or one above the stack's
     schema target (``hft:database.schemaVersion``: lower it first, or remove it);
  2. stops the application on every app host (the trading primary first; graceful: working
     orders cancelled, positions flushed, lease released): the database is shared by every color;
  3. on the db host: a backup of what is there now (the way back), then ``restore`` (pg_restore
     in one transaction: a failure changes nothing), then ``status``: the restored history must
     match the migration files (checksums); migrations up to the stack's target are applied;
  4. starts the application again where it was running (the primary first) and waits for health.
If step 3 fails the database is as it was, and step 4 still runs. The database password is read
from the service's .env (mode 600) on an app host and travels only inside the SSH session's
stdin, into a mode-600 passfile on the db host that is removed at exit.
"""
from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable

from components.config import StackConfig
from components.server import Host
from migrations.cli import age_text, size_text
from ops import hosts

UNIT = "hft_system"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.dump$")

# The engine as the Migrations step runs it: root's copy, `python3 -I -B`, loaded from its exact
# directory (nothing the service user can write is importable), from a root-owned cwd.
ENGINE = r'''
set -euo pipefail
umask 077
dest={home}/migrations
[ -f "$dest/__init__.py" ] && [ "$(stat -c %u "$dest")" = 0 ] \
  || {{ echo "no migration engine installed in $dest (deploy the stack first)" >&2; exit 1; }}
load='import importlib.util, sys
d = sys.argv[1]
spec = importlib.util.spec_from_file_location("migrations", d + "/__init__.py", submodule_search_locations=[d])
mod = importlib.util.module_from_spec(spec)
sys.modules["migrations"] = mod
spec.loader.exec_module(mod)
from migrations.cli import main
sys.exit(main(sys.argv[2:]))'
engine() {{ (cd "$dest" && python3 -I -B -c "$load" "$dest" "$@"); }}
'''

# The password arrives inside this text (the SSH session's stdin), goes into a 600 passfile in a
# 700 directory, and both go at exit. Never on a command line, never printed.
WITH_PASSWORD = r'''
tmp=$(mktemp -d /run/hft-ops.XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT
cat > "$tmp/pgpass" <<'HFT_OPS_PW'
127.0.0.1:5432:{db}:{user}:{password}
HFT_OPS_PW
chmod 600 "$tmp/pgpass"
export PGPASSFILE=$tmp/pgpass
dsn="host=127.0.0.1 port=5432 dbname={db} user={user}"
'''

STOP = r'''
set -euo pipefail
if systemctl is-active --quiet {unit}; then systemctl stop {unit}; echo stopped; else echo not-running; fi
'''

START = r'''
set -euo pipefail
systemctl start {unit}
for _ in $(seq {timeout}); do
  if curl -fsS --max-time 3 {api}/api/v1/health 2>/dev/null | grep -q healthy; then echo healthy; exit 0; fi
  sleep 1
done
echo "not healthy at {api}/api/v1/health after {timeout} s" >&2
journalctl -u {unit} -n 20 --no-pager >&2 || true
exit 1
'''

PASSWORD = r'''
set -euo pipefail
sed -n 's/^DB_PASSWORD="\(.*\)"$/\1/p' {home}/.env
'''


def say(line: str) -> None:
    print(line, flush=True)


def _host(cfg: StackConfig, name: str) -> Host:
    return next(h for h in cfg.hosts if h.name == name)


def _json(proc, what: str) -> dict[str, Any]:
    """The engine's JSON document (its last stdout line), or SystemExit with its message."""
    doc: dict[str, Any] = {}
    lines = proc.stdout.strip().splitlines()
    if lines:
        try:
            doc = json.loads(lines[-1])
        except json.JSONDecodeError:
            doc = {}
    if proc.returncode != 0 or not doc.get("ok", False):
        msg = (doc.get("error") or {}).get("message") or proc.stderr.strip() or proc.stdout.strip()
        raise SystemExit(f"{what} failed: {msg}")
    return doc


def backups(cfg: StackConfig, prune: bool = False, out: Callable[[str], None] = say) -> dict[str, Any]:
    """The backups in hft:database.backupDir on the db host (newest first), after pruning them
    by hft:database.backupRetentionCount/Days when ``prune``."""
    db = cfg.database
    host = _host(cfg, cfg.topology.db.name)
    args = ["--json", "backups", "--backup-dir", db.backup_dir]
    if prune:
        args += ["--prune", "--keep", str(db.backup_retention_count), "--max-age-days", str(db.backup_retention_days)]
    script = ENGINE.format(home=shlex.quote(cfg.service.home)) + "engine " + " ".join(map(shlex.quote, args)) + "\n"
    doc = _json(hosts.run(host, script), f"listing the backups on {host.name}")
    for b in doc.get("pruned", []):
        out(f"pruned {b['file']} ({age_text(b['age_seconds'])} old, {size_text(b['bytes'])}; retention: the newest "
            f"{db.backup_retention_count} kept, older ones after {db.backup_retention_days} days)")
    out(f"backups in {host.name}:{db.backup_dir} (newest first):")
    for b in doc["backups"]:
        out(f"  {b['file']}  age {age_text(b['age_seconds'])}  size {size_text(b['bytes'])}")
    if not doc["backups"]:
        out("  none")
    return doc


@dataclass
class RestoreResult:
    file: str
    dump_version: int
    schema_version: int
    pre_restore_backup: str
    started: list[str]


def check_dump(cfg: StackConfig, name: str) -> dict[str, Any]:
    """Step 1: what the dump holds, against the deployed code and the stack; SystemExit when refused."""
    if not NAME_RE.match(name) or ".." in name:
        raise SystemExit(f"backup name {name!r}: expected a file name in hft:database.backupDir like "
                         f"hft_db_20251125_100000.dump (no directory; `ops backups` lists them)")
    db = cfg.database
    host = _host(cfg, cfg.topology.db.name)
    path = f"{db.backup_dir}/{name}"
    script = ENGINE.format(home=shlex.quote(cfg.service.home)) + f"engine --json inspect {shlex.quote(path)}\n"
    info = _json(hosts.run(host, script), f"reading {host.name}:{path}")
    dumped, code = info["dump_version"], info["code_version"]
    unknown = sorted(v for v in info["dump_versions"] if v > code)
    if unknown:
        raise SystemExit(f"refusing to restore {name}: it is newer than the code. Its schema_version holds "
                         f"version(s) {', '.join(map(str, unknown))}; the migrations deployed on {host.name} go "
                         f"up to {code:03d}. Nothing was stopped.")
    if dumped < db.min_schema_version:
        raise SystemExit(f"refusing to restore {name}: it holds schema version {dumped}, below "
                         f"hft:database.minSchemaVersion = {db.min_schema_version} (the deployed releases "
                         f"cannot run on it). Nothing was stopped.")
    if dumped > db.target_version:
        raise SystemExit(f"refusing to restore {name}: it holds schema version {dumped}, above the stack's "
                         f"target hft:database.schemaVersion = {db.target_version} (raise or remove it first). "
                         f"Nothing was stopped.")
    return info


def restore(cfg: StackConfig, name: str, out: Callable[[str], None] = say) -> RestoreResult:
    t0 = time.monotonic()
    db, svc, topo = cfg.database, cfg.service, cfg.topology
    info = check_dump(cfg, name)
    out(f"{name}: schema version {info['dump_version']}; the deployed migrations go up to "
        f"{info['code_version']}; the stack's target is {db.target_version}")
    db_host = _host(cfg, topo.db.name)
    apps = sorted(topo.apps, key=lambda a: a.role != "primary")   # the trading primary first

    # the password, from the service's .env on an app host (mode 600, root's)
    pw_proc = hosts.run(_host(cfg, apps[0].host.name), PASSWORD.format(home=shlex.quote(svc.home)))
    password = pw_proc.stdout.strip()
    if pw_proc.returncode != 0 or not password or "\n" in password:
        raise SystemExit(f"cannot read DB_PASSWORD from {svc.home}/.env on {apps[0].host.name}; nothing was stopped")
    pgpass_pw = password.replace("\\", "\\\\").replace(":", "\\:")

    stopped = []
    for app in apps:
        proc = hosts.run(_host(cfg, app.host.name), STOP.format(unit=UNIT))
        if proc.returncode != 0:
            _start(cfg, stopped, out)
            raise SystemExit(f"stopping {UNIT} ({app.name}) on {app.host.name} failed: {proc.stderr.strip()}; "
                             f"what was stopped was started again")
        if proc.stdout.strip() == "stopped":
            stopped.append(app)
        out(f"{app.name} on {app.host.name}: {proc.stdout.strip()}"
            + (" (the trading primary: orders cancelled, lease released)" if app.role == "primary" else ""))

    path = f"{db.backup_dir}/{name}"
    q = shlex.quote
    script = (ENGINE.format(home=q(svc.home))
              + WITH_PASSWORD.format(db=db.name, user=db.user, password=pgpass_pw)
              + 'run() { n=$1; shift; engine --dsn "$dsn" --json "$@" > "$tmp/$n.json" '
                '|| { echo "$n failed: $(tail -n 1 "$tmp/$n.json")" >&2; exit 1; }; }\n'
              + f'run backup backup --backup-dir {q(db.backup_dir)}\n'
              + f'run restore restore {q(path)} --min-version {db.min_schema_version}\n'
              + f'run up up --to {db.target_version}\n'
              + 'engine --dsn "$dsn" --json status > "$tmp/status.json" || true\n'
              + 'python3 -I -c \'import json,sys; print(json.dumps({n: json.load(open(sys.argv[1] + "/" + n + ".json")) '
                'for n in ("backup", "restore", "up", "status")}))\' "$tmp"\n')
    proc = hosts.run(db_host, script, timeout=1800)
    del script, password, pgpass_pw
    try:
        lines = proc.stdout.strip().splitlines()
        docs = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except json.JSONDecodeError:
        docs = None
    if docs is None:
        started = _start(cfg, stopped, out)
        raise SystemExit(f"restoring {name} on {db_host.name} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-1500:]} (pg_restore runs in one transaction: a failed restore changed "
                         f"nothing); started again: {', '.join(started) or 'nothing'}")
    st = docs["status"]
    out(f"pre-restore backup (the way back): {docs['backup']['file']}")
    out(f"restored {path} into {db.name} on {db_host.name}")
    applied = [s["version"] for s in docs["up"].get("applied", [])]
    if applied:
        out(f"applied migration(s) {', '.join(map(str, applied))} up to the stack's target {db.target_version}")
    if st.get("problems"):
        started = _start(cfg, stopped, out)
        raise SystemExit(f"the restored schema does not match the migrations: {'; '.join(st['problems'])}; "
                         f"started again: {', '.join(started)}")
    out(f"schema version {st['current_version']}: verified against the migrations (checksums match, "
        f"{len(st['pending'])} pending)")
    started = _start(cfg, stopped, out)
    out(f"RESTORE DONE: {name} (schema {info['dump_version']}) restored, schema now {st['current_version']}, "
        f"{', '.join(started) or 'no application'} running again, {time.monotonic() - t0:.1f} s")
    return RestoreResult(name, info["dump_version"], st["current_version"], docs["backup"]["file"], started)


def _start(cfg: StackConfig, apps: list, out: Callable[[str], None]) -> list[str]:
    """Start what was stopped, the primary first; wait for health. Returns the placements started."""
    started = []
    for app in apps:
        proc = hosts.run(_host(cfg, app.host.name),
                         START.format(unit=UNIT, api=shlex.quote(app.api_url), timeout=cfg.service.health_timeout_seconds),
                         timeout=cfg.service.health_timeout_seconds + 60)
        if proc.returncode == 0:
            started.append(app.name)
            out(f"{app.name} on {app.host.name}: started, healthy")
        else:
            out(f"{app.name} on {app.host.name}: START FAILED: {proc.stderr.strip()[-800:]}")
    return started
