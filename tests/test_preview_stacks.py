"""The real CLI previews staging and prod: the whole graph resolves, nothing is contacted.

Preview never dials a host (the command provider runs nothing in preview), so the runbook's
10.0.0.x addresses are never sent a packet.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.lab_stack import preview_ops, project_copy
from tests.pulumi_cli import Pulumi

EXCHANGE_KEYS = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "COINBASE_API_KEY", "COINBASE_API_SECRET")


def stack(tmp_path: Path, name: str) -> Pulumi:
    (tmp_path / "project").mkdir()
    cli = Pulumi(project_copy(tmp_path / "project"), name, tmp_path / "state", passphrase=secrets.token_hex(16))
    (cli.project_dir / f"Pulumi.{name}.yaml").write_text(
        "\n".join(line for line in (cli.project_dir / f"Pulumi.{name}.yaml").read_text().splitlines()
                  if not line.startswith("encryptionsalt")) + "\n")
    cli.init()
    cli.run("config", "set", "--secret", "hft:sshPrivateKey", "test-only-not-a-key")
    for key in EXCHANGE_KEYS:
        cli.run("config", "set", "--secret", "--path", f"hft:exchangeKeys.{key}", f"test-{key.lower()}")
    return cli


@pytest.mark.parametrize("name,host", [("staging", "hft-staging-01"), ("prod", "hft-prod-01")])
def test_preview_resolves_the_whole_graph(tmp_path: Path, name: str, host: str) -> None:
    cli = stack(tmp_path, name)
    ops = preview_ops(cli)
    creates = {n for n, op in ops.items() if op == "create"}
    for resource in (f"{host}-preflight", f"{host}-identity", f"{host}-baseline-baseline", "postgres-postgres",
                     "hft-db-database", "hft-migrations-migrations", "hft-service-service",
                     "monitoring-monitoring", "validation-validate", "hft-db-password"):
        assert resource in creates, (resource, sorted(creates))
    assert f"{host}-rt-kernel-install" in creates and f"{host}-rt-kernel-verify" in creates


def test_missing_secret_fails_preview_naming_it(tmp_path: Path) -> None:
    cli = stack(tmp_path, "staging")
    cli.run("config", "rm", "--path", "hft:exchangeKeys.COINBASE_API_SECRET")
    proc = cli.run("preview", check=False)
    assert proc.returncode != 0
    assert "hft:exchangeKeys.COINBASE_API_SECRET is missing" in proc.stdout + proc.stderr
