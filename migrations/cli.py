"""Command line: ``python -m migrations VERB``; human lines by default, ``--json`` for tools.

Why exit codes are distinct: the deploy tool (and an operator's shell) must tell "another
runner is busy, retry" from "the files are wrong, a human must look" without parsing text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from . import backup as bk
from . import db
from .engine import Engine, MigrationFailed, Status, StepResult, ValidationError
from .files import MigrationFileError, discover

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VALIDATION = 0, 1, 2, 3
EXIT_MIGRATION, EXIT_LOCK, EXIT_CONNECT, EXIT_BACKUP = 4, 5, 6, 7

EPILOG = """\
verbs:
  status              files versus schema_version, per version
  plan                what `up` would apply (validates, changes nothing)
  up [--to N]         apply pending migrations, each in one transaction with its row
  down --to N         run rollback/NNN_rollback.sql newest first down to version N
  verify              validate checksums, missing files, gaps, duplicates, rollback files
  baseline --version N  mark a database built by the runbook's psql loop as version N
  backup              pg_dump -Fc to BACKUP_DIR/<db>_YYYYMMDD_HHMMSS.dump (UTC)
  restore FILE        pg_restore --clean --single-transaction FILE into the database; refuses
                      a dump whose schema_version is above the newest file here (newer than
                      the code) or below --min-version, before touching the database
  inspect FILE        the schema versions a dump holds, against this directory (no database)
  backups             the backups in --backup-dir, newest first, with age and size; with
                      --prune: delete those beyond --keep newest and older than --max-age-days
                      (no database)

connection: --dsn 'host=... dbname=... user=...' or libpq's PGHOST, PGPORT, PGUSER,
PGDATABASE, PGPASSWORD, PGPASSFILE. A password inside --dsn is refused: it would be
visible in `ps`; use PGPASSWORD or a passfile.

