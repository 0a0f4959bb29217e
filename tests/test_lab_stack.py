"""The prod shape on the lab, through the real CLI: blue and green from nothing to validated and back.

Two lab hosts (systemd-nspawn containers) carry runbook 4's shape: blue (primary, trading) with
the database and monitoring, green (standby, trading off) reaching the database over the lab
network. A third host takes green when the scenario moves it.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from tests.lab_stack import (BLUE_HOST, GREEN_HOST, SPARE_HOST, lab, lab_cli, leaked, on_host, preview_ops,
                             project_copy, ssh_logins)
from tests.pulumi_cli import REPO

TIMINGS: dict[str, float] = {}
HOSTS = (BLUE_HOST, GREEN_HOST)


def logins() -> dict[str, int]:
    return {h: ssh_logins(h) for h in HOSTS}


def no_new_session(before: dict[str, int]) -> None:
    """Each count grows by exactly one: the session that reads it."""
    assert logins() == {h: n + 1 for h, n in before.items()}, "an SSH session was opened on a lab host"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    inventory = json.loads(lab("inventory").stdout)["hosts"]
    was_running = {h: inventory.get(h, {}).get("running", False) for h in (*HOSTS, SPARE_HOST)}
    releases = str(REPO / "tools" / "serve-releases.sh")
    was_serving = subprocess.run([releases, "running"]).returncode == 0
    cli = None
    try:
        lab("up", *HOSTS, SPARE_HOST, timeout=1800)
        subprocess.run([releases, "start"], check=True)
        project = project_copy(tmp_path_factory.mktemp("project"))
        cli = lab_cli(project, tmp_path_factory.mktemp("state"))
        cli.init()
        t0 = time.monotonic()
        up = cli.run("up", "--yes", "--skip-preview", timeout=3600)
        TIMINGS["first up"] = time.monotonic() - t0
        yield cli, up
    finally:  # also when the first up failed: leave the lab as the test found it
        if cli is not None:
            t0 = time.monotonic()
            cli.run("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
            TIMINGS["destroy"] = time.monotonic() - t0
        print("lab stack timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
        for host, running in was_running.items():
            if not running:
                lab("destroy", host, check=False)
        if not was_serving:
            subprocess.run([releases, "stop"], check=False)


def status(host: str) -> dict:
    """The service's own view (GET /status), asked on its host at the address it listens on
    (its own address: the other color's cutover and the monitoring host reach it there)."""
    address = json.loads(lab("inventory").stdout)["hosts"][host]["address"]
    return json.loads(on_host(f"curl -sf http://{address}:8080/api/v1/status", host=host))


def test_first_up_ends_with_blue_primary_and_green_standby_validated(deployed) -> None:
    cli, _ = deployed
    outputs = cli.outputs()
    for color in ("blue", "green"):
        assert outputs["validation"][color]["status"] == "SUCCESS", outputs["validation"][color]
    blue, green = status(BLUE_HOST), status(GREEN_HOST)
    assert (blue["role"], blue["trading_enabled"]) == ("primary", True)
    assert (green["role"], green["trading_enabled"]) == ("standby", False)
    for host in HOSTS:
        steps = outputs["kernel_steps"][host]
        assert steps["realtime_kernel"] == "skipped: container host"
        assert steps["sysctl_apply"] == "skipped: container host"


def test_host_state_matches_the_runbook(deployed) -> None:
    assert "vm.nr_hugepages=4096" in on_host("cat /etc/sysctl.d/90-hft.conf")
    assert "hft_user hard memlock unlimited" in on_host("cat /etc/security/limits.d/90-hft.conf", host=GREEN_HOST)
    unit = on_host("cat /etc/systemd/system/hft_system.service", host=GREEN_HOST)
    for line in ("Restart=on-failure", "RestartSec=10", "LimitNOFILE=65536", "LimitMEMLOCK=infinity",
                 "NoNewPrivileges=true", "PrivateTmp=true", "User=hft_user", "SyslogIdentifier=hft_system"):
        assert line in unit, line
    assert on_host("stat -c '%a' /opt/hft_system/.env").strip() == "600"
    assert on_host("stat -c '%a %U' /var/log/hft_system").split() == ["755", "hft_user"]
    assert "scrape_interval: 1s" in on_host("cat /etc/prometheus/prometheus.yml")


def test_prometheus_scrapes_both_colors_and_both_hosts(deployed) -> None:
    query = "curl -sfG http://127.0.0.1:9090/api/v1/query --data-urlencode 'query=up'"
    deadline = time.monotonic() + 30
    while True:
        up = {(r["metric"]["job"], r["metric"].get("color", r["metric"]["instance"])): r["value"][1]
              for r in json.loads(on_host(query))["data"]["result"]}
        if len(up) >= 4 and set(up.values()) == {"1"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    diagnosis = on_host("systemctl status hft_system --no-pager | head -5; journalctl -u hft_system -n 5 --no-pager",
                        host=GREEN_HOST, check=False)
    targets = on_host("curl -s http://127.0.0.1:9090/api/v1/targets", check=False)[:3000]
    assert up.get(("hft_system", "blue")) == "1" and up.get(("hft_system", "green")) == "1", (up, diagnosis, targets)
    assert sum(1 for (job, _), v in up.items() if job == "node_exporter" and v == "1") == 2, up


def test_postgres_admits_exactly_the_app_hosts(deployed) -> None:
    hba = on_host("sed -n '/BEGIN hft-deploy/,/END hft-deploy/p' /etc/postgresql/*/main/pg_hba.conf")
    green_address = json.loads(lab("inventory").stdout)["hosts"][GREEN_HOST]["address"]
    assert [line.split() for line in hba.splitlines()[1:-1]] == [
        ["host", "hft_db", "hft_user", "127.0.0.1/32", "scram-sha-256"],
        ["host", "hft_db", "hft_user", f"{green_address}/32", "scram-sha-256"]]


SECRETS: dict[str, str] = {}


def test_no_plaintext_secret_in_state(deployed) -> None:
    cli, _ = deployed
    dotenv = {k: v.strip('"') for k, v in (line.split("=", 1) for line in
              on_host("cat /opt/hft_system/.env").splitlines() if "=" in line)}
    assert set(dotenv) == {"BINANCE_API_KEY", "BINANCE_API_SECRET", "COINBASE_API_KEY", "COINBASE_API_SECRET",
                           "DB_PASSWORD", "HFT_API_TOKEN"}
    assert all(len(v) >= 8 for v in dotenv.values())
    SECRETS.update(dotenv)
    inventory = json.loads(lab("inventory").stdout)["hosts"]
    SECRETS["SSH private key"] = open(inventory[BLUE_HOST]["private_key"]).read()
    assert leaked(json.dumps(cli.export()), SECRETS) == []


def test_second_up_changes_nothing_and_opens_no_ssh_session(deployed) -> None:
    cli, _ = deployed
    before = logins()
    t0 = time.monotonic()
    cli.run("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=1800)
    TIMINGS["no-change up"] = time.monotonic() - t0
    no_new_session(before)


def test_bad_config_fails_at_preview_with_nothing_touched(deployed) -> None:
    cli, _ = deployed
    before = logins()
    cli.run("config", "set", "--path", "hft:baseline.cpuGovernor", "turbo")
    try:
        proc = cli.run("preview", check=False)
        assert proc.returncode != 0
        assert 'hft:baseline.cpuGovernor = "turbo": expected one of performance' in proc.stdout + proc.stderr
    finally:
        cli.run("config", "rm", "--path", "hft:baseline.cpuGovernor")
    no_new_session(before)


def test_a_sysctl_edit_reruns_only_the_sysctl_steps_and_what_validates_them(deployed) -> None:
    cli, _ = deployed
    cli.run("config", "set", "--path", 'hft:baseline.sysctl["vm.swappiness"]', "10")
    changed = {name: op for name, op in preview_ops(cli).items() if op not in ("same", "read")}
    assert set(changed) == {f"{BLUE_HOST}-sysctl", f"{GREEN_HOST}-sysctl", "app-blue-validate",
                            "app-green-validate"}, changed
    up = cli.run("up", "--yes", "--skip-preview", timeout=1800)
    # From the update's own output: the upgrade and package steps did not run.
    assert "apt upgrade" not in up.stdout and "packages present" not in up.stdout, up.stdout[-2000:]
    assert "vm.swappiness=10" in on_host("cat /etc/sysctl.d/90-hft.conf", host=GREEN_HOST)
    assert all(v["status"] == "SUCCESS" for v in cli.outputs()["validation"].values())


def service_pid(host: str = BLUE_HOST) -> str:
    return on_host("systemctl show -p MainPID --value hft_system", host=host).strip()


def test_a_config_the_engine_rejects_stops_the_update_and_the_service_keeps_running(deployed) -> None:
    """Runbook 7.1: --validate-config runs before any restart; the running service is untouched."""
    cli, _ = deployed
    pid = service_pid()
    stack_file = cli.project_dir / "Pulumi.lab.yaml"
    original = stack_file.read_text()
    doc = yaml.safe_load(original)
    doc["config"]["hft:service"]["strategies"] = [
        {"id": "bad_inline", "name": "BTC-USD", "symbol": "BTC-USD", "exchange": "coinbase",
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


def test_a_new_release_on_green_leaves_blue_untouched(deployed) -> None:
    cli, _ = deployed
    blue_pid = service_pid()
    cli.run("config", "set", "--path", "hft:release.green.version", "v1.1.0")
    t0 = time.monotonic()
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    TIMINGS["release v1.1.0 to green"] = time.monotonic() - t0
    assert status(GREEN_HOST)["version"].startswith("1.1.0")
    assert status(BLUE_HOST)["version"].startswith("1.0.0") and service_pid() == blue_pid
    outputs = cli.outputs()
    assert outputs["colors"]["green"]["version"] == "v1.1.0"
    assert outputs["validation"]["green"]["status"] == "SUCCESS"


def test_moving_green_stops_it_on_the_old_host_first(deployed) -> None:
    cli, _ = deployed
    stack_file = cli.project_dir / "Pulumi.lab.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"]["hft:hosts"][SPARE_HOST] = {}
    doc["config"]["hft:placements"]["app:green"] = SPARE_HOST
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    ops = preview_ops(cli)
    assert ops["app-green-release"] == "replace", ops
    cli.run("up", "--yes", "--skip-preview", timeout=3600)
    assert on_host("systemctl is-active hft_system", check=False, host=GREEN_HOST).strip() != "active"
    assert on_host("test -e /etc/systemd/system/hft_system.service && echo present || echo absent",
                   host=GREEN_HOST).strip() == "absent"
    assert status(SPARE_HOST)["role"] == "standby"
    assert cli.outputs()["validation"]["green"]["status"] == "SUCCESS"


def test_destroy_stops_and_removes_the_services(deployed) -> None:
    cli, _ = deployed
    cli.run("destroy", "--yes", "--skip-preview", timeout=1800)
    # Every up, failed up, preview and destroy of this module printed no secret.
    assert SECRETS, "the secrets were not collected (test_no_plaintext_secret_in_state did not run)"
    assert leaked("\n".join(cli.transcript), SECRETS) == []
    for host in (BLUE_HOST, SPARE_HOST):
        assert on_host("systemctl is-active hft_system", check=False, host=host).strip() != "active"
        assert on_host("test -e /etc/systemd/system/hft_system.service && echo present || echo absent",
                       host=host).strip() == "absent"
    assert (cli.export()["deployment"].get("resources") or []) == []
