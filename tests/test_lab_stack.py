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
    releases = str(REPO / "tools" / "serve-releases.sh")
    was_serving = subprocess.run([releases, "running"]).returncode == 0
    cli = None
    try:
        # Fresh hosts: these are the scenarios' own, and a host left from an aborted run would
        # hold a database whose password this new state does not know (refused, as it should be).
        lab("destroy", *HOSTS, SPARE_HOST, check=False)
        lab("up", *HOSTS, SPARE_HOST, timeout=1800)
        subprocess.run([releases, "start"], check=True)
        project = project_copy(tmp_path_factory.mktemp("project"))
        cli = lab_cli(project, tmp_path_factory.mktemp("state"))
        cli.init()
        t0 = time.monotonic()
        up = cli.run("up", "--yes", "--skip-preview", timeout=3600)
        TIMINGS["first up"] = time.monotonic() - t0
        yield cli, up
    finally:  # also when the first up failed: the scenarios' hosts go, the lab is as it was
        if cli is not None:
            t0 = time.monotonic()
            cli.run("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
            TIMINGS["destroy"] = time.monotonic() - t0
        lab("destroy", *HOSTS, SPARE_HOST, check=False)
        print("lab stack timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
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
    # blue's first promotion had no previous primary to go back to: it is not watched
    assert (outputs["cutover"]["to"], outputs["cutover"]["watched_seconds"]) == ("blue", 0), outputs["cutover"]
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
    blue = status(BLUE_HOST)
    assert blue["version"].startswith("1.0.0") and service_pid() == blue_pid
    assert blue["trading_active"] and blue["lease"]["held_by_me"], "blue stopped trading during green's release"
    outputs = cli.outputs()
    assert outputs["colors"]["green"]["version"] == "v1.1.0"
    assert outputs["validation"]["green"]["status"] == "SUCCESS"


# ---- day-2 changes (runbook 7.1, 7.2) ---------------------------------------------------

def api_write(host: str, path: str, body: dict) -> dict:
    """A state-changing API call on ``host``, with the token the service reads from its .env."""
    script = ("t=$(sed -n 's/^HFT_API_TOKEN=\"\\(.*\\)\"$/\\1/p' /opt/hft_system/.env)\n"
              "printf 'Authorization: Bearer %s\\n' \"$t\" | curl -sS -X POST -H @- -H 'Content-Type: application/json' "
              f"--data '{json.dumps(body)}' {api_of(host)}/api/v1{path}")
    return json.loads(on_host(script, host=host))


def sql(query: str) -> str:
    """A query on the lab stack's database (on blue's host), as postgres (the SQL on stdin)."""
    return on_host(f"cd /tmp && runuser -u postgres -- psql -X -A -t -q -d hft_db <<'SQL'\n{query}\nSQL").strip()


def test_a_hot_reloadable_change_keeps_the_pid(deployed) -> None:
    """Runbook 7.1 steps 2-3: validated, then hot-reloaded; no restart, no trading gap."""
    cli, _ = deployed
    pid = service_pid()
    cli.run("config", "set", "--path", "hft:service.tickIntervalMs", "120")
    up = cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert service_pid() == pid
    running = json.loads(on_host(f"curl -sf {api_of(BLUE_HOST)}/api/v1/config"))
    assert running["tick_interval_ms"] == 120
    assert "hot-reloaded" in up.stdout or "output not streamed" in up.stdout


def test_a_restart_of_the_trading_primary_is_refused_unless_allowed(deployed) -> None:
    """A restart-only key on blue (primary, holding the lease): refused with nothing changed,
    then done gracefully when the config explicitly allows it."""
    cli, _ = deployed
    pid = service_pid()
    cli.run("config", "set", "--path", "hft:service.dbConnectTimeoutSeconds", "6")
    proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
    assert proc.returncode != 0 and "holds the trading lease" in proc.stdout + proc.stderr
    assert service_pid() == pid and status(BLUE_HOST)["trading_active"] is True
    cli.run("config", "set", "--path", "hft:service.allowPrimaryRestart", "true")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert service_pid() != pid
    assert status(BLUE_HOST)["lease"]["held_by_me"] is True
    cli.run("config", "set", "--path", "hft:service.allowPrimaryRestart", "false")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)


def strategy(host: str, sid: str) -> dict:
    return json.loads(on_host(f"curl -sf {api_of(host)}/api/v1/strategies/{sid}", host=host))


def test_a_strategy_goes_live_only_after_its_paper_time(deployed) -> None:
    """Runbook 7.2 steps 3-6: a new strategy is loaded in paper; live is refused before
    minPaperSeconds (30 s in the lab), measured from the workload's own record; accepted after."""
    cli, _ = deployed
    for key, value in (("name", "ETH-USD market making"), ("symbol", "ETH-USD"), ("exchange", "coinbase"),
                       ("maxPosition", "2"), ("mode", "paper"), ("state", "running")):
        cli.run("config", "set", "--path", f"hft:strategies.deployed.mm_eth_usd.{key}", value)
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    new = strategy(BLUE_HOST, "mm_eth_usd")
    assert new["paper_trading"] is True and new["status"] == "running" and new["paper_since"], new
    cli.run("config", "set", "--path", "hft:strategies.deployed.mm_eth_usd.mode", "live")
    proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
    assert proc.returncode != 0 and "refusing to go live" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert strategy(BLUE_HOST, "mm_eth_usd")["paper_trading"] is True
    time.sleep(31)
    cli.run("config", "set", "--path", "hft:strategies.deployed.mm_btc_usd.mode", "live")  # loaded at first up
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    for sid in ("mm_eth_usd", "mm_btc_usd"):
        live = strategy(BLUE_HOST, sid)
        assert live["paper_trading"] is False and live["status"] == "running", live


def test_a_strategy_rolled_back_to_its_previous_config_leaves_the_others_untouched(deployed) -> None:
    """Runbook 5.3: the stack file back to the previous version: stop, unload, load old, start;
    the other strategy keeps running with its counters."""
    cli, _ = deployed
    other = strategy(BLUE_HOST, "mm_btc_usd")
    cli.run("config", "set", "--path", "hft:strategies.deployed.mm_eth_usd.maxPosition", "1")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert strategy(BLUE_HOST, "mm_eth_usd")["max_position"] == 1
    cli.run("config", "set", "--path", "hft:strategies.deployed.mm_eth_usd.maxPosition", "2")   # the revert
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert strategy(BLUE_HOST, "mm_eth_usd")["max_position"] == 2
    after = strategy(BLUE_HOST, "mm_btc_usd")
    assert after["status"] == "running"
    assert after["performance"]["orders"] >= other["performance"]["orders"], (other, after)   # not reloaded


def test_a_removed_strategy_is_stopped_and_unloaded(deployed) -> None:
    cli, _ = deployed
    cli.run("config", "rm", "--path", "hft:strategies.deployed.mm_eth_usd")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    gone = on_host(f"curl -s -o /dev/null -w '%{{http_code}}' {api_of(BLUE_HOST)}/api/v1/strategies/mm_eth_usd")
    assert gone.strip() == "404"
    assert strategy(BLUE_HOST, "mm_btc_usd")["status"] == "running"


def api_of(host: str) -> str:
    return f"http://{json.loads(lab('inventory').stdout)['hosts'][host]['address']}:8080"


# ---- blue-green (runbook 4.1 steps 7-9, 5.1) ---------------------------------------------

def epochs_never_interleave() -> None:
    """Orders ordered by time carry non-decreasing epochs: no two primaries ever wrote at once."""
    assert sql("SELECT count(*) FROM (SELECT epoch, lag(epoch) OVER (ORDER BY created_at, id) AS prev "
               "FROM orders WHERE epoch IS NOT NULL) o WHERE epoch < prev") == "0"


def positions_match_fills() -> None:
    """Positions are never lost or duplicated: each equals the sum of the live fills."""
    assert sql("SELECT count(*) FROM positions p FULL JOIN (SELECT exchange, symbol, "
               "sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) q FROM fills WHERE NOT paper "
               "GROUP BY 1, 2) f USING (exchange, symbol) WHERE coalesce(p.quantity, 0) <> coalesce(f.q, 0)") == "0"


def cut_over(cli, color: str) -> dict:
    cli.run("config", "set", "--path", "hft:release.live", color)
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    return cli.outputs()["cutover"]


def test_cutover_fences_blue_and_promotes_green_with_a_new_epoch(deployed) -> None:
    cli, _ = deployed
    before = status(BLUE_HOST)["lease"]["my_epoch"]
    report = cut_over(cli, "green")
    assert report["status"] == "SUCCESS" and report["to"] == "green" and report["from"] == "blue", report
    assert report["epoch"] > before and report["to_version"].startswith("1.1.0")
    green, blue = status(GREEN_HOST), status(BLUE_HOST)
    assert green["lease"]["held_by_me"] and green["trading_active"] and green["role"] == "primary"
    assert not blue["lease"]["held_by_me"] and not blue["trading_active"] and blue["role"] == "standby"
    # a stale epoch's write is refused by the database itself
    stale = sql("DO $$ BEGIN INSERT INTO orders (client_order_id, exchange, symbol, side, quantity, price, status, "
                f"epoch) VALUES ('stale-1', 'coinbase', 'BTC-USD', 'buy', 1, 1, 'working', {before}); "
                "EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'refused'; END $$; "
                "SELECT count(*) FROM orders WHERE client_order_id = 'stale-1'")
    assert stale.endswith("0"), stale
    epochs_never_interleave()
    positions_match_fills()


def test_rollback_with_the_on_call_command(deployed) -> None:
    """Runbook 5.1 in one go: kill switch on green, back to blue (no build), reconcile, notice."""
    cli, _ = deployed
    proc = subprocess.run([str(REPO / "venv" / "bin" / "python"), "-m", "ops", "rollback", "-s", "lab",
                           "--cwd", str(cli.project_dir), "--reason", "critical bug (lab drill)"],
                          cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=1800)
    cli.transcript.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ROLLBACK NOTICE: rolled back to v1.0.0 (blue) due to critical bug (lab drill)" in proc.stdout
    assert "reconciliation: 0 difference(s)" in proc.stdout
    assert status(BLUE_HOST)["lease"]["held_by_me"] and status(BLUE_HOST)["trading_active"]
    assert "live: blue" in (cli.project_dir / "Pulumi.lab.yaml").read_text()   # the stack file says what runs
    assert cli.outputs()["cutover"]["why"] == "rollback from green: critical bug (lab drill)"


def test_cutover_and_rollback_cycles_under_order_flow(deployed) -> None:
    cli, _ = deployed
    gaps = []
    for _ in range(3):
        for color in ("green", "blue"):
            report = cut_over(cli, color)
            assert report["status"] == "SUCCESS", report
            gaps.append(report["trading_gap_ms"])
    epochs_never_interleave()
    positions_match_fills()
    print("trading gaps (ms):", gaps)   # bench/cutover_bench.py measures 20 cycles


def test_a_failing_watch_gate_rolls_back_by_itself(deployed) -> None:
    """Errors on the new primary during the watch window (here: its kill switch, pulled while it
    is watched) fail the gate; blue is promoted back and the update fails saying why."""
    cli, _ = deployed
    cli.run("config", "set", "--path", "hft:cutover.watchSeconds", "20")
    cli.run("config", "set", "--path", "hft:release.live", "green")
    # On green itself: as soon as it holds the lease (promoted), pull its kill switch.
    fault = subprocess.Popen(
        ["python3", "-m", "lab", "ssh", GREEN_HOST,
         "t=$(sed -n 's/^HFT_API_TOKEN=\"\\(.*\\)\"$/\\1/p' /opt/hft_system/.env); "
         f"for i in $(seq 3000); do if curl -sf {api_of(GREEN_HOST)}/api/v1/status | jq -e '.lease.held_by_me' >/dev/null; "
         "then printf 'Authorization: Bearer %s\\n' \"$t\" | curl -sS -X POST -H @- "
         f"--data '{{\"reason\": \"injected fault\"}}' {api_of(GREEN_HOST)}/api/v1/killswitch; exit 0; fi; "
         "sleep 0.1; done; echo 'green never held the lease'; exit 1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
    pulled = fault.communicate(timeout=300)[0]
    assert fault.returncode == 0 and "killswitch_activated" in pulled, pulled
    outputs = cli.outputs()
    assert proc.returncode != 0 and "rolled back" in proc.stdout + proc.stderr, (pulled, outputs.get("cutover"))
    assert status(BLUE_HOST)["lease"]["held_by_me"] and status(BLUE_HOST)["trading_active"]
    cli.run("config", "set", "--path", "hft:cutover.watchSeconds", "5")
    cli.run("config", "set", "--path", "hft:release.live", "blue")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    epochs_never_interleave()


def test_a_cutover_to_a_color_that_does_not_deploy_never_starts(deployed) -> None:
    """Green asked to run a tag that does not exist, and to go live: green's host preflight finds
    no such tag in the release repository and stops the update before any step changes a host;
    the cutover never runs, blue keeps trading on the same epoch."""
    cli, _ = deployed
    epoch = status(BLUE_HOST)["lease"]["my_epoch"]
    green_pid = service_pid(GREEN_HOST)
    cli.run("config", "set", "--path", "hft:release.green.version", "v9.9.9")
    cli.run("config", "set", "--path", "hft:release.live", "green")
    proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no tag v9.9.9 in" in out, out[-3000:]
    assert "app-green-release" not in out and "live-switch" not in out, out[-3000:]
    assert service_pid(GREEN_HOST) == green_pid
    blue = status(BLUE_HOST)
    assert blue["lease"]["held_by_me"] and blue["lease"]["my_epoch"] == epoch and blue["trading_active"]
    cli.run("config", "set", "--path", "hft:release.green.version", "v1.1.0")
    cli.run("config", "set", "--path", "hft:release.live", "blue")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)


def test_a_release_that_never_becomes_healthy_leaves_the_previous_one_running(deployed) -> None:
    """v1.1.1 builds and starts but is never healthy: green goes back to v1.1.0 and runs it."""
    cli, _ = deployed
    cli.run("config", "set", "--path", "hft:release.green.version", "v1.1.1")
    cli.run("config", "set", "--path", "hft:service.healthTimeoutSeconds", "15")
    proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
    assert proc.returncode != 0
    assert "rolled back to the previous release (v1.1.0" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert status(GREEN_HOST)["version"].startswith("1.1.0")
    assert on_host("systemctl is-active hft_system", host=GREEN_HOST).strip() == "active"
    cli.run("config", "set", "--path", "hft:release.green.version", "v1.1.0")
    cli.run("config", "rm", "--path", "hft:service.healthTimeoutSeconds")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)


# ---- database rollback, restore, backups (runbook 5.2, 6) ------------------------------------

BACKUPS: dict[str, str] = {}


def backup_files() -> list[str]:
    return sorted(on_host("ls /var/backup").split())


def schema_versions() -> list[int]:
    return [int(v) for v in sql("SELECT version FROM schema_version ORDER BY 1").split()]


def pids() -> dict[str, str]:
    return {h: service_pid(h) for h in HOSTS}


def ops(cli, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(REPO / "venv" / "bin" / "python"), "-m", "ops", *args, "-s", "lab",
                           "--cwd", str(cli.project_dir)],
                          cwd=REPO, env=cli.env(), capture_output=True, text=True, timeout=1800)
    cli.transcript.append(proc.stdout + proc.stderr)
    return proc


