"""Migration engine tests against a real PostgreSQL (tests/pgcluster.py), no mocks.

One cluster per module, one fresh database per test: fast, and tests cannot leak state.
The CLI is exercised as operators and the deploy tool use it (a subprocess, exit codes,
``--json``); the password reaches it only through PGPASSWORD, never argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from migrations import Engine, split_statements
from migrations.backup import dump_command, restore_command
from tests import pgcluster
from tests.pgcluster import Cluster, temporary_cluster

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "migrations"
ROLE, PASSWORD = "hft_user", "Tr4d1ng:pw'with\\odd chars"
# The repository's migrations: tests add theirs after the newest (NEXT), whatever its number.
VERSIONS = sorted(int(f.name[:3]) for f in SRC.glob("[0-9][0-9][0-9]_*.sql"))
LATEST = VERSIONS[-1]
NEXT = LATEST + 1
TABLES = {"strategies", "positions", "orders", "fills", "market_data", "risk_limits",
          "killswitch_events", "strategy_metrics", "trading_lease", "schema_version"}
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with temporary_cluster() as cluster:
        cluster.create_role(ROLE, PASSWORD)
        yield cluster


@dataclass
class Db:
    """A fresh database owned by hft_user, and ways to drive the engine against it."""

    pg: Cluster
    name: str
    tmp: Path

    @property
    def dsn(self) -> str:  # no password: it comes from PGPASSWORD, as in production
        return self.pg.dsn(self.name, user=ROLE)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return env | {"PGPASSWORD": PASSWORD}

    def cli(self, *args: str, mig_dir: Path | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "migrations", "--dsn", self.dsn]
        if mig_dir is not None:
            argv += ["--dir", str(mig_dir)]
        return subprocess.run([*argv, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def popen(self, *args: str, mig_dir: Path | None = None) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "migrations", "--dsn", self.dsn]
        if mig_dir is not None:
            argv += ["--dir", str(mig_dir)]
        return subprocess.Popen([*argv, *args], cwd=ROOT, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def engine(self, mig_dir: Path | None = None, lock_timeout: float = 30) -> Engine:
        return Engine(self.pg.dsn(self.name, ROLE, PASSWORD), mig_dir, lock_timeout)

    def query(self, sql: str, params: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.pg.dsn(self.name, ROLE, PASSWORD), autocommit=True) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def tables(self) -> set[str]:
        return {r[0] for r in self.query(  # type: ignore[misc]
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def versions(self) -> list[int]:
        if "schema_version" not in self.tables():
            return []
        return [int(r[0]) for r in self.query("SELECT version FROM schema_version ORDER BY 1")]  # type: ignore[call-overload]

    def mig_copy(self) -> Path:
        """A private copy of the real migrations directory to add or break files in."""
        dest = self.tmp / "mig"
        shutil.copytree(SRC, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        return dest


@pytest.fixture
def db(pg: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Db]:
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    pg.create_database(name, owner=ROLE)
    yield Db(pg, name, tmp_path)
    pg.drop_database(name)


def js(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), f"no JSON on stdout; stderr: {proc.stderr}"
    return json.loads(proc.stdout)


# -- the happy path ------------------------------------------------------------------------

def test_fresh_apply_creates_contract_schema(db: Db) -> None:
    proc = db.cli("--json", "up")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = js(proc)
    assert [s["version"] for s in doc["applied"]] == VERSIONS
    assert doc["current_version"] == LATEST and doc["ok"] is True
    assert [s["transactional"] for s in doc["applied"]] == [v != 3 for v in VERSIONS]
    assert any("plain table" in n for s in doc["applied"] for n in s["notices"])
    assert TABLES <= db.tables()
    cols = db.query("SELECT column_name, data_type, numeric_precision, numeric_scale "
                    "FROM information_schema.columns WHERE table_name = 'orders' "
                    "ORDER BY ordinal_position")
    assert [c[0] for c in cols] == ["id", "client_order_id", "strategy_id", "exchange", "symbol",
                                    "side", "quantity", "price", "status", "paper", "created_at",
                                    "updated_at", "epoch"]
    assert ("quantity", "numeric", 28, 10) in cols
    pk = db.query("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                  "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'fills'::regclass AND i.indisprimary")
    assert {r[0] for r in pk} == {"id", "filled_at"}
    rows = db.query("SELECT version, checksum, applied_by, execution_ms FROM schema_version ORDER BY 1")
    for version, checksum, applied_by, ms in rows:
        f = next(SRC.glob(f"{version:03d}_*.sql"))
        assert checksum == hashlib.sha256(f.read_bytes()).hexdigest()
        assert str(applied_by).startswith(ROLE) and ms is not None
    assert db.query("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]


def test_rerun_is_noop_and_plan_is_empty(db: Db) -> None:
    assert db.cli("up").returncode == 0
    before = db.query("SELECT version, applied_at FROM schema_version ORDER BY 1")
    again = db.cli("--json", "up")
    assert again.returncode == 0 and js(again)["applied"] == []
    assert db.query("SELECT version, applied_at FROM schema_version ORDER BY 1") == before
    plan = db.cli("--json", "plan")
    assert plan.returncode == 0 and js(plan)["pending"] == []
    assert db.cli("verify").returncode == 0


def test_plan_changes_nothing(db: Db) -> None:
    proc = db.cli("plan")
    assert proc.returncode == 0 and "would apply 003 create indexes (no transaction)" in proc.stdout
    assert db.tables() == set()


def test_up_to_then_rest_and_human_output(db: Db) -> None:
    proc = db.cli("up", "--to", "2")
    assert proc.returncode == 0
    assert db.versions() == [1, 2]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("applied")]
    assert len(lines) == 2 and lines[0].endswith(" ms")
    st = js(db.cli("--json", "status"))
    assert st["current_version"] == 2 and st["pending"] == VERSIONS[2:]


# -- failures stop everything ----------------------------------------------------------------

def test_failing_migration_rolled_back_whole(db: Db) -> None:
    d = db.mig_copy()
    (d / f"{NEXT:03d}_half_way.sql").write_text(
        "CREATE TABLE t6 (x int);\nINSERT INTO t6 VALUES (1);\nSELECT 1 / 0;\n")
    (d / f"{NEXT + 1:03d}_after.sql").write_text("CREATE TABLE t8 (x int);\n")
    proc = db.cli("--json", "up", mig_dir=d)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    doc = js(proc)
    assert doc["failed_version"] == NEXT and doc["error"]["kind"] == "migration"
    assert f"{NEXT:03d}_half_way.sql line 3" in doc["error"]["message"]
    assert "division by zero" in doc["error"]["message"]
    assert [s["version"] for s in doc["applied"]] == VERSIONS
    assert "t6" not in db.tables() and "t8" not in db.tables()
    assert db.versions() == VERSIONS


def test_failed_concurrent_index_leaves_no_invalid_index(db: Db) -> None:
    assert db.cli("up").returncode == 0
    db.query("INSERT INTO positions (exchange, symbol) VALUES ('x', 'a'), ('x', 'b')")
    d = db.mig_copy()
    (d / f"{NEXT:03d}_unique_qty.sql").write_text(
        "-- hft:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_uq "
        "ON positions (quantity);\n")
    proc = db.cli("up", mig_dir=d)
    assert proc.returncode == 4 and "could not create unique index" in proc.stderr
    assert db.query("SELECT count(*) FROM pg_class WHERE relname = 'idx_uq'") == [(0,)]
    assert db.versions() == VERSIONS
    db.query("UPDATE positions SET quantity = 1 WHERE symbol = 'b'")
    assert db.cli("up", mig_dir=d).returncode == 0
    assert db.query("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_uq'::regclass") == [(True,)]


@pytest.mark.parametrize("breakage, expect", [
    ("tamper", "was changed after it was applied"),
    ("missing", "is applied but its file is missing"),
])
def test_applied_file_changed_or_missing_stops_run(db: Db, breakage: str, expect: str) -> None:
    d = db.mig_copy()
    assert db.cli("up", "--to", "3", mig_dir=d).returncode == 0
    target = d / "002_create_hypertables.sql"
    if breakage == "tamper":
        target.write_text(target.read_text() + "\n-- harmless looking edit\n")
    else:
        target.unlink()
    for verb in ("up", "plan", "verify", "status"):
        proc = db.cli("--json", verb, mig_dir=d)
        assert proc.returncode == 3, (verb, proc.stdout)
        assert any(expect in p for p in js(proc)["error"]["problems"]), proc.stdout
    assert db.versions() == [1, 2, 3]
    assert "risk_limits" not in db.tables()


@pytest.mark.parametrize("extra, expect", [
    (f"{NEXT + 1:03d}_skips_one.sql", f"gap in migration versions: expected version {NEXT}"),
    ("005_second_five.sql", "duplicate migration version(s): 5"),
])
def test_gap_or_duplicate_applies_nothing(db: Db, extra: str, expect: str) -> None:
    d = db.mig_copy()
    (d / extra).write_text("CREATE TABLE should_not_exist (x int);\n")
    proc = db.cli("--json", "up", mig_dir=d)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert expect in js(proc)["error"]["message"]
    assert db.tables() <= {"schema_version"} and db.versions() == []


def test_runbook_style_file_with_begin_commit_is_refused(db: Db) -> None:
    d = db.mig_copy()
    (d / f"{NEXT:03d}_runbook_style.sql").write_text(
        "-- Migration: copied from runbook 6.1\nBEGIN;\nCREATE TABLE x6 (a int);\n"
        f"INSERT INTO schema_version (version, description, applied_at) VALUES ({NEXT}, 'x', NOW());\n"
        "COMMIT;\n")
    proc = db.cli("up", mig_dir=d)
    assert proc.returncode == 3
    assert f"{NEXT:03d}_runbook_style.sql line 2: 'BEGIN' found" in proc.stderr
    assert db.versions() == []


# -- two runners -------------------------------------------------------------------------

def test_two_concurrent_runners_apply_once(db: Db) -> None:
    d = db.mig_copy()
    (d / f"{NEXT:03d}_slow.sql").write_text("SELECT pg_sleep(1.5);\nCREATE TABLE slow7 (x int);\n")
    first, second = db.popen("--json", "up", mig_dir=d), db.popen("--json", "up", mig_dir=d)
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    applied = [s["version"] for out, _ in outs for s in json.loads(out)["applied"]]
    assert sorted(applied) == VERSIONS + [NEXT]  # each version applied exactly once
    assert db.versions() == VERSIONS + [NEXT]


def test_second_runner_times_out_with_clear_message(db: Db) -> None:
    d = db.mig_copy()
    (d / f"{NEXT:03d}_slow.sql").write_text("SELECT pg_sleep(3);\n")
    assert db.cli("up", mig_dir=SRC).returncode == 0
    holder = db.popen("up", mig_dir=d)
    time.sleep(1.0)
    start = time.monotonic()
    proc = db.cli("--json", "--lock-timeout", "0.5", "up", mig_dir=d)
    assert time.monotonic() - start < 10
    assert proc.returncode == 5, proc.stdout
    msg = js(proc)["error"]["message"]
    assert "another migration runner holds the lock" in msg and "hft-migrations" in msg
    assert holder.wait(timeout=60) == 0


def test_no_transaction_migration_with_concurrent_runner_no_deadlock(db: Db) -> None:
    """Runner A builds an index CONCURRENTLY while runner B waits for the lock.

    CREATE INDEX CONCURRENTLY waits for every open transaction; B polls with
    pg_try_advisory_lock outside any transaction, so A finishes and B then finds nothing to do.
    """
    d = db.mig_copy()
    assert db.cli("up", mig_dir=d).returncode == 0
    db.query("INSERT INTO orders (client_order_id, exchange, symbol, side, quantity, price, status) "
             "SELECT 'c' || g, 'x', 's' || (g % 50), 'buy', 1, 1, 'new' FROM generate_series(1, 20000) g")
    (d / f"{NEXT:03d}_cic.sql").write_text(
        "-- hft:no-transaction\nSELECT pg_sleep(1);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_orders_symbol_price ON orders (symbol, price);\n")
    a = db.popen("--json", "up", mig_dir=d)
    time.sleep(0.5)
    b = db.popen("--json", "--lock-timeout", "30", "up", mig_dir=d)
    start = time.monotonic()
    out_a, err_a = a.communicate(timeout=30)
    out_b, err_b = b.communicate(timeout=30)
    assert time.monotonic() - start < 25
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    assert [s["version"] for s in json.loads(out_a)["applied"]] == [NEXT]
    assert json.loads(out_b)["applied"] == []
    assert db.query("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                    "'idx_orders_symbol_price'::regclass") == [(True,)]


def test_engine_threads_share_nothing_but_the_lock(db: Db) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            results.append([s.version for s in db.engine().up()])
        except Exception as exc:  # noqa: BLE001 - reported through the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(v for r in results for v in r) == VERSIONS, results  # type: ignore[union-attr]


# -- down, baseline ----------------------------------------------------------------------

def test_down_to_n_and_up_again(db: Db) -> None:
    assert db.cli("up").returncode == 0
    sums = db.query("SELECT version, checksum FROM schema_version ORDER BY 1")
    proc = db.cli("--json", "down", "--to", "2")
    assert proc.returncode == 0, proc.stderr
    assert [s["version"] for s in js(proc)["reverted"]] == VERSIONS[:1:-1]
    assert db.versions() == [1, 2]
    assert not {"risk_limits", "killswitch_events", "strategy_metrics", "trading_lease"} & db.tables()
    assert db.query("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'idx_orders_%'") == [(0,)]
    assert db.cli("up").returncode == 0
    assert db.query("SELECT version, checksum FROM schema_version ORDER BY 1") == sums
    assert db.cli("down", "--to", "0").returncode == 0
    assert db.tables() == {"schema_version"} and db.versions() == []


def test_baseline_adopts_runbook_database(db: Db) -> None:
    for n in ("001_initial_schema", "002_create_hypertables", "003_create_indexes"):
        subprocess.run([db.pg.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.dsn,
                        "-f", str(SRC / f"{n}.sql")], env=db.env, check=True, capture_output=True)
    db.query("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
             "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # the runbook's older shape
    assert db.cli("baseline", "--version", "3").returncode == 0
    doc = js(db.cli("--json", "up"))
    assert [s["version"] for s in doc["applied"]] == VERSIONS[3:]
    st = js(db.cli("--json", "status"))
    assert [m["state"] for m in st["migrations"]] == [
        "below-baseline", "below-baseline", "baseline"] + ["applied"] * (LATEST - 3)
    again = db.cli("--json", "baseline", "--version", "3")
    assert again.returncode == 3 and "only for a database with no history" in again.stdout
    assert db.cli("down", "--to", "1").returncode == 3  # nothing ran below the baseline


# -- backup and restore, secrets ---------------------------------------------------------------

def test_backup_change_restore_brings_data_back(db: Db) -> None:
    assert db.cli("up").returncode == 0
    db.query("INSERT INTO strategies (id, name, config) VALUES ('alpha', 'Alpha', '{\"k\": 1}')")
    proc = db.cli("--json", "backup", "--backup-dir", str(db.tmp / "bk"))
    assert proc.returncode == 0, proc.stderr
    dump = Path(js(proc)["file"])
    assert dump.parent == db.tmp / "bk" and dump.name.startswith(f"{db.name}_")
    assert len(dump.name) == len(f"{db.name}_YYYYMMDD_HHMMSS.dump")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    db.query("UPDATE strategies SET name = 'changed'")
    db.query("INSERT INTO strategies (id, name) VALUES ('beta', 'Beta')")
    assert db.cli("down", "--to", "4").returncode == 0
    restored = db.cli("restore", str(dump))
    assert restored.returncode == 0, restored.stderr
    assert db.query("SELECT id, name, config FROM strategies") == [("alpha", "Alpha", {"k": 1})]
    assert db.versions() == VERSIONS


def test_password_never_in_argv_or_output(db: Db) -> None:
    """Spy on the real pg_dump child: a wrapper records its argv and environment."""
    spy = db.tmp / "bin"
    spy.mkdir()
    log = db.tmp / "argv.log"
    for tool in ("pg_dump", "pg_restore"):
        (spy / tool).write_text(
            f"#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" >> {log}\n"
            f"echo \"PGPASSWORD=${{PGPASSWORD:-unset}}\" >> {log}\n"
            f"exec {db.pg.bin(tool)} \"$@\"\n")
        (spy / tool).chmod(0o755)
    assert db.cli("up").returncode == 0
    out = db.cli("--json", "backup", "--backup-dir", str(db.tmp / "bk"), "--pg-bin-dir", str(spy))
    assert out.returncode == 0, out.stderr
    back = db.cli("restore", js(out)["file"], "--pg-bin-dir", str(spy))
    assert back.returncode == 0, back.stderr
    recorded = log.read_text()
    assert "pg_dump" in recorded and "pg_restore" in recorded
    assert PASSWORD not in recorded and "PGPASSWORD=unset" in recorded
    assert not list(Path("/tmp").glob("hft-mig-*.pgpass"))  # passfile removed
    for argv in (dump_command("pg_dump", Path("x")), restore_command("pg_restore", Path("x"), "d")):
        assert not any(PASSWORD in a for a in argv)
    everything = out.stdout + out.stderr + back.stdout + back.stderr
    wrong = subprocess.run([sys.executable, "-m", "migrations", "--dsn", db.dsn, "status"],
                           cwd=ROOT, env=db.env | {"PGPASSWORD": PASSWORD + "x"},
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 6 and "password authentication failed" in wrong.stderr
    refused = db.cli("--dsn", db.pg.dsn(db.name, ROLE, PASSWORD), "status")
    assert refused.returncode == 2 and "must not contain a password" in refused.stderr
    everything += wrong.stdout + wrong.stderr + refused.stdout + refused.stderr
    assert PASSWORD not in everything


# -- packaging, parsing, the cluster helper ----------------------------------------------------

def test_standalone_copy_runs_without_the_repository(db: Db) -> None:
    host = db.tmp / "dbhost"
    shutil.copytree(SRC, host / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "migrations", "--json", "up"], cwd=host,
                          env=db.env | {"PGHOST": db.pg.host, "PGPORT": str(db.pg.port),
                                        "PGUSER": ROLE, "PGDATABASE": db.name,
                                        "PYTHONPATH": "", "PYTHONSAFEPATH": ""},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(js(proc)["applied"]) == LATEST


def test_help_documents_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "migrations", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    for line in ("3  validation failed", "4  a migration failed", "5  lock timeout"):
        assert line in out


def test_split_statements_handles_quotes_dollars_comments_atomic() -> None:
    text = ("-- lead; comment\nCREATE TABLE a (s text DEFAULT 'x;y''z');\n"
            "/* block; /* nested; */ */ SELECT E'\\';', \"we;ird\";\n"
            "DO $body$ BEGIN PERFORM 1; END $body$;\n"
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; "
            "SELECT CASE WHEN true THEN 2 END; END;\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"Idx\" ON a (s)")
    stmts = split_statements(text)
    assert [s.first_word for s in stmts] == ["CREATE", "SELECT", "DO", "CREATE", "CREATE"]
    assert [s.line for s in stmts] == [2, 3, 4, 5, 6]
    assert stmts[4].concurrent_index == '"Idx"' and stmts[0].concurrent_index is None


def test_pgcluster_names_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "PG_ROOT", tmp_path / "nothing")
    with pytest.raises(pgcluster.PgClusterError) as err:
        pgcluster.find_bin_dir()
    assert "'postgresql'" in str(err.value)
    assert "tools/install-apt-deps.sh deps/apt/migrations.txt" in str(err.value)


def test_ddl_behind_a_trading_lock_gives_up_within_lock_timeout(db: Db) -> None:
    """Runbook 6.3: a migration never stalls trading. ALTER TABLE needs an exclusive lock; while a
    session (the trading service) holds a transaction on the table, the migration gives up after
    lock_timeout instead of queueing, so the trading session and every later query go on."""
    assert db.cli("up").returncode == 0
    d = db.mig_copy()
    nxt = max(int(p.name[:3]) for p in d.glob("[0-9][0-9][0-9]_*.sql")) + 1
    (d / f"{nxt:03d}_add_order_note.sql").write_text("ALTER TABLE orders ADD COLUMN note TEXT;\n")
    dsn = db.pg.dsn(db.name, ROLE, PASSWORD)
    with psycopg.connect(dsn) as trading:
        trading.execute("INSERT INTO orders (client_order_id, exchange, symbol, side, quantity, price, status) "
                        "VALUES ('lock-1', 'coinbase', 'BTC-USD', 'buy', 1, 1, 'working')")
        t0 = time.monotonic()
        proc = db.cli("--json", "--ddl-lock-timeout", "1s", "up", mig_dir=d)
        waited = time.monotonic() - t0
        assert proc.returncode != 0
        message = js(proc)["error"]["message"]
        assert "lock_timeout" in message and "[55P03]" in message, message
        assert waited < 15, f"the migration waited {waited:.1f}s"
        # The trading session was never blocked: it goes on writing and commits.
        trading.execute("INSERT INTO orders (client_order_id, exchange, symbol, side, quantity, price, status) "
                        "VALUES ('lock-2', 'coinbase', 'BTC-USD', 'buy', 1, 1, 'working')")
    assert db.query("SELECT count(*) FROM orders WHERE client_order_id LIKE 'lock-%'") == [(2,)]
    assert nxt not in db.versions()
    assert "note" not in {r[0] for r in db.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'")}


# -- what a dump holds, restores the code cannot run on, listing and retention (runbook 5.2) --

def test_restore_refuses_a_dump_newer_than_the_code_before_touching_the_database(db: Db) -> None:
    newer = db.mig_copy()
    (newer / f"{NEXT:03d}_future.sql").write_text("CREATE TABLE future_thing (id int);\n")
    (newer / "rollback" / f"{NEXT:03d}_rollback.sql").write_text("DROP TABLE future_thing;\n")
    assert db.cli("up", mig_dir=newer).returncode == 0
    dump = Path(js(db.cli("--json", "backup", "--backup-dir", str(db.tmp / "bk")))["file"])
    assert db.cli("down", "--to", str(LATEST), mig_dir=newer).returncode == 0
    db.query("INSERT INTO strategies (id, name) VALUES ('after_dump', 'kept')")
    seen = js(db.cli("--json", "inspect", str(dump)))
    assert (seen["dump_version"], seen["code_version"]) == (NEXT, LATEST)
    assert seen["dump_versions"] == [*VERSIONS, NEXT]
    refused = db.cli("--json", "restore", str(dump))
    assert refused.returncode == 3, refused.stdout
    assert f"newer than the code: its schema_version holds version(s) {NEXT}" in js(refused)["error"]["message"]
    # nothing restored: the row written after the dump is still there, the schema is the code's
    assert db.query("SELECT name FROM strategies WHERE id = 'after_dump'") == [("kept",)]
    assert db.versions() == VERSIONS and "future_thing" not in db.tables()
    # the code that has the migration restores it
    assert db.cli("restore", str(dump), mig_dir=newer).returncode == 0
    assert "future_thing" in db.tables() and db.versions() == [*VERSIONS, NEXT]


def test_restore_refuses_a_dump_below_the_oldest_schema_the_code_runs_on(db: Db) -> None:
    assert db.cli("up", "--to", "3").returncode == 0
    dump = Path(js(db.cli("--json", "backup", "--backup-dir", str(db.tmp / "bk")))["file"])
    assert db.cli("up").returncode == 0
    refused = db.cli("--json", "restore", str(dump), "--min-version", "6")
    assert refused.returncode == 3
    assert "holds schema version 3, below 6" in js(refused)["error"]["message"]
    assert db.versions() == VERSIONS
    empty = Path(js(db.cli("--json", "backup", "--backup-dir", str(db.tmp / "bk2")))["file"])
    assert js(db.cli("--json", "inspect", str(empty)))["dump_version"] == LATEST


def test_backups_listed_newest_first_and_pruned_by_count_and_age(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone
    now = datetime.now(timezone.utc)
    made = {}
    for days, size in ((0, 10), (1, 20), (3, 30), (10, 40), (20, 50)):
        name = f"hft_db_{now - timedelta(days=days, minutes=1):%Y%m%d_%H%M%S}.dump"
        (tmp_path / name).write_bytes(b"x" * size)
        made[days] = name
    (tmp_path / "notes.txt").write_text("not a backup")
    (tmp_path / "hft_db_20250101_000000.dump.partial").write_text("an interrupted dump")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "migrations", "--json", "backups", "--backup-dir",
                               str(tmp_path), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)

    listed = js(run())["backups"]
    assert [b["file"] for b in listed] == [made[d] for d in (0, 1, 3, 10, 20)]
    assert [b["bytes"] for b in listed] == [10, 20, 30, 40, 50]
    assert 86400 <= listed[1]["age_seconds"] < 86400 + 300
    human = subprocess.run([sys.executable, "-m", "migrations", "backups", "--backup-dir", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert f"{made[1]}  1d0h old  20 B" in human
    # keep the newest 2 whatever their age; of the others, those at least 5 days old go
    pruned = js(run("--prune", "--keep", "2", "--max-age-days", "5"))
    assert [b["file"] for b in pruned["pruned"]] == [made[10], made[20]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [made[0], made[1], made[3], "notes.txt", "hft_db_20250101_000000.dump.partial"])
    # age 0: the count alone decides; keep 0 is refused (the newest backup is never pruned)
    assert [b["file"] for b in js(run("--prune", "--keep", "1", "--max-age-days", "0"))["pruned"]] == [made[1], made[3]]
    assert run("--prune", "--keep", "0").returncode == 1
    assert [b["file"] for b in js(run())["backups"]] == [made[0]]
