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
from tests.test_config import KEY, REPOSITORY

EXCHANGE_KEYS = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "COINBASE_API_KEY", "COINBASE_API_SECRET")
HOSTS = {"staging": ["hft-staging-01"], "prod": ["hft-prod-01", "hft-prod-02"]}


def stack(tmp_path: Path, name: str) -> Pulumi:
    """A scratch copy of the committed stack, with what its header tells an operator to set."""
    (tmp_path / "project").mkdir()
    cli = Pulumi(project_copy(tmp_path / "project"), name, tmp_path / "state", passphrase=secrets.token_hex(16))
    (cli.project_dir / f"Pulumi.{name}.yaml").write_text(
        "\n".join(line for line in (cli.project_dir / f"Pulumi.{name}.yaml").read_text().splitlines()
                  if not line.startswith("encryptionsalt")) + "\n")
    cli.init()
    for host in HOSTS[name]:
        cli.run("config", "set", "--path", f"hft:hosts.{host}.hostKey", KEY)
    cli.run("config", "set", "--path", "hft:service.repository", REPOSITORY)
    cli.run("config", "set", "--secret", "hft:sshPrivateKey", "test-only-not-a-key")
    for key in EXCHANGE_KEYS:
        cli.run("config", "set", "--secret", "--path", f"hft:exchangeKeys.{key}", f"test-{key.lower()}")
    return cli


@pytest.mark.parametrize("name", ["staging", "prod"])
def test_preview_resolves_the_whole_graph(tmp_path: Path, name: str) -> None:
    cli = stack(tmp_path, name)
    creates = {n for n, op in preview_ops(cli).items() if op == "create"}
    expected = {"hft_db-role-and-database", "hft_db-migrate", "app-blue-release", "app-blue-validate",
                "random:index/randomPassword:RandomPassword::hft_db-password"}
    for host in HOSTS[name]:
        expected |= {f"{host}-{step}" for step in ("preflight", "identity", "apt-upgrade", "limits", "sysctl",
                                                   "cpu-governor", "services", "packages", "node-exporter",
                                                   "rt-kernel-install", "rt-kernel-reboot", "rt-kernel-verify")}
        # the reboot is in the preview, by host, and so is the wait for it
        expected.add(f"command:local:Command::{host}-rt-kernel-reboot-wait")
    first = HOSTS[name][0]
    expected |= {f"{first}-postgresql", f"{first}-prometheus"}
    if name == "prod":
        expected |= {"app-green-release", "app-green-validate"}
    assert expected <= creates, sorted(expected - creates)


def test_missing_secret_fails_preview_naming_it(tmp_path: Path) -> None:
    cli = stack(tmp_path, "staging")
    cli.run("config", "rm", "--path", "hft:exchangeKeys.COINBASE_API_SECRET")
    proc = cli.run("preview", check=False)
    assert proc.returncode != 0
    assert "hft:exchangeKeys.COINBASE_API_SECRET is missing" in proc.stdout + proc.stderr


def test_a_secret_outside_the_secret_keys_is_refused_at_preview(tmp_path: Path) -> None:
    cli = stack(tmp_path, "staging")
    cli.run("config", "set", "--secret", "--path", "hft:service.repository", "https://git.example/x.git")
    proc = cli.run("preview", check=False)
    assert proc.returncode != 0
    assert "hft:service is a secret: expected plain config here" in proc.stdout + proc.stderr
    assert "git.example/x.git" not in proc.stdout + proc.stderr


def test_the_committed_prod_stack_is_refused_until_its_host_keys_are_pinned(tmp_path: Path) -> None:
    cli = stack(tmp_path, "prod")
    cli.run("config", "rm", "--path", "hft:hosts.hft-prod-02.hostKey")
    proc = cli.run("preview", check=False)
    assert proc.returncode != 0
    assert "hft:hosts.hft-prod-02.hostKey" in proc.stdout + proc.stderr


def test_prod_on_the_per_user_state_directory_is_refused_unless_the_operator_says_so(tmp_path: Path) -> None:
    cli = stack(tmp_path, "prod")
    env = {"HFT_LOCAL_STATE_URL": f"file://{cli.state_dir}"}   # this scratch state stands in for the default
    proc = cli.run("preview", check=False, extra_env=env)
    assert proc.returncode != 0
    assert "expected a backend the operators share for prod" in proc.stdout + proc.stderr
    cli.run("preview", extra_env={**env, "HFT_ALLOW_LOCAL_STATE": "1"})
