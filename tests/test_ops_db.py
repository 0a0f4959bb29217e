"""Schema target, backup retention and the on-call database commands, without hosts: the
settings as `pulumi preview` reads them, and the steps the Migrations component registers
(under Pulumi mocks, from their recorded inputs). The same paths run for real in
tests/test_lab_stack.py (schema rollback, ops restore, ops backups) and tests/test_migrations.py."""
from __future__ import annotations

import pytest

from components.config import ConfigError, parse
from components.database import migration_versions
from tests.test_components_unit import commands, run_stack
from tests.test_config import stack_values

LATEST = migration_versions()[-1]


def with_database(**db) -> dict:
    values = stack_values("staging")
    values.setdefault("database", {}).update(db)
    return values


@pytest.mark.parametrize("key,value,expect", [
    ("schemaVersion", 0, f"hft:database.schemaVersion = 0: expected a migration version in migrations/: "
                         f"an integer from 1 to {LATEST}"),
    ("schemaVersion", LATEST + 1, f"hft:database.schemaVersion = {LATEST + 1}: expected a migration version in "
                                  f"migrations/: an integer from 1 to {LATEST}"),
    ("schemaVersion", "6", 'hft:database.schemaVersion = "6": expected a migration version'),
    ("schemaVersion", True, "hft:database.schemaVersion = true: expected a migration version"),
    ("schemaVersion", 3, f"hft:database.schemaVersion = 3: expected a migration version from 6 to {LATEST} "
                         f"(the deployed releases need at least 6, hft:database.minSchemaVersion; migrations/ "
                         f"holds 1 to {LATEST})"),
    ("minSchemaVersion", LATEST + 5, f"hft:database.minSchemaVersion = {LATEST + 5}: expected a migration version"),
    ("backupRetentionCount", 0, "hft:database.backupRetentionCount = 0: expected an integer from 1 to 10000"),
    ("backupRetentionDays", -1, "hft:database.backupRetentionDays = -1: expected an integer from 0 to 3650"),
])
def test_a_bad_schema_target_or_retention_is_refused_with_key_value_and_allowed(key, value, expect) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_database(**{key: value}))
    assert expect in str(err.value), str(err.value)


def test_the_schema_target_defaults_to_the_newest_migration_and_the_runbook_retention() -> None:
    db = parse(stack_values("staging")).database
    assert (db.schema_version, db.target_version, db.min_schema_version) == (None, LATEST, 6)
    assert (db.backup_retention_count, db.backup_retention_days) == (10, 30)
    assert parse(with_database(schemaVersion=6, minSchemaVersion=5)).database.target_version == 6


def test_a_lowered_target_stops_the_apps_primary_first_migrates_and_starts_them(tmp_path) -> None:
    values = stack_values("lab")
    values.setdefault("database", {}).update(schemaVersion=6, backupRetentionCount=3, backupRetentionDays=0)
    mocks, d = run_stack("lab", tmp_path, values)
    cmds = commands(mocks)
    order = [r.name for r in mocks.resources if r.typ == "command:remote:Command"]
    mig = d.migrations
    assert mig.expected_version == 6          # what the validation then expects the service to report
    assert "export HFT_SCHEMA_TARGET=6" in cmds["hft_db-migrate"]["create"]
    assert "export HFT_BACKUP_KEEP=3" in cmds["hft_db-migrate"]["create"]
    assert "export HFT_BACKUP_KEEP_DAYS=0" in cmds["hft_db-migrate"]["create"]
    stops = [n for n in order if n.startswith("hft_db-schema-stop-")]
    starts = [n for n in order if n.startswith("hft_db-schema-start-")]
    assert stops == ["hft_db-schema-stop-blue", "hft_db-schema-stop-green"]    # blue is the lab's primary
    assert starts == ["hft_db-schema-start-blue", "hft_db-schema-start-green"]
    assert order.index(stops[-1]) < order.index("hft_db-migrate") < order.index(starts[0])
    blue_stop = cmds["hft_db-schema-stop-blue"]
    assert "export HFT_SCHEMA_TARGET=6" in blue_stop["create"]
    assert "export HFT_ALLOW_PRIMARY_STOP=0" in blue_stop["create"]          # allowPrimaryRestart: false
    assert blue_stop["connection"]["host"] == "198.18.0.13"
    assert cmds["hft_db-schema-stop-green"]["connection"]["host"] == "198.18.0.14"
    assert "schema target 6" in cmds["hft_db-schema-start-green"]["create"]  # re-runs when the target moves
    assert d.migrations.ready is not None and mocks.validation is not None


def test_allow_primary_restart_lets_the_rollback_stop_the_primary(tmp_path) -> None:
    values = stack_values("lab")
    values.setdefault("database", {})["schemaVersion"] = 6
    values.setdefault("service", {})["allowPrimaryRestart"] = True
    mocks, _ = run_stack("lab", tmp_path, values)
    assert "export HFT_ALLOW_PRIMARY_STOP=1" in commands(mocks)["hft_db-schema-stop-blue"]["create"]


@pytest.mark.parametrize("name", ["../../etc/shadow.dump", "/var/backup/hft_db_x.dump", "x/y.dump", ".hidden.dump",
                                  "hft_db_20251125_100000.sql", "a b.dump", "x;rm -rf /.dump"])
def test_ops_restore_refuses_a_name_that_is_not_a_file_in_the_backup_dir(name) -> None:
    from ops.db import check_dump
    with pytest.raises(SystemExit) as err:
        check_dump(parse(stack_values("staging")), name)
    assert "expected a file name in hft:database.backupDir" in str(err.value)