def test_a_schema_target_the_releases_cannot_run_on_fails_at_preview(deployed) -> None:
    cli, _ = deployed
    before = logins()
    cli.run("config", "set", "--path", "hft:database.schemaVersion", "3")
    try:
        proc = cli.run("preview", check=False)
        assert proc.returncode != 0
        assert ("hft:database.schemaVersion = 3: expected a migration version from 6 to 7 (the deployed releases "
                "need at least 6") in proc.stdout + proc.stderr, proc.stdout[-2000:]
    finally:
        cli.run("config", "rm", "--path", "hft:database.schemaVersion")
    no_new_session(before)


def test_lowering_the_schema_does_not_stop_the_trading_primary_without_consent(deployed) -> None:
    cli, _ = deployed
    before, files = pids(), backup_files()
    cli.run("config", "set", "--path", "hft:database.schemaVersion", "6")
    proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
    assert proc.returncode != 0
    assert "holds the trading lease (the trading primary)" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert "hft:service.allowPrimaryRestart" in proc.stdout + proc.stderr
    assert pids() == before and status(BLUE_HOST)["trading_active"] is True
    assert schema_versions() == [1, 2, 3, 4, 5, 6, 7] and backup_files() == files


def test_lowering_the_schema_runs_the_rollback_after_a_backup_with_the_apps_stopped(deployed) -> None:
    """Runbook 5.2 with the rollback script: stop (the primary too, allowed here), backup,
    rollback/007, start; the apps run again on schema 6 and validate against it."""
    cli, _ = deployed
    before, files = pids(), backup_files()
    cli.run("config", "set", "--path", "hft:service.allowPrimaryRestart", "true")   # schemaVersion 6 still set
    t0 = time.monotonic()
    up = cli.run("up", "--yes", "--skip-preview", timeout=1800)
    TIMINGS["schema rollback 7 -> 6"] = time.monotonic() - t0
    new = sorted(set(backup_files()) - set(files))
    assert len(new) == 1, (files, backup_files())
    BACKUPS["before rollback"] = new[0]
    assert schema_versions() == [1, 2, 3, 4, 5, 6]
    assert sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'strategies' "
               "AND column_name = 'paper_since'") == "0"
    report = cli.outputs()["migrations"]
    assert report["change"]["direction"] == "down" and report["change"]["from"] == 7 and report["change"]["to"] == 6
    assert report["change"]["backup"] == f"/var/backup/{new[0]}"
    after = pids()
    assert all(after[h] != before[h] and after[h] != "0" for h in HOSTS), (before, after)   # stopped, started again
    for host in HOSTS:
        assert on_host("systemctl is-active hft_system", host=host).strip() == "active"
        assert status(host)["database"]["schema_version"] == 6
    blue = status(BLUE_HOST)
    assert blue["lease"]["held_by_me"] and blue["trading_active"], blue
    assert not status(GREEN_HOST)["lease"]["held_by_me"]
    assert all(v["status"] == "SUCCESS" for v in cli.outputs()["validation"].values())
    assert "stopped for the schema rollback 7 -> 6" in up.stdout or "output not streamed" in up.stdout
    epochs_never_interleave()


