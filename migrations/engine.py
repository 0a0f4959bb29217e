"""The migration engine: validate, plan, apply and revert, with a lock and a history table.

Semantics follow the engines operators already trust (Flyway validate/baseline, Sqitch
revert, dbmate's no-transaction directive): everything is validated against the files and
the history *before* the first statement runs, each migration commits together with its
schema_version row, and only one runner works on a database at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from . import db
from .files import MigrationFile, MigrationFileError, check_gaps, discover, read_rollback, split_statements

BASELINE_DESCRIPTION = "<< baseline >>"
Say = Callable[[str], None]


class ValidationError(Exception):
    """Files and history disagree; nothing was applied. ``problems`` lists each finding."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("validation failed, nothing applied:\n  - " + "\n  - ".join(problems))
        self.problems = problems


class MigrationFailed(Exception):
    """A migration failed and was rolled back; ``done`` lists what this run completed first."""

    def __init__(self, message: str, version: int, done: list["StepResult"]) -> None:
        super().__init__(message)
        self.version = version
        self.done = done


@dataclass
class StepResult:
    """One migration applied or reverted by this run."""

    version: int
    description: str
    direction: str  # "up" or "down"
    transactional: bool
    execution_ms: int
    notices: list[str] = field(default_factory=list)


@dataclass
class MigrationState:
    """One row of ``status``: a file, a history row, or both."""

    version: int
    description: str
    state: str  # applied | pending | baseline | below-baseline | changed | missing-file | unverified
    checksum: str | None
    applied_at: str | None = None
    applied_by: str | None = None
    execution_ms: int | None = None
    transactional: bool | None = None
    has_rollback: bool | None = None