exit codes:
  0  success (also: nothing to do)
  1  unexpected error
  2  usage error
  3  validation failed (changed/missing file, gap, duplicate, bad file); nothing applied
  4  a migration failed; it was rolled back, later ones were not applied
  5  lock timeout: another runner holds the migration lock
  6  cannot connect to the database
  7  backup or restore failed
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m migrations", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="hft-deploy PostgreSQL migration engine")
    p.add_argument("--dsn", help="libpq conninfo without password (default: PG* env vars)")
    p.add_argument("--dir", type=Path, help="migrations directory (default: this package's)")
    p.add_argument("--lock-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for another runner's lock (default 60)")
    p.add_argument("--ddl-lock-timeout", default="5s", metavar="DURATION",
                   help="PostgreSQL lock_timeout of the migration session (default 5s): DDL gives up "
                        "instead of queueing behind the trading service's locks")
    p.add_argument("--statement-timeout", default="10min", metavar="DURATION",
                   help="PostgreSQL statement_timeout of the migration session (default 10min)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("status")
    sub.add_parser("plan")
    up = sub.add_parser("up")
    up.add_argument("--to", type=int)
    down = sub.add_parser("down")
    down.add_argument("--to", type=int, required=True)
    sub.add_parser("verify")
    base = sub.add_parser("baseline")
    base.add_argument("--version", type=int, required=True)
    b = sub.add_parser("backup")
    b.add_argument("--backup-dir", type=Path, default=bk.DEFAULT_BACKUP_DIR)
    b.add_argument("--pg-bin-dir", type=Path, help="directory of pg_dump (default: newest fit)")
    r = sub.add_parser("restore")
    r.add_argument("file", type=Path)
    r.add_argument("--pg-bin-dir", type=Path, help="directory of pg_restore")
    r.add_argument("--min-version", type=int, default=0,
                   help="refuse a dump below this schema version (the oldest the deployed code runs on)")
    i = sub.add_parser("inspect")
    i.add_argument("file", type=Path)
    i.add_argument("--pg-bin-dir", type=Path, help="directory of pg_restore")
    ls = sub.add_parser("backups")
    ls.add_argument("--backup-dir", type=Path, default=bk.DEFAULT_BACKUP_DIR)
    ls.add_argument("--prune", action="store_true", help="delete the backups beyond retention")
    ls.add_argument("--keep", type=int, default=10, help="the newest N are always kept (default 10)")
    ls.add_argument("--max-age-days", type=int, default=7,
                    help="of the others, delete those at least this old (default 7; 0: all of them)")
    return p


class Output:
    """Human lines on stdout as they happen, or one JSON document at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.messages: list[str] = []

    def say(self, msg: str) -> None:
        self.messages.append(msg)
        if not self.as_json:
            print(msg, flush=True)

    def finish(self, doc: dict[str, Any], code: int) -> int:
        if self.as_json:
            doc.setdefault("messages", self.messages)
            doc["exit_code"] = code
            print(json.dumps(doc, default=str, indent=None))
        return code

    def fail(self, doc: dict[str, Any], kind: str, message: str, code: int,
             problems: list[str] | None = None) -> int:
        if not self.as_json:
            print(f"error: {message}", file=sys.stderr)
        doc.update(ok=False, error={"kind": kind, "message": message, "problems": problems or []})
        return self.finish(doc, code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json)
    doc: dict[str, Any] = {"verb": args.verb, "ok": True, "error": None}
    if args.dsn and conninfo_to_dict(args.dsn).get("password"):
        return out.fail(doc, "usage", "--dsn must not contain a password (visible in ps); "
                        "use PGPASSWORD or PGPASSFILE", EXIT_USAGE)
    engine = Engine(args.dsn, args.dir, args.lock_timeout, say=out.say, ddl_lock_timeout=args.ddl_lock_timeout,
                    statement_timeout=args.statement_timeout)
    try:
        return _dispatch(args, engine, out, doc)
    except ValidationError as exc:
        return out.fail(doc, "validation", str(exc), EXIT_VALIDATION, exc.problems)
    except MigrationFileError as exc:
        return out.fail(doc, "validation", str(exc), EXIT_VALIDATION, [str(exc)])
    except MigrationFailed as exc:
        doc["applied" if args.verb == "up" else "reverted"] = [_step(s) for s in exc.done]
        doc["failed_version"] = exc.version
        return out.fail(doc, "migration", str(exc), EXIT_MIGRATION)
    except db.LockTimeout as exc:
        return out.fail(doc, "lock_timeout", str(exc), EXIT_LOCK)
    except db.ConnectError as exc:
        return out.fail(doc, "connection", str(exc), EXIT_CONNECT)
    except bk.BackupError as exc:
        return out.fail(doc, "backup", str(exc), EXIT_BACKUP)
    except (ValueError, OSError) as exc:
        return out.fail(doc, "error", str(exc), EXIT_ERROR)


def _dispatch(args: argparse.Namespace, engine: Engine, out: Output, doc: dict[str, Any]) -> int:
    verb = args.verb
    if verb in ("status", "verify"):
        st = engine.status() if verb == "status" else engine.verify()
        doc.update(st.to_dict())
        if not out.as_json:
            _print_status(st)
        if st.problems:
            return out.fail(doc, "validation", "; ".join(st.problems), EXIT_VALIDATION, st.problems)
        if verb == "verify":
            out.say("verify: OK")
        return out.finish(doc, EXIT_OK)
    if verb == "plan":
        pending = engine.plan()
        doc["pending"] = [{"version": f.version, "description": f.description, "file": f.name,
                           "transactional": f.transactional} for f in pending]
        for f in pending:
            out.say(f"would apply {f.version:03d} {f.description}"
                    + ("" if f.transactional else " (no transaction)"))
        if not pending:
            out.say("nothing to apply")
        return out.finish(doc, EXIT_OK)
    if verb == "up":
        done = engine.up(args.to)
        doc["applied"] = [_step(s) for s in done]
        if not done:
            out.say("nothing to apply: database is up to date")
        doc["current_version"] = engine.status().current_version
        return out.finish(doc, EXIT_OK)
    if verb == "down":
        done = engine.down(args.to)
        doc["reverted"] = [_step(s) for s in done]
        if not done:
            out.say(f"nothing to revert: database is at or below version {args.to}")
        doc["current_version"] = engine.status().current_version
        return out.finish(doc, EXIT_OK)
    if verb == "baseline":
        engine.baseline(args.version)
        doc["current_version"] = args.version
        return out.finish(doc, EXIT_OK)
    if verb == "backups":
        if args.prune:
            gone = bk.prune(args.backup_dir, args.keep, args.max_age_days)
            doc["pruned"] = gone
            for b in gone:
                out.say(f"pruned {b['file']} ({age_text(b['age_seconds'])} old, {size_text(b['bytes'])})")
            doc["retention"] = {"keep": args.keep, "max_age_days": args.max_age_days}
        doc["backups"] = bk.list_backups(args.backup_dir)
        for b in doc["backups"]:
            out.say(f"{b['file']}  {age_text(b['age_seconds'])} old  {size_text(b['bytes'])}")
        if not doc["backups"]:
            out.say(f"no backups in {args.backup_dir}")
        return out.finish(doc, EXIT_OK)
    if verb in ("inspect", "restore"):
        doc.update(_check_dump(args, engine, out))
        if verb == "inspect":
            return out.finish(doc, EXIT_OK)
    return _backup_verbs(args, engine, out, doc)


def _check_dump(args: argparse.Namespace, engine: Engine, out: Output) -> dict[str, Any]:
    """The dump's schema version against the files here; a restore refuses a dump the code
    cannot run on (ValidationError, before any connection to the database)."""
    versions = bk.dump_schema_versions(args.file, args.pg_bin_dir)
    files = discover(engine.directory)
    newest = files[-1].version if files else 0
    dumped = max(versions, default=0)
    info = {"file": str(args.file), "dump_version": dumped, "dump_versions": versions, "code_version": newest}
    out.say(f"{args.file.name}: schema version {dumped}; the migrations here go up to {newest}")
    if args.verb == "restore":
        unknown = sorted(set(versions) - {f.version for f in files})
        if dumped > newest or unknown:
            raise ValidationError([f"{args.file.name} is newer than the code: its schema_version holds version(s) "
                                   f"{', '.join(map(str, unknown))}, and the newest migration here is "
                                   f"{newest:03d}; refusing to restore it (deploy the code that has those "
                                   f"migrations first)"])
        if dumped < args.min_version:
            raise ValidationError([f"{args.file.name} holds schema version {dumped}, below {args.min_version}, "
                                   f"the oldest the deployed code runs on; refusing to restore it"])
    return info


def age_text(seconds: int) -> str:
    """2d3h, 5h12m, 7m30s, 12s."""
    d, rest = divmod(max(seconds, 0), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    return f"{m}m{s}s" if m else f"{s}s"


def size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _backup_verbs(args: argparse.Namespace, engine: Engine, out: Output, doc: dict[str, Any]) -> int:
    with db.connect(engine.dsn) as conn:
        if args.verb == "backup":
            path = bk.backup(conn, args.backup_dir, args.pg_bin_dir)
            doc["file"] = str(path)
            out.say(f"backup written: {path}")
            return out.finish(doc, EXIT_OK)
        # restore: hold the migration lock so no runner migrates a half-restored database
        db.acquire_lock(conn, engine.lock_timeout, on_wait=out.say)
        try:
            bk.restore(conn, args.file, args.pg_bin_dir)
        finally:
            db.release_lock(conn)
        doc["file"] = str(args.file)
        out.say(f"restored {args.file} into {db.describe(conn)}")
        return out.finish(doc, EXIT_OK)


def _step(s: StepResult) -> dict[str, Any]:
    return {"version": s.version, "description": s.description, "direction": s.direction,
            "transactional": s.transactional, "execution_ms": s.execution_ms,
            "notices": s.notices}


def _print_status(st: Status) -> None:
    base = f", baseline {st.baseline_version}" if st.baseline_version is not None else ""
    print(f"current version {st.current_version}{base}; {len(st.pending)} pending")
    for m in st.migrations:
        when = f" {m.applied_at[:19]} by {m.applied_by} ({m.execution_ms} ms)" if m.applied_at else ""
        print(f"  {m.version:03d} {m.state:<14} {m.description}{when}")
    for w in st.warnings:
        print(f"warning: {w}")