def test_raising_the_schema_again_reapplies_online(deployed) -> None:
    cli, _ = deployed
    before, files = pids(), backup_files()
    cli.run("config", "rm", "--path", "hft:database.schemaVersion")
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert schema_versions() == [1, 2, 3, 4, 5, 6, 7]
    assert sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'strategies' "
               "AND column_name = 'paper_since'") == "1"
    assert len(set(backup_files()) - set(files)) == 1                # backed up first
    assert pids() == before                                        # forward migrations run online
    assert cli.outputs()["migrations"]["change"]["direction"] == "up"


def test_a_rollback_script_that_fails_restores_the_backup_and_the_apps_start_when_the_target_is_removed(
        deployed) -> None:
    """Down to 5 (the floor lowered for this): 007's rollback succeeds, 006's fails; the backup
    taken first is restored, so the database is exactly as the stopped apps left it. Removing
    the target starts them again."""
    cli, _ = deployed
    rollback_006 = cli.project_dir / "migrations" / "rollback" / "006_rollback.sql"
    original = rollback_006.read_text()
    rollback_006.write_text("SELECT 1 / 0;\n" + original)
    cli.run("config", "set", "--path", "hft:service.allowPrimaryRestart", "true")
    cli.run("config", "set", "--path", "hft:database.minSchemaVersion", "5")
    cli.run("config", "set", "--path", "hft:database.schemaVersion", "5")
    try:
        proc = cli.run("up", "--yes", "--skip-preview", check=False, timeout=1800)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "division by zero" in out, out[-3000:]
        assert "rolling the schema back to 5 failed (above); hft_db was restored from /var/backup/hft_db_" in out
        assert schema_versions() == [1, 2, 3, 4, 5, 6, 7]       # 007's revert undone by the restore
        assert sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'strategies' "
                   "AND column_name = 'paper_since'") == "1"
        for host in HOSTS:   # stopped for the rollback, and (documented) not started by a failed update
            assert on_host("systemctl is-active hft_system", check=False, host=host).strip() != "active"
    finally:
        rollback_006.write_text(original)
        cli.run("config", "rm", "--path", "hft:database.schemaVersion")
        cli.run("config", "rm", "--path", "hft:database.minSchemaVersion")
    up = cli.run("up", "--yes", "--skip-preview", timeout=1800)
    for host in HOSTS:
        assert on_host("systemctl is-active hft_system", check=False, host=host).strip() == "active", (
            host, on_host("ls -l /var/lib/hft-deploy/; cat /var/lib/hft-deploy/schema-stopped-* || true", host=host),
            up.stdout[-6000:])
    blue = status(BLUE_HOST)
    assert blue["lease"]["held_by_me"] and blue["trading_active"], blue
    assert schema_versions() == [1, 2, 3, 4, 5, 6, 7]
    cli.run("config", "set", "--path", "hft:service.allowPrimaryRestart", "false")
    before = pids()
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert pids() == before
    epochs_never_interleave()
    positions_match_fills()


