"""Benchmark: the migration engine versus the runbook's ``for f in *.sql; psql -f`` loop.

Why: the engine adds checksums, a lock and a history row per migration; operators should
see what that costs (or saves) next to what they run today. Same generated files, same
throwaway server (tests/pgcluster.py), a fresh database for each contender. Both sides are
timed end to end as an operator would run them (process start included).

Run from the repository root: ``venv/bin/python bench/migrations_bench.py``
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from migrations import Engine  # noqa: E402
from tests.pgcluster import Cluster, temporary_cluster  # noqa: E402

ROLE, PASSWORD = "bench_user", "bench-pw"
UP_COUNT, STATUS_COUNT = 200, 1000
STEP_TIMEOUT = 600  # seconds; keeps the whole run bounded on a loaded machine


def generate(directory: Path, count: int) -> None:
    """``count`` realistic small migrations: a table, an index, a few rows."""
    directory.mkdir(parents=True)
    for n in range(1, count + 1):
        (directory / f"{n:04d}_bench_table_{n}.sql").write_text(
            f"-- generated benchmark migration {n}\n"
            f"CREATE TABLE bench_{n} (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, "
            f"created_at TIMESTAMPTZ NOT NULL DEFAULT now());\n"
            f"CREATE INDEX bench_{n}_name ON bench_{n} (name);\n"
            f"INSERT INTO bench_{n} (name) SELECT 'row' || g FROM generate_series(1, 10) g;\n")


def env_for(pg: Cluster, dbname: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return env | {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": ROLE,
                  "PGDATABASE": dbname, "PGPASSWORD": PASSWORD}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, timeout=STEP_TIMEOUT)
    return time.perf_counter() - start


def psql_loop(pg: Cluster, env: dict[str, str], directory: Path) -> float:
    """The runbook 6.2 loop: one psql process per file, stop at the first failure."""
    start = time.perf_counter()
    for f in sorted(directory.glob("*.sql")):
        subprocess.run([pg.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(f)],
                       env=env, check=True, capture_output=True, timeout=STEP_TIMEOUT)
    return time.perf_counter() - start


def engine_cli(directory: Path, *verb: str) -> list[str]:
    return [sys.executable, "-m", "migrations", "--dir", str(directory), *verb]


def report(title: str, engine_s: float, psql_s: float) -> None:
    print(f"{title}\n  engine: {engine_s:8.2f} s\n  psql:   {psql_s:8.2f} s\n"
          f"  ratio engine/psql: {engine_s / psql_s:.2f}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="migbench-") as tmp, temporary_cluster() as pg:
        pg.create_role(ROLE, PASSWORD)
        up_dir, status_dir = Path(tmp) / "up", Path(tmp) / "status"
        generate(up_dir, UP_COUNT)
        generate(status_dir, STATUS_COUNT)
        print(f"PostgreSQL {pg.version}, {os.cpu_count()} CPUs; timings include process start")

        for name in ("up_engine", "up_psql", "status_db"):
            pg.create_database(name, owner=ROLE)
        e_up = timed(engine_cli(up_dir, "up"), env_for(pg, "up_engine"))
        p_up = psql_loop(pg, env_for(pg, "up_psql"), up_dir)
        report(f"up of {UP_COUNT} migrations (fresh databases)", e_up, p_up)

        Engine(pg.dsn("status_db", ROLE, PASSWORD), status_dir, 60).up()
        e_st = timed(engine_cli(status_dir, "status"), env_for(pg, "status_db"))
        # The runbook has no status; the nearest is listing the history table with psql.
        p_st = timed([pg.bin("psql"), "-X", "-c",
                      "SELECT version, description, applied_at FROM schema_version ORDER BY version"],
                     env_for(pg, "status_db"))
        report(f"status with {STATUS_COUNT} applied (engine also checksums {STATUS_COUNT} files)",
               e_st, p_st)
    return 0


if __name__ == "__main__":
    sys.exit(main())
