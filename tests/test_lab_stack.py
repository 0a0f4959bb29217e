"""Issue 6 on the lab, through the real CLI: from nothing to a validated hft_system and back.

One lab host (a systemd-nspawn container) carries the whole runbook: baseline, PostgreSQL,
database, migrations, the service built from its git tag, Prometheus, validation.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.lab_stack import LAB_HOST, lab, lab_cli, on_host, preview_ops, project_copy, ssh_logins
from tests.pulumi_cli import REPO

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    was_running = json.loads(lab("inventory").stdout)["hosts"].get(LAB_HOST, {}).get("running", False)
    releases = str(REPO / "tools" / "serve-releases.sh")
    was_serving = subprocess.run([releases, "running"]).returncode == 0
    lab("up", LAB_HOST, timeout=1800)
    subprocess.run([releases, "start"], check=True)
    project = project_copy(tmp_path_factory.mktemp("project"))
    cli = lab_cli(project, tmp_path_factory.mktemp("state"))
    cli.init()
    t0 = time.monotonic()
    up = cli.run("up", "--yes", "--skip-preview", timeout=3600)
    TIMINGS["first up"] = time.monotonic() - t0
    yield cli, up
    t0 = time.monotonic()
    cli.run("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
    TIMINGS["destroy"] = time.monotonic() - t0
    print("lab stack timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
    if not was_running:  # leave the lab as the test found it
        lab("destroy", LAB_HOST, check=False)
    if not was_serving:
        subprocess.run([releases, "stop"], check=False)


def test_first_up_ends_validated(deployed) -> None:
    cli, _ = deployed
    outputs = cli.outputs()
    assert outputs["validation"]["status"] == "SUCCESS", outputs["validation"]
    assert not outputs["validation"]["failed"]
    steps = outputs["kernel_steps"][LAB_HOST]
    assert steps["realtime_kernel"] == "skipped: container host"
    assert steps["sysctl_apply"] == "skipped: container host"


def test_host_state_matches_the_runbook(deployed) -> None:
    assert "vm.nr_hugepages=4096" in on_host("cat /etc/sysctl.d/90-hft.conf")
    assert "hft_user hard memlock unlimited" in on_host("cat /etc/security/limits.d/90-hft.conf")
    unit = on_host("cat /etc/systemd/system/hft_system.service")
    for line in ("Restart=on-failure", "RestartSec=10", "LimitNOFILE=65536", "LimitMEMLOCK=infinity",
                 "NoNewPrivileges=true", "PrivateTmp=true", "User=hft_user", "SyslogIdentifier=hft_system"):
        assert line in unit, line
    assert on_host("stat -c '%a %U' /opt/hft_system/.env").split() == ["600", "hft_user"]
    assert on_host("stat -c '%a %U' /var/log/hft_system").split() == ["755", "hft_user"]
    assert on_host("systemctl is-active hft_system").strip() == "active"
    status = json.loads(on_host("curl -sf http://127.0.0.1:8080/api/v1/status"))
    assert status["version"].startswith("1.0.0")
    assert "scrape_interval: 1s" in on_host("cat /etc/prometheus/prometheus.yml")


def test_no_plaintext_secret_in_state(deployed) -> None:
    cli, _ = deployed
    dotenv = {k: v.strip('"') for k, v in (line.split("=", 1) for line in
              on_host("cat /opt/hft_system/.env").splitlines() if "=" in line)}
    assert len(dotenv) == 5 and all(len(v) >= 8 for v in dotenv.values()), sorted(dotenv)
    state = json.dumps(cli.export())
    for name, value in dotenv.items():
        assert value not in state, f"{name} is in plaintext in the state"


def test_second_up_changes_nothing_and_runs_no_remote_command(deployed) -> None:
    cli, _ = deployed
    before = ssh_logins()
    t0 = time.monotonic()
    cli.run("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=1800)
    TIMINGS["no-change up"] = time.monotonic() - t0
    assert ssh_logins() == before + 1, "a no-change up opened an SSH session on the host"


def test_bad_config_fails_at_preview_with_nothing_touched(deployed) -> None:
    cli, _ = deployed
    before = ssh_logins()
    cli.run("config", "set", "--path", "hft:baseline.cpuGovernor", "turbo")
    try:
        proc = cli.run("preview", check=False)
        assert proc.returncode != 0
        assert 'hft:baseline.cpuGovernor = "turbo": expected one of performance' in proc.stdout + proc.stderr
    finally:
        cli.run("config", "rm", "--path", "hft:baseline.cpuGovernor")
    assert ssh_logins() == before + 1, "a failed preview opened an SSH session on the host"


def test_one_sysctl_change_updates_only_what_depends_on_it(deployed) -> None:
    cli, _ = deployed
    cli.run("config", "set", "--path", 'hft:baseline.sysctl["vm.swappiness"]', "10")
    changed = {name: op for name, op in preview_ops(cli).items() if op not in ("same", "read")}
    assert set(changed) == {f"{LAB_HOST}-baseline-baseline", "validation-validate"}, changed
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert "vm.swappiness=10" in on_host("cat /etc/sysctl.d/90-hft.conf")
    assert cli.outputs()["validation"]["status"] == "SUCCESS"


def service_pid() -> str:
    return on_host("systemctl show -p MainPID --value hft_system").strip()


def test_a_config_the_engine_rejects_stops_the_update_and_the_service_keeps_running(deployed) -> None:
    """Runbook 7.1: --validate-config runs before any restart; the running service is untouched."""
    cli, _ = deployed
    pid = service_pid()
    stack_file = cli.project_dir / "Pulumi.lab.yaml"
    original = stack_file.read_text()
    doc = yaml.safe_load(original)
    doc["config"]["hft:service"]["strategies"] = [
        {"id": "mm_btc_usd", "name": "BTC-USD", "symbol": "BTC-USD", "exchange": "coinbase",
         "paper_trading": False, "max_position": -1}]
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
        assert proc.returncode != 0
        assert "config validation failed" in proc.stdout + proc.stderr, proc.stdout[-3000:]
        assert "max_position" in proc.stdout + proc.stderr
        assert service_pid() == pid, "the running service was restarted"
        assert on_host("systemctl is-active hft_system").strip() == "active"
    finally:
        stack_file.write_text(original)
    cli.run("up", "--yes", "--skip-preview", timeout=1800)


def test_a_new_release_tag_is_built_deployed_and_validated(deployed) -> None:
    cli, _ = deployed
    cli.run("config", "set", "--path", "hft:service.version", "v1.1.0")
    t0 = time.monotonic()
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    TIMINGS["release v1.1.0 up"] = time.monotonic() - t0
    assert json.loads(on_host("curl -sf http://127.0.0.1:8080/api/v1/status"))["version"].startswith("1.1.0")
    outputs = cli.outputs()
    assert outputs["version"] == "v1.1.0" and outputs["validation"]["status"] == "SUCCESS"


def test_destroy_stops_and_removes_the_service(deployed) -> None:
    cli, _ = deployed
    cli.run("destroy", "--yes", "--skip-preview", timeout=1800)
    assert on_host("systemctl is-active hft_system", check=False).strip() != "active"
    assert on_host("test -e /etc/systemd/system/hft_system.service && echo present || echo absent").strip() == "absent"
    assert (cli.export()["deployment"].get("resources") or []) == []