def test_ops_restore_refuses_a_dump_newer_than_the_code_with_nothing_stopped(deployed) -> None:
    cli, _ = deployed
    # a dump whose schema_version holds version 8, which the deployed migrations do not have
    on_host("cd /tmp && runuser -u postgres -- createdb hft_future && "
            "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d hft_future -c \"CREATE TABLE schema_version "
            "(version int PRIMARY KEY, description text); INSERT INTO schema_version SELECT g, 'v' || g "
            "FROM generate_series(1, 8) g\" && runuser -u postgres -- pg_dump -Fc -d hft_future -f /tmp/future.dump && "
            "runuser -u postgres -- dropdb hft_future && install -o root -g root -m 600 /tmp/future.dump "
            "/var/backup/hft_db_20200101_000000.dump && rm -f /tmp/future.dump")
    before, marker = pids(), sql("SELECT count(*) FROM orders")
    proc = ops(cli, "restore", "hft_db_20200101_000000.dump")
    assert proc.returncode != 0
    assert ("refusing to restore hft_db_20200101_000000.dump: it is newer than the code. Its schema_version holds "
            "version(s) 8; the migrations deployed on hft-staging-01 go up to 007. Nothing was stopped.") \
        in proc.stderr, proc.stdout + proc.stderr
    assert pids() == before and status(BLUE_HOST)["trading_active"] is True
    assert schema_versions() == [1, 2, 3, 4, 5, 6, 7]
    assert int(sql("SELECT count(*) FROM orders")) >= int(marker)      # nothing restored
    refused = ops(cli, "restore", "../../etc/shadow")
    assert refused.returncode != 0 and "expected a file name in hft:database.backupDir" in refused.stderr