@dataclass
class Status:
    current_version: int
    baseline_version: int | None
    migrations: list[MigrationState]
    problems: list[str]
    warnings: list[str]

    @property
    def pending(self) -> list[int]:
        return [m.version for m in self.migrations if m.state == "pending"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pending"] = self.pending
        d["ok"] = not self.problems
        return d


class Engine:
    """Operations on one database; ``dsn`` None means libpq's PG* environment variables."""

    def __init__(self, dsn: str | None = None, directory: Path | None = None,
                 lock_timeout: float = 60.0, say: Say | None = None,
                 ddl_lock_timeout: str = "5s", statement_timeout: str = "10min") -> None:
        self.dsn = dsn
        self.directory = directory or Path(__file__).resolve().parent
        self.lock_timeout = lock_timeout
        # PostgreSQL's own timeouts for the migration session: DDL that would queue behind the
        # trading service's locks (and make every later query queue behind it) gives up instead.
        self.ddl_lock_timeout, self.statement_timeout = ddl_lock_timeout, statement_timeout
        self.say: Say = say or (lambda _msg: None)
        self._notices: list[str] = []

    # -- connection helpers -------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        conn = db.connect(self.dsn, notice=self._notices.append)
        conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                     (self.ddl_lock_timeout, self.statement_timeout))
        return conn

    def _locked(self, conn: psycopg.Connection) -> None:
        waited = db.acquire_lock(conn, self.lock_timeout, on_wait=self.say)
        if waited > 0.2:
            self.say(f"got the migration lock after {waited:.1f}s")

    # -- read-only operations -----------------------------------------------------------
    def status(self) -> Status:
        """Files versus history, with every problem found (never raises ValidationError)."""
        with self._connect() as conn:
            return self._status(conn)

    def _status(self, conn: psycopg.Connection) -> Status:
        history = db.read_history(conn)
        try:
            files = discover(self.directory)
        except MigrationFileError as exc:
            return Status(_current(history), _baseline(history), [], [str(exc)], [])
        return compare(files, history)

    def plan(self) -> list[MigrationFile]:
        """What ``up`` would apply, after full validation; changes nothing."""
        with self._connect() as conn:
            return self._validated_pending(conn)[0]

    def verify(self) -> Status:
        """Validate files and history; also require a rollback file for every migration."""
        st = self.status()
        for m in st.migrations:
            if m.has_rollback is False and m.state not in ("baseline", "below-baseline"):
                st.problems.append(f"version {m.version} has no rollback/{m.version:03d}_rollback.sql")
        return st

    def _validated_pending(self, conn: psycopg.Connection) -> tuple[list[MigrationFile], Status]:
        st = self._status(conn)
        if st.problems:
            raise ValidationError(st.problems)
        files = {f.version: f for f in discover(self.directory)}
        return [files[v] for v in st.pending], st

    # -- changing operations ------------------------------------------------------------
    def up(self, to: int | None = None) -> list[StepResult]:
        """Apply pending migrations (up to version ``to``), each atomically with its row."""
        with self._connect() as conn:
            self._locked(conn)
            try:
                db.ensure_history(conn)
                pending, _ = self._validated_pending(conn)
                if to is not None:
                    pending = [f for f in pending if f.version <= to]
                done: list[StepResult] = []
                for f in pending:
                    try:
                        done.append(self._apply(conn, f))
                    except psycopg.Error as exc:
                        raise MigrationFailed(_explain(f.name, f.text, exc, f.transactional),
                                              f.version, done) from None
                    self._report(done[-1])
                return done
            finally:
                db.release_lock(conn)

    def _report(self, step: StepResult) -> None:
        """One line per applied or reverted migration, then the notices it raised."""
        self.say(_line(step))
        for notice in step.notices:
            self.say(f"    notice: {notice}")

    def _apply(self, conn: psycopg.Connection, f: MigrationFile) -> StepResult:
        self._notices.clear()
        start = time.perf_counter()
        if f.transactional:
            with conn.transaction():
                _run_statements(conn, f.text)
                ms = _ms(start)
                db.insert_history(conn, f.version, f.description, f.checksum, ms)
        else:
            _run_statements(conn, f.text)
            ms = _ms(start)
            db.insert_history(conn, f.version, f.description, f.checksum, ms)
        return StepResult(f.version, f.description, "up", f.transactional, ms, list(self._notices))

    def down(self, to: int) -> list[StepResult]:
        """Revert applied migrations above ``to``, newest first, each with its row delete."""
        if to < 0:
            raise ValueError("--to must be >= 0")
        with self._connect() as conn:
            self._locked(conn)
            try:
                db.ensure_history(conn)
                _, st = self._validated_pending(conn)
                targets = sorted((m for m in st.migrations if m.state in ("applied", "unverified")
                                  and m.version > to), key=lambda m: -m.version)
                if st.baseline_version is not None and to < st.baseline_version:
                    raise ValidationError([f"cannot go below the baseline (version "
                                           f"{st.baseline_version}): no scripts ran for it"])
                files = {f.version: f for f in discover(self.directory)}
                missing = [m.version for m in targets if files[m.version].rollback_path is None]
                if missing:
                    raise ValidationError([f"no rollback/{v:03d}_rollback.sql for version {v}"
                                           for v in missing])
                done: list[StepResult] = []
                for m in targets:
                    f = files[m.version]
                    assert f.rollback_path is not None
                    try:
                        text, directives = read_rollback(f.rollback_path)
                    except MigrationFileError as exc:
                        raise ValidationError([str(exc)]) from None
                    tx = "no-transaction" not in directives
                    try:
                        done.append(self._revert(conn, f, text, tx))
                    except psycopg.Error as exc:
                        raise MigrationFailed(_explain(f.rollback_path.name, text, exc, tx),
                                              f.version, done) from None
                    self._report(done[-1])
                return done
            finally:
                db.release_lock(conn)

    def _revert(self, conn: psycopg.Connection, f: MigrationFile, text: str,
                transactional: bool) -> StepResult:
        self._notices.clear()
        start = time.perf_counter()
        if transactional:
            with conn.transaction():
                _run_statements(conn, text)
                db.delete_history(conn, f.version)
        else:
            _run_statements(conn, text)
            db.delete_history(conn, f.version)
        return StepResult(f.version, f.description, "down", transactional, _ms(start),
                          list(self._notices))

    def baseline(self, version: int) -> None:
        """Mark an existing database (built by the runbook's psql loop) as being at ``version``.

        Only on an empty history: one row, no checksum; files up to ``version`` are then
        never run, and later ones apply normally.
        """
        if version < 1:
            raise ValueError("--version must be >= 1")
        with self._connect() as conn:
            self._locked(conn)
            try:
                db.ensure_history(conn)
                rows = db.read_history(conn)
                if rows:
                    raise ValidationError([f"schema_version already has {len(rows)} row(s) "
                                           f"(current version {_current(rows)}); baseline is only "
                                           f"for a database with no history"])
                files = discover(self.directory)
                if files and version > files[-1].version:
                    raise ValidationError([f"baseline version {version} is above the newest "
                                           f"file ({files[-1].name})"])
                with conn.transaction():
                    db.insert_history(conn, version, BASELINE_DESCRIPTION, None, None)
                self.say(f"baseline: database marked as version {version}")
            finally:
                db.release_lock(conn)