def test_ops_restore_of_a_named_backup_end_to_end(deployed) -> None:
    """Runbook 5.2 with a backup: stop, restore the dump taken before the rollback, verify the
    schema against the migrations, start; what was written after the dump is gone."""
    cli, _ = deployed
    name = BACKUPS["before rollback"]
    sql("INSERT INTO strategies (id, name) VALUES ('written_after_the_dump', 'gone after the restore')")
    before, files = pids(), backup_files()
    t0 = time.monotonic()
    proc = ops(cli, "restore", name)
    TIMINGS["ops restore"] = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{name}: schema version 7; the deployed migrations go up to 7" in proc.stdout
    assert "schema version 7: verified against the migrations (checksums match, 0 pending)" in proc.stdout
    assert "RESTORE DONE" in proc.stdout and "app:blue, app:green running again" in proc.stdout, proc.stdout
    assert sql("SELECT count(*) FROM strategies WHERE id = 'written_after_the_dump'") == "0"
    assert schema_versions() == [1, 2, 3, 4, 5, 6, 7]
    assert len(set(backup_files()) - set(files)) == 1                # the way back, taken first
    after = pids()
    assert all(after[h] != before[h] for h in HOSTS), (before, after)
    blue = status(BLUE_HOST)
    assert blue["lease"]["held_by_me"] and blue["trading_active"], blue
    assert status(GREEN_HOST)["role"] == "standby"
    epochs_never_interleave()
    positions_match_fills()


def test_ops_backups_lists_age_and_size_and_prunes_by_retention(deployed) -> None:
    cli, _ = deployed
    files = backup_files()
    assert len(files) >= 5, files
    listed = ops(cli, "backups")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines() if line.startswith("  hft_db_")]
    assert sorted(parts[0] for parts in lines) == files
    assert all(parts[1] == "age" and parts[3] == "size" for parts in lines), lines
    # the 2020 one is the oldest, and said so
    assert lines[-1][0] == "hft_db_20200101_000000.dump" and lines[-1][2].endswith("h"), lines
    cli.run("config", "set", "--path", "hft:database.backupRetentionCount", "2")
    cli.run("config", "set", "--path", "hft:database.backupRetentionDays", "0")
    pruned = ops(cli, "backups", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert backup_files() == sorted(parts[0] for parts in lines[:2])
    assert pruned.stdout.count("pruned hft_db_") == len(files) - 2
    # the deploy prunes by the same retention after its backups: nothing left to prune now
    cli.run("up", "--yes", "--skip-preview", timeout=1800)
    assert len(backup_files()) == 2


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