def compare(files: list[MigrationFile], history: list[db.AppliedRow]) -> Status:
    """Pure comparison of files and history: state per version and problems found."""
    problems: list[str] = []
    warnings: list[str] = []
    by_file = {f.version: f for f in files}
    by_row = {r.version: r for r in history}
    base = _baseline(history)
    floor = base or 0
    try:
        check_gaps(files, floor)
    except MigrationFileError as exc:
        problems.append(str(exc))
    top = max(by_row, default=0)
    states: list[MigrationState] = []
    for v in sorted(set(by_file) | set(by_row)):
        f, r = by_file.get(v), by_row.get(v)
        st = MigrationState(v, (f.description if f else r.description if r else ""), "pending",
                            f.checksum if f else None)
        if f:
            st.transactional, st.has_rollback = f.transactional, f.rollback_path is not None
        if r:
            st.applied_at, st.applied_by = r.applied_at.isoformat(), r.applied_by
            st.execution_ms = r.execution_ms
        if r and base is not None and v == base and r.description == BASELINE_DESCRIPTION:
            st.state = "baseline"
        elif r is None and v <= floor:
            st.state = "below-baseline"
        elif r and f is None:
            st.state = "missing-file"
            problems.append(f"version {v} ('{r.description}') is applied but its file is missing "
                            f"from {files[0].path.parent if files else 'the migrations directory'}")
        elif r and f and r.checksum is None:
            st.state = "unverified"
            warnings.append(f"version {v} was applied without a checksum (runbook psql era); "
                            f"its file cannot be verified")
        elif r and f and r.checksum != f.checksum:
            st.state = "changed"
            problems.append(f"{f.name} was changed after it was applied (checksum "
                            f"{(r.checksum or '')[:12]}... in schema_version, {f.checksum[:12]}... "
                            f"on disk); restore the original file and add a new migration instead")
        elif r:
            st.state = "applied"
        elif v < top:
            problems.append(f"{f.name if f else v} is not applied but later version {top} is "
                            f"(out-of-order history); refusing to guess")
        states.append(st)
    return Status(_current(history), base, states, problems, warnings)


def _current(history: list[db.AppliedRow]) -> int:
    return max((r.version for r in history), default=0)


def _baseline(history: list[db.AppliedRow]) -> int | None:
    rows = [r.version for r in history if r.description == BASELINE_DESCRIPTION and r.checksum is None]
    return max(rows) if rows else None


def _run_statements(conn: psycopg.Connection, text: str) -> None:
    """Run a script statement by statement (inside the caller's transaction, if any).

    One statement per round trip so a failure names its line. In a no-transaction script
    (autocommit) each statement commits on its own. Before each CREATE INDEX CONCURRENTLY an INVALID index of the same name (left by an
    earlier failed build) is dropped, since IF NOT EXISTS would silently keep it; after a
    failed build the INVALID index it leaves is dropped too.
    """
    for stmt in split_statements(text):
        index = stmt.concurrent_index
        if index and (bad := db.invalid_index(conn, index)):
            db.drop_index_concurrently(conn, bad)
        try:
            conn.execute(stmt.sql)
        except psycopg.Error as exc:
            if index and not conn.broken and (bad := db.invalid_index(conn, index)):
                db.drop_index_concurrently(conn, bad)
            exc.add_note(f"statement at line {stmt.line}")
            raise


def _explain(name: str, text: str, exc: psycopg.Error, transactional: bool) -> str:
    """A one-paragraph error naming the file, line and what state the database is in."""
    line = ""
    notes = [n for n in getattr(exc, "__notes__", []) if n.startswith("statement at line")]
    if notes:
        line = " " + notes[0].replace("statement at ", "")
    elif exc.diag.statement_position:
        line = f" line {text.count(chr(10), 0, int(exc.diag.statement_position) - 1) + 1}"
    msg = (exc.diag.message_primary or str(exc)).strip()
    if exc.sqlstate == "55P03":
        msg += (" (lock_timeout: another session, such as the trading service, holds a lock this migration "
                "needs; it gave up rather than stall trading behind it)")
    elif exc.sqlstate == "57014":
        msg += " (statement_timeout: the statement ran longer than the migration session allows)"
    state = ("rolled back as a whole, nothing of it remains" if transactional else
             "ran outside a transaction: statements before the failing one stay applied and "
             "will be re-run (they must be idempotent); no INVALID index left")
    return f"{name}{line}: {msg} [{exc.sqlstate or '?'}]; {state}; later migrations not applied"


def _ms(start: float) -> int:
    return int(round((time.perf_counter() - start) * 1000))


def _line(step: StepResult) -> str:
    arrow = "applied " if step.direction == "up" else "reverted"
    tx = "" if step.transactional else " (no transaction)"
    return f"{arrow} {step.version:03d} {step.description}{tx} in {step.execution_ms} ms"
