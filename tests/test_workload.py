"""Tests of the reference workload workload/hft_system (issue 4).

Why: every runbook step the deployment automates (build, --validate-config, start, health,
cutover, kill switch, rollback, metrics scrape, state sync) runs against this binary, so its
interface must hold exactly. These tests build it with CMake, run it against a real
PostgreSQL (tests.pgcluster) with the schema from the project's migration engine, and talk
to it over HTTP on 127.0.0.1. No mocks and no skips: a missing prerequisite fails with a
message that names it. Every process started here is stopped here, by PID.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.pgcluster import temporary_cluster

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "workload" / "hft_system"
BUILD = SRC / "build" / "pytest"  # gitignored (workload/hft_system/build/)
PUBLISH = ROOT / "workload" / "publish-repo.sh"
INSTALL_HINT = "install with: tools/install-apt-deps.sh deps/apt/workload.txt"
DB_USER = "hft_user"
DB_PASSWORD = "wl-db-" + uuid.uuid4().hex[:12]
EXCHANGE_KEY = "wl-key-" + uuid.uuid4().hex[:12]
API_TOKEN = "wl-token-" + uuid.uuid4().hex  # HFT_API_TOKEN of the instances
USE_TOKEN = object()  # Instance.request: send the instance's own token
TICK_MS = 20


def source_version() -> str:
    m = re.search(r'set\(HFT_VERSION "([0-9.]+)"\)', (SRC / "release.cmake").read_text())
    assert m, "release.cmake has no set(HFT_VERSION ...)"
    return m.group(1)


def run(cmd, *, cwd=None, timeout=900, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def cmake_build(src: Path, build: Path, *extra: str) -> Path:
    """Configure and build with CMake (-j2: the machine is shared); returns the binary."""
    for tool in ("cmake", "make", "g++", "pkg-config", "git"):
        if shutil.which(tool) is None:
            pytest.fail(f"prerequisite missing: '{tool}' is not installed; {INSTALL_HINT}")
    conf = run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *extra])
    if conf.returncode != 0:
        pytest.fail(f"cmake configure of {src} failed (missing Debian packages? {INSTALL_HINT}):\n"
                    f"{conf.stdout[-3000:]}\n{conf.stderr[-3000:]}")
    build_ = run(["cmake", "--build", str(build), "-j2"])
    if build_.returncode != 0:
        pytest.fail(f"build of {src} failed:\n{build_.stdout[-4000:]}\n{build_.stderr[-4000:]}")
    return build / "hft_system"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def binary() -> Path:
    return cmake_build(SRC, BUILD)


@pytest.fixture(scope="session")
def cluster():
    with temporary_cluster() as pg:
        pg.create_role(DB_USER, DB_PASSWORD)
        yield pg


def migrate(pg, dbname: str) -> None:
    if not (ROOT / "migrations" / "__main__.py").exists():
        pytest.fail("prerequisite missing: the migration engine (migrations/__main__.py)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = DB_PASSWORD
    proc = run([sys.executable, "-m", "migrations", "--dsn", pg.dsn(dbname, user=DB_USER), "up"],
               cwd=ROOT, env=env, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"migrations up failed on {dbname}:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture
def database(cluster):
    """A fresh database with the full schema (migrations 001-005), owned by hft_user."""
    name = "wl_" + uuid.uuid4().hex[:10]
    cluster.create_database(name, owner=DB_USER)
    migrate(cluster, name)
    return name


def db_rows(pg, dbname: str, sql: str, params=()):
    with psycopg.connect(pg.dsn(dbname, user=DB_USER, password=DB_PASSWORD),
                         autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def db_exec(pg, dbname: str, sql: str, params=()) -> None:
    """A statement that returns no rows (UPDATE, INSERT without RETURNING, ...)."""
    with psycopg.connect(pg.dsn(dbname, user=DB_USER, password=DB_PASSWORD),
                         autocommit=True) as conn:
        conn.execute(sql, params)


class Instance:
    """One hft_system process with its config file, logs and HTTP helpers."""

    def __init__(self, binary: Path, workdir: Path, config: dict, env: dict | None = None):
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = workdir / "production.json"
        self.write_config(config)
        self.port = config["api"]["port"]
        self.log_dir = Path(config["log_dir"])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.bodies: list[str] = []  # every response body, to look for leaked secrets

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, wait_healthy: bool = True) -> "Instance":
        self.stdout = open(self.workdir / "stdout.log", "ab")
        self.stderr = open(self.workdir / "stderr.log", "ab")
        self.proc = subprocess.Popen([str(self.binary), f"--config={self.config_path}"],
                                     cwd=self.workdir, env=self.env, stdout=self.stdout,
                                     stderr=self.stderr)

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"hft_system exited with {self.proc.returncode} at start:\n"
                            + (self.workdir / "stderr.log").read_text()[-3000:])
            try:
                return self.get("/status")[0] == 200
            except OSError:
                return False

        wait_for(up, 20, f"hft_system API on port {self.port}")
        if wait_healthy:
            wait_for(lambda: self.get("/health")[0] == 200, 20, "GET /health == 200")
        return self

    def request(self, method: str, path: str, body=None, raw: bytes | None = None,
                content_type: str = "application/json", token=USE_TOKEN):
        """token: the instance's HFT_API_TOKEN by default, None for no header, or a string."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1{path}", data=data,
                                     method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token is USE_TOKEN:
            token = self.env.get("HFT_API_TOKEN")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, text, ctype = resp.status, resp.read().decode(), resp.headers["Content-Type"]
        except urllib.error.HTTPError as e:
            status, text, ctype = e.code, e.read().decode(), e.headers["Content-Type"]
        self.bodies.append(text)
        if ctype and ctype.startswith("application/json"):
            return status, json.loads(text)
        return status, text

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM by PID; returns (exit code, seconds until exit)."""
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for f in ("stdout", "stderr"):
            if hasattr(self, f):
                getattr(self, f).close()

    def logs(self) -> str:
        return "".join((self.log_dir / n).read_text() for n in ("system.log", "errors.log")
                       if (self.log_dir / n).exists())


@pytest.fixture
def make_instance(binary, cluster, tmp_path):
    started: list[Instance] = []

    def make(dbname: str, *, name: str = "a", role: str = "primary", trading: bool = True,
             strategies=None, env=None, db_port=None, **extra) -> Instance:
        config = {
            "role": role,
            "trading_enabled": trading,
            "node_id": name,  # the default, the hostname, is the same for every instance here
            "api": {"bind": "127.0.0.1", "port": free_port()},
            "log_dir": str(tmp_path / name / "log"),
            "database": {"host": "127.0.0.1", "port": db_port or cluster.port, "name": dbname,
                         "user": DB_USER, "connect_timeout_seconds": 2},
            "exchanges": [{"name": "binance", "enabled": True},
                          {"name": "coinbase", "enabled": True}],
            "strategies": strategies if strategies is not None else [],
            "shutdown_timeout_seconds": 10,
            "tick_interval_ms": TICK_MS,
        }
        config.update(extra)
        full_env = {"DB_PASSWORD": DB_PASSWORD, "HFT_API_TOKEN": API_TOKEN}
        full_env.update(env or {})
        inst = Instance(binary, tmp_path / name, config, full_env)
        started.append(inst)
        return inst

    yield make
    for inst in started:
        inst.kill()


LIVE = {"id": "mm_btc", "name": "BTC market making", "symbol": "BTC-USD", "exchange": "binance",
        "paper_trading": False, "max_position": 1.0, "autostart": True}
PAPER = {"id": "paper_eth", "name": "ETH paper", "symbol": "ETH-USD", "exchange": "coinbase",
         "paper_trading": True, "max_position": 2.0, "autostart": True}


def order_count(cluster, db, where="true") -> int:
    return db_rows(cluster, db, f"SELECT count(*) FROM orders WHERE {where}")[0][0]


# ------------------------------------------------------------------------ command line


def test_version(binary):
    proc = run([str(binary), "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"hft_system {source_version()}"


def test_usage_errors(binary):
    proc = run([str(binary)])
    assert proc.returncode == 2 and "--config=PATH is required" in proc.stderr
    proc = run([str(binary), "--frobnicate"])
    assert proc.returncode == 2 and "unknown argument: --frobnicate" in proc.stderr


def good_config() -> dict:
    return {
        "role": "standby", "trading_enabled": False,
        "api": {"bind": "0.0.0.0", "port": 8080},
        "log_dir": "/var/log/hft_system",
        "database": {"host": "localhost", "port": 5432, "name": "hft_db", "user": "hft_user"},
        "exchanges": [{"name": "binance", "enabled": True}],
        "strategies": [dict(LIVE, exchange="binance")],
        "shutdown_timeout_seconds": 30,
    }


def validate(binary, path: Path) -> subprocess.CompletedProcess:
    return run([str(binary), "--validate-config", f"--config={path}"])


def test_validate_example_and_minimal_configs(binary, tmp_path):
    proc = validate(binary, SRC / "config" / "production.json.example")
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout
    minimal = {"role": "primary", "trading_enabled": True,
               "database": {"host": "db", "name": "hft_db", "user": "hft_user"},
               "exchanges": [{"name": "binance"}]}
    (tmp_path / "min.json").write_text(json.dumps(minimal))
    proc = validate(binary, tmp_path / "min.json")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "good.json").write_text(json.dumps(good_config()))
    assert validate(binary, tmp_path / "good.json").returncode == 0


def _set(cfg, dotted, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        cfg = cfg[int(k)] if isinstance(cfg, list) else cfg[k]
    cfg[keys[-1]] = value


def _del(cfg, dotted):
    keys = dotted.split(".")
    for k in keys[:-1]:
        cfg = cfg[int(k)] if isinstance(cfg, list) else cfg[k]
    del cfg[keys[-1]]


BAD_CONFIGS = [
    (lambda c: _set(c, "colour", "blue"), "unknown key 'colour'"),
    (lambda c: _set(c, "api.prot", 8080), "unknown key 'api.prot'"),
    (lambda c: _set(c, "api.port", "8080"), "'api.port' must be an integer, got string \"8080\""),
    (lambda c: _set(c, "api.bind", "localhost"),
     "'api.bind' must be an IP address literal (e.g. 127.0.0.1 or ::1), got \"localhost\""),
    (lambda c: _set(c, "node_id", "a b"), "'node_id' must be 1-128 characters"),
    (lambda c: _set(c, "lease", {"ttl_ms": 1000, "renew_interval_ms": 600}),
     "'lease.renew_interval_ms' must be at most half of 'lease.ttl_ms' (1000), got 600"),
    (lambda c: _set(c, "lease", {"ttl": 1000}), "unknown key 'lease.ttl'"),
    (lambda c: _set(c, "api.port", 70000), "'api.port' must be between 1 and 65535, got 70000"),
    (lambda c: _set(c, "role", "master"), "'role' must be one of primary, standby, got \"master\""),
    (lambda c: _set(c, "trading_enabled", "yes"), "'trading_enabled' must be a boolean"),
    (lambda c: _del(c, "role"), "missing required key 'role'"),
    (lambda c: _del(c, "database.host"), "missing required key 'database.host'"),
    (lambda c: _set(c, "database.password", "x"),
     "'database.password' is not allowed: the database password comes only from the "
     "environment variable DB_PASSWORD"),
    (lambda c: _set(c, "exchanges.0.api_key", "x"),
     "'exchanges[0].api_key' is not allowed: exchange keys come only from the environment "
     "variable BINANCE_API_KEY"),
    (lambda c: _set(c, "strategies.0.exchange", "kraken"),
     "'strategies[0].exchange' must name a configured exchange (binance), got \"kraken\""),
    (lambda c: _set(c, "strategies.0.max_position", -1),
     "'strategies[0].max_position' must be greater than 0, got -1"),
    (lambda c: _set(c, "shutdown_timeout_seconds", 0),
     "'shutdown_timeout_seconds' must be between 1 and 600, got 0"),
    (lambda c: _set(c, "exchanges", []), "'exchanges' must be a non-empty array"),
]


@pytest.mark.parametrize("mutate,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_validate_config_rejects_with_precise_reason(binary, tmp_path, mutate, message):
    cfg = good_config()
    mutate(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    proc = validate(binary, path)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_validate_config_bad_json_and_bad_strategy_file(binary, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"role": "primary",')
    proc = validate(binary, path)
    assert proc.returncode != 0 and "invalid JSON in" in proc.stderr
    assert validate(binary, tmp_path / "absent.json").returncode != 0

    sdir = tmp_path / "strategies"
    sdir.mkdir()
    (sdir / "ok.json").write_text(json.dumps(dict(PAPER, id="ok", exchange="binance")))
    (sdir / "typo.json").write_text(json.dumps(dict(PAPER, id="typo", exchange="binance",
                                                    max_postion=3)))
    cfg = good_config()
    cfg["strategies_dir"] = "strategies"  # relative to the config file's directory
    path.write_text(json.dumps(cfg))
    proc = validate(binary, path)
    assert proc.returncode != 0
    assert f"{sdir / 'typo.json'}: unknown key 'max_postion'" in proc.stderr
    (sdir / "typo.json").unlink()
    proc = validate(binary, path)
    assert proc.returncode == 0 and "2 strategies" in proc.stdout, proc.stderr


# ------------------------------------------------------------------------ API


def test_health_reports_database_problems(make_instance, cluster):
    closed_port = free_port()
    inst = make_instance("hft_db", name="nodb", db_port=closed_port).start(wait_healthy=False)
    status, body = inst.get("/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["reason"].startswith("database unreachable"), body
    assert inst.get("/status")[1]["database"]["connected"] is False
    assert "database" in (inst.log_dir / "system.log").read_text()

    empty = "wl_empty_" + uuid.uuid4().hex[:8]  # reachable, but no schema: not healthy
    cluster.create_database(empty, owner=DB_USER)
    inst2 = make_instance(empty, name="noschema").start(wait_healthy=False)
    status, body = wait_for(lambda: (r := inst2.get("/health"))[0] == 503 and
                            "positions" in r[1]["reason"] and r, 10, "503 naming positions")
    assert body["reason"].startswith("database query failed"), body


def test_status_health_config_and_secrets(make_instance, cluster, database):
    inst = make_instance(database, strategies=[LIVE],
                         env={"BINANCE_API_KEY": EXCHANGE_KEY}).start()
    status, body = inst.get("/health")
    assert (status, body) == (200, {"status": "healthy"})

    status, st = inst.get("/status")
    assert status == 200
    assert st["version"] == source_version()
    assert st["role"] == "primary" and st["trading_enabled"] is True
    assert st["exchanges"] == [
        {"name": "binance", "status": "connected", "simulated": True, "api_key_present": True},
        {"name": "coinbase", "status": "connected", "simulated": True, "api_key_present": False}]
    assert [s["id"] for s in st["strategies"]] == ["mm_btc"]
    assert st["killswitch"] == {"active": False, "reason": None, "activated_at": None}

    status, cfg = inst.get("/config")
    assert status == 200 and cfg["role"] == "primary" and cfg["api"]["port"] == inst.port
    assert "password" not in json.dumps(cfg)

    # PUT: unknown key, bad values, file-only keys -> 400 naming the key; nothing applied
    for body, msg in [({"rol": "primary"}, "unknown key 'rol'"),
                      ({"role": "master"}, "'role' must be one of primary, standby"),
                      ({"trading_enabled": "yes"}, "'trading_enabled' must be a boolean"),
                      ({"role": "standby", "api": {"port": 1}}, "'api' cannot be changed"),
                      ({}, "non-empty JSON object")]:
        status, err = inst.put("/config", body)
        assert status == 400 and msg in err["error"], (body, err)
    status, err = inst.put("/config", raw=b'{"role": ')
    assert status == 400 and "not valid JSON" in err["error"]
    assert inst.get("/status")[1]["role"] == "primary"

    # as the runbook sends it: curl -d (form content type) with a JSON body
    status, cfg = inst.put("/config", raw=b'{"role": "standby"}',
                           content_type="application/x-www-form-urlencoded")
    assert status == 200 and cfg["role"] == "standby"
    status, cfg = inst.put("/config", {"role": "primary", "trading_enabled": False})
    assert status == 200 and (cfg["role"], cfg["trading_enabled"]) == ("primary", False)

    assert inst.get("/nope")[0] == 404

    # secrets: never in a response or a log; the config file has none
    logs = inst.logs()
    for secret in (EXCHANGE_KEY, DB_PASSWORD):
        assert all(secret not in b for b in inst.bodies)
        assert secret not in logs
    assert "API key present" in logs and "password from DB_PASSWORD" in logs
    assert (inst.log_dir / "errors.log").exists()


def test_config_reload_and_requires_restart(make_instance, database):
    inst = make_instance(database, strategies=[]).start()
    status, body = inst.get("/config/status")
    assert status == 200 and body["requires_restart"] is False and body["config_valid"] is True

    # hot keys: role (changed in the file) and a new strategy are applied by a reload
    cfg = json.loads(inst.config_path.read_text())
    cfg["role"] = "standby"
    cfg["strategies"] = [dict(PAPER, autostart=False)]
    inst.write_config(cfg)
    assert inst.get("/config/status")[1]["requires_restart"] is False
    status, body = inst.get("/config/reload")
    assert status == 200, body
    assert set(body["applied"]) == {"role", "strategies.paper_eth"}
    assert body["requires_restart"] is False
    assert inst.get("/status")[1]["role"] == "standby"
    assert inst.get("/strategies/paper_eth")[0] == 200

    # restart-only keys: api.port and database.* changed on disk -> requires_restart
    cfg["api"]["port"] = inst.port + 1
    cfg["database"]["name"] = "other_db"
    inst.write_config(cfg)
    status, body = inst.get("/config/status")
    assert body["requires_restart"] is True
    assert body["restart_required_keys"] == ["api.port", "database.name"]
    status, body = inst.get("/config/reload")
    assert status == 200 and body["requires_restart"] is True and body["applied"] == []
    assert inst.get("/health")[0] == 200  # still serving on the old port

    # an invalid file is rejected whole, the running config stays
    inst.config_path.write_text('{"role": "primary", "trading_enabled": tru')
    status, body = inst.get("/config/reload")
    assert status == 400 and "invalid JSON" in body["error"]
    assert inst.get("/config/status")[1]["config_valid"] is False
    assert inst.get("/status")[1]["role"] == "standby"


def test_trading_positions_paper_and_strategies(make_instance, cluster, database, tmp_path):
    inst = make_instance(database, strategies=[LIVE, PAPER]).start()
    wait_for(lambda: order_count(cluster, database, "NOT paper AND status = 'filled'") >= 3, 15,
             "live fills")
    wait_for(lambda: order_count(cluster, database, "paper AND status = 'filled'") >= 3, 15,
             "paper fills")

    # paper fills are recorded with paper = true and never touch positions
    rows = db_rows(cluster, database, "SELECT DISTINCT paper, exchange, symbol FROM fills")
    assert set(rows) == {(False, "binance", "BTC-USD"), (True, "coinbase", "ETH-USD")}
    positions = db_rows(cluster, database, "SELECT exchange, symbol FROM positions")
    assert positions == [("binance", "BTC-USD")]

    status, body = inst.get("/positions")
    assert status == 200 and body["loaded_from_database"] is True
    [pos] = body["positions"]
    assert (pos["exchange"], pos["symbol"]) == ("binance", "BTC-USD")
    assert {"quantity", "avg_price", "market_price", "unrealized_pnl_usd"} <= pos.keys()
    assert abs(pos["quantity"]) <= LIVE["max_position"] + 1e-9

    status, body = inst.get("/strategies")
    assert status == 200 and [s["id"] for s in body["strategies"]] == ["mm_btc", "paper_eth"]
    for s in body["strategies"]:
        perf = s["performance"]
        assert isinstance(perf["daily_pnl_usd"], float) and math.isfinite(perf["daily_pnl_usd"])
        assert 0 <= perf["win_rate"] <= 1 and perf["orders"] >= 3
        assert s["status"] == "running"
    status, one = inst.get("/strategies/paper_eth")
    assert status == 200 and one["paper_trading"] is True and one["performance"]["orders"] >= 3
    assert inst.get("/strategies/absent")[0] == 404

    db_row = db_rows(cluster, database,
                     "SELECT name, enabled, paper_trading, config->>'symbol' FROM strategies "
                     "WHERE id = 'mm_btc'")
    assert db_row == [("BTC market making", True, False, "BTC-USD")]

    # runbook 5.3 / 7.2: load, paper trading, start, stop, delete
    sfile = tmp_path / "new_strategy.json"
    sfile.write_text(json.dumps({"id": "new_strategy", "symbol": "SOL-USD", "exchange": "binance",
                                 "max_position": 10}))
    status, body = inst.post("/strategies/load", {"config_file": str(sfile)})
    assert status == 201 and body["status"] == "stopped" and body["id"] == "new_strategy"
    assert inst.post("/strategies/load", {"config_file": str(sfile)})[0] == 409
    bad = tmp_path / "bad_strategy.json"
    bad.write_text(json.dumps({"id": "b", "symbol": "X", "exchange": "kraken", "max_position": 1}))
    status, err = inst.post("/strategies/load", {"config_file": str(bad)})
    assert status == 400 and "'exchange' must name a configured exchange" in err["error"]
    assert inst.post("/strategies/load", {"file": "x"})[0] == 400

    status, body = inst.put("/strategies/new_strategy/config", {"paper_trading": True})
    assert status == 200 and body["paper_trading"] is True
    for bad_body in ({"paper_trading": "yes"}, {"max_position": 3}):
        assert inst.put("/strategies/new_strategy/config", bad_body)[0] == 400
    status, body = inst.post("/strategies/new_strategy/start")
    assert status == 200 and body["status"] == "running"
    wait_for(lambda: order_count(cluster, database, "strategy_id = 'new_strategy' AND paper") > 0,
             15, "paper orders of new_strategy")
    assert order_count(cluster, database, "strategy_id = 'new_strategy' AND NOT paper") == 0
    status, body = inst.post("/strategies/new_strategy/stop")
    assert status == 200 and body["status"] == "stopped"
    assert db_rows(cluster, database,
                   "SELECT enabled FROM strategies WHERE id = 'new_strategy'") == [(False,)]
    status, body = inst.delete("/strategies/new_strategy")
    assert status == 200 and body == {"status": "deleted", "id": "new_strategy"}
    assert inst.get("/strategies/new_strategy")[0] == 404
    assert inst.post("/strategies/new_strategy/start")[0] == 404


def test_standby_never_trades(make_instance, cluster, database):
    inst = make_instance(database, role="standby", trading=True,
                         strategies=[LIVE, PAPER]).start()
    time.sleep(60 * TICK_MS / 1000)  # 60 ticks: many signals, none may become an order
    st = inst.get("/status")[1]
    assert st["role"] == "standby" and st["trading_active"] is False
    assert st["strategies_running"] == 2
    assert order_count(cluster, database) == 0
    assert db_rows(cluster, database, "SELECT count(*) FROM fills") == [(0,)]
    assert "hft_orders_total 0" in inst.get("/metrics")[1]

    # cutover (runbook 4.1 step 7): role primary -> it trades
    assert inst.put("/config", {"role": "primary"})[0] == 200
    wait_for(lambda: order_count(cluster, database) > 0, 15, "orders after role primary")
    # and back to standby: working orders are cancelled and no new order is sent
    assert inst.put("/config", {"role": "standby"})[0] == 200
    time.sleep(0.1)
    before = order_count(cluster, database)
    time.sleep(30 * TICK_MS / 1000)
    assert order_count(cluster, database) == before
    assert order_count(cluster, database, "status IN ('new', 'working')") == 0


def test_killswitch(make_instance, cluster, database):
    inst = make_instance(database, strategies=[LIVE]).start()
    wait_for(lambda: order_count(cluster, database) >= 2, 15, "orders")
    assert inst.post("/killswitch", {"reason": 7})[0] == 400
    status, body = inst.post("/killswitch", raw=b'{"reason": "Critical bug - rolling back"}',
                             content_type="application/x-www-form-urlencoded")
    assert status == 200 and body["status"] == "killswitch_activated"
    before = order_count(cluster, database)
    assert order_count(cluster, database, "status IN ('new', 'working')") == 0
    st = inst.get("/status")[1]
    assert st["killswitch"]["active"] is True
    assert st["killswitch"]["reason"] == "Critical bug - rolling back"
    assert st["trading_enabled"] is False and st["trading_active"] is False
    time.sleep(30 * TICK_MS / 1000)
    assert order_count(cluster, database) == before  # stopped at once, stays stopped
    assert db_rows(cluster, database, "SELECT action, reason FROM killswitch_events") == [
        ("activate", "Critical bug - rolling back")]
    assert "KILL SWITCH activated: Critical bug - rolling back" in inst.logs()

    # re-enabling trading releases it; the last reason stays visible
    assert inst.put("/config", {"trading_enabled": True})[0] == 200
    st = inst.get("/status")[1]
    assert st["killswitch"]["active"] is False
    assert st["killswitch"]["reason"] == "Critical bug - rolling back"
    wait_for(lambda: order_count(cluster, database) > before, 15, "orders after release")


def test_graceful_shutdown_then_second_instance_sees_positions(make_instance, cluster, database):
    a = make_instance(database, name="blue", strategies=[LIVE, PAPER]).start()
    wait_for(lambda: db_rows(cluster, database,
                             "SELECT count(*) FROM positions WHERE quantity <> 0")[0][0] > 0,
             15, "a non-zero position")
    rc, seconds = a.terminate(timeout=15)
    assert rc == 0, (a.workdir / "stderr.log").read_text()
    assert seconds < a.config["shutdown_timeout_seconds"]
    log = (a.log_dir / "system.log").read_text()
    assert "received SIGTERM" in log and "positions flushed" in log
    assert log.rstrip().endswith("shutdown complete")
    assert order_count(cluster, database, "status IN ('new', 'working')") == 0
    assert db_rows(cluster, database, "SELECT bool_or(enabled) FROM strategies") == [(False,)]
    in_db = {(e, s): (float(q), float(p)) for e, s, q, p in db_rows(
        cluster, database, "SELECT exchange, symbol, quantity, avg_price FROM positions")}

    # green, started later (standby, no strategies): sees what blue left (runbook 4.1 step 6)
    b = make_instance(database, name="green", role="standby", trading=False).start()
    got = {(p["exchange"], p["symbol"]): (p["quantity"], p["avg_price"])
           for p in b.get("/positions")[1]["positions"]}
    assert got.keys() == in_db.keys()
    for key, (q, p) in in_db.items():
        assert got[key][0] == pytest.approx(q, abs=1e-9)
        assert got[key][1] == pytest.approx(p, rel=1e-9)
    assert "loaded 1 positions" in (b.log_dir / "system.log").read_text()


# ------------------------------------------------------------------------ metrics

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})?'
    r' (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse_prometheus(text: str) -> dict:
    """Strict parser of the text exposition format: returns {family: {type, samples}}."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in families, f"TYPE {name} declared twice"
            families[name] = {"type": kind, "samples": []}
            current = name
            continue
        assert not line.startswith("#") and line, f"bad line: {line!r}"
        m = SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        name = m["name"]
        family = current
        suffixes = ("_bucket", "_sum", "_count") if families[current]["type"] == "histogram" \
            else ("",)
        assert any(name == current + s for s in suffixes), \
            f"sample {name} outside its family block ({current})"
        labels = dict(LABEL.findall(m["labels"] or ""))
        families[family]["samples"].append((name, labels, float(m["value"])))
    return families


def test_metrics_prometheus_text(make_instance, cluster, database):
    inst = make_instance(database, strategies=[LIVE, PAPER]).start()
    wait_for(lambda: order_count(cluster, database, "status = 'filled'") >= 4, 15, "fills")
    for path in ("/status", "/positions", "/strategies", "/nope"):
        inst.get(path)
    status, text = inst.get("/metrics")
    assert status == 200 and isinstance(text, str)
    fams = parse_prometheus(text)

    assert fams["hft_build_info"]["type"] == "gauge"
    [(_, labels, value)] = fams["hft_build_info"]["samples"]
    assert labels["version"] == source_version() and value == 1

    for hist in ("hft_http_request_duration_seconds", "hft_order_latency_seconds"):
        assert fams[hist]["type"] == "histogram"
        groups: dict[tuple, dict] = {}
        for name, labels, value in fams[hist]["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if name.endswith("_bucket"):
                g["buckets"].append((float(labels["le"]), value))
            elif name.endswith("_sum"):
                g["sum"] = value
            else:
                g["count"] = value
        assert groups, hist
        for g in groups.values():
            les = [le for le, _ in g["buckets"]]
            counts = [c for _, c in g["buckets"]]
            assert les == sorted(les) and les[-1] == math.inf
            assert counts == sorted(counts), "buckets must be cumulative"
            assert counts[-1] == g["count"] and g["sum"] >= 0
    handlers = {labels["handler"] for _, labels, _ in
                fams["hft_http_request_duration_seconds"]["samples"]}
    assert {"status", "positions", "strategies"} <= handlers
    order_count_metric = [v for n, _, v in fams["hft_order_latency_seconds"]["samples"]
                          if n == "hft_order_latency_seconds_count"]
    assert order_count_metric[0] >= 4

    assert fams["hft_orders_total"]["type"] == "counter"
    by_paper = {labels["paper"]: v for _, labels, v in fams["hft_orders_total"]["samples"]}
    assert by_paper["true"] >= 2 and by_paper["false"] >= 2
    assert fams["hft_errors_total"]["type"] == "counter"
    assert fams["hft_trading_active"]["samples"][0][2] == 1
    assert any(n == "hft_position_quantity" for n, _, _ in fams["hft_position_quantity"]["samples"])


# ------------------------------------------------------------------------ releases


def test_publish_repo_releases_and_strategy_metrics(binary, make_instance, cluster, tmp_path):
    dest = tmp_path / "pub" / "hft_system.git"
    first = run(["bash", str(PUBLISH), str(dest)])
    assert first.returncode == 0, first.stderr
    refs = run(["git", "--git-dir", str(dest), "show-ref"]).stdout
    assert re.search(r"refs/tags/v1\.0\.0$", refs, re.M) and re.search(r"refs/tags/v1\.1\.0$",
                                                                        refs, re.M)
    again = run(["bash", str(PUBLISH), str(dest)])
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert run(["git", "--git-dir", str(dest), "show-ref"]).stdout == refs
    # deterministic: a second destination gets the very same hashes
    other = tmp_path / "pub2.git"
    assert run(["bash", str(PUBLISH), str(other)]).returncode == 0
    assert run(["git", "--git-dir", str(other), "show-ref"]).stdout == refs
    # never replaces something that is not a bare repository
    (tmp_path / "notgit").mkdir()
    refused = run(["bash", str(PUBLISH), str(tmp_path / "notgit")])
    assert refused.returncode != 0 and "refusing" in refused.stderr

    diff = run(["git", "--git-dir", str(dest), "diff", "--stat", "v1.0.0", "v1.1.0"]).stdout
    assert "release.cmake" in diff and "1 file changed" in diff
    files = run(["git", "--git-dir", str(dest), "ls-tree", "-r", "--name-only", "v1.1.0"])
    assert "CMakeLists.txt" in files.stdout.split()  # the repository root is the source
    assert "build" not in " ".join(files.stdout.split())

    # the deployment's steps: clone, checkout tags/v1.0.0, cmake Release, make, make install
    clone = tmp_path / "opt_hft_system"
    assert run(["git", "clone", "-q", str(dest), str(clone)]).returncode == 0
    assert run(["git", "-C", str(clone), "checkout", "-q", "tags/v1.0.0"]).returncode == 0
    old = cmake_build(clone, clone / "build")
    cache = (clone / "build" / "CMakeCache.txt").read_text()
    assert "CMAKE_INSTALL_PREFIX:PATH=/opt/hft_system" in cache
    stage = tmp_path / "stage"
    inst = run(["make", "-C", str(clone / "build"), "install", f"DESTDIR={stage}"])
    assert inst.returncode == 0, inst.stderr
    installed = stage / "opt" / "hft_system" / "bin" / "hft_system"
    assert run([str(installed), "--version"]).stdout.strip() == "hft_system 1.0.0"

    # v1.1.0 of the repository is this work tree (same files), built by the binary fixture
    for path in files.stdout.split():
        blob = subprocess.run(["git", "--git-dir", str(dest), "show", f"v1.1.0:{path}"],
                              capture_output=True, check=True).stdout
        assert blob == (SRC / path).read_bytes(), f"v1.1.0:{path} differs from the work tree"
    assert source_version() == "1.1.0"

    # v1.0.0 does not write strategy_metrics; v1.1.0 does (migration 005)
    for version, exe in (("1.0.0", installed), ("1.1.0", binary)):
        db = "wl_rel_" + version.replace(".", "_") + "_" + uuid.uuid4().hex[:6]
        cluster.create_database(db, owner=DB_USER)
        migrate(cluster, db)
        inst_ = make_instance(db, name="rel" + version, strategies=[LIVE])
        inst_.binary = exe
        inst_.start()
        assert inst_.get("/status")[1]["version"] == version
        wait_for(lambda: order_count(cluster, db, "status = 'filled'") >= 2, 15, "fills")
        time.sleep(1.5)
        n = db_rows(cluster, db, "SELECT count(*) FROM strategy_metrics")[0][0]
        if version == "1.0.0":
            assert n == 0
            assert inst_.get("/status")[1]["features"]["strategy_metrics"] is False
        else:
            assert n >= 4
            names = {r[0] for r in db_rows(cluster, db,
                                           "SELECT DISTINCT metric_name FROM strategy_metrics")}
            assert names == {"daily_pnl_usd", "win_rate", "orders", "position"}
        inst_.kill()


# ------------------------------------------------------------------------ restart-only keys


def test_restart_keys_cli_and_config_status(binary, make_instance, database):
    """Issue 12: one list of restart-only keys, the same from the CLI and the API."""
    proc = run([str(binary), "--restart-keys"])
    assert proc.returncode == 0, proc.stderr
    keys = json.loads(proc.stdout)
    assert {"api.bind", "api.port", "log_dir", "database.host", "database.name", "exchanges",
            "node_id", "lease.ttl_ms", "lease.renew_interval_ms"} <= set(keys)
    assert not {"role", "trading_enabled", "tick_interval_ms", "strategies"} & set(keys)
    inst = make_instance(database, role="standby", trading=False).start()
    status, body = inst.get("/config/status", token=None)
    assert status == 200 and body["restart_only_keys"] == keys
    cfg = json.loads(inst.config_path.read_text())
    cfg["node_id"] = "renamed"
    cfg["lease"] = {"ttl_ms": 4000, "renew_interval_ms": 500}
    inst.write_config(cfg)
    body = inst.get("/config/status")[1]
    assert body["restart_required_keys"] == ["node_id", "lease.ttl_ms", "lease.renew_interval_ms"]


# ------------------------------------------------------------------------ API security (issue 10)

WRITES = [("PUT", "/config", {"trading_enabled": False}),
          ("GET", "/config/reload", None),
          ("POST", "/config/reload", None),
          ("POST", "/killswitch", {"reason": "auth test"}),
          ("POST", "/strategies/load", {"config_file": "/nonexistent.json"}),
          ("POST", "/strategies/mm_btc/stop", None),
          ("POST", "/strategies/mm_btc/start", None),
          ("PUT", "/strategies/mm_btc/config", {"paper_trading": True}),
          ("DELETE", "/strategies/mm_btc", None),
          ("POST", "/fence", {}),
          ("POST", "/promote", {})]
READS = ["/health", "/status", "/config", "/config/status", "/positions", "/strategies",
         "/strategies/mm_btc", "/metrics"]


def test_api_token_required_for_state_changes(make_instance, cluster, database):
    inst = make_instance(database, role="standby", trading=False,
                         strategies=[dict(LIVE, autostart=False)]).start()
    for path in READS:  # read-only GETs stay open
        assert inst.get(path, token=None)[0] == 200, path
    before = inst.get("/status")[1]
    for method, path, body in WRITES:
        status, err = inst.request(method, path, body, token=None)
        assert status == 401, (method, path, status, err)
        assert "Authorization: Bearer" in err["error"], err
        status, err = inst.request(method, path, body, token="wrong-" + API_TOKEN)
        assert status == 401 and "not valid" in err["error"], (method, path, err)
        status, err = inst.request(method, path, body, token=API_TOKEN[:-1])  # a prefix
        assert status == 401, (method, path)
        req = urllib.request.Request(f"http://127.0.0.1:{inst.port}/api/v1{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", "Basic " + API_TOKEN)  # not a bearer token
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401 and e.value.headers["WWW-Authenticate"].startswith("Bearer")
    after = inst.get("/status")[1]  # nothing of it happened
    assert (after["role"], after["trading_enabled"], after["killswitch"]["active"]) == \
        (before["role"], before["trading_enabled"], False)
    assert after["strategies"] == before["strategies"]
    assert db_rows(cluster, database, "SELECT count(*) FROM killswitch_events") == [(0,)]

    # with the right token they work
    assert inst.put("/config", {"trading_enabled": False})[0] == 200
    assert inst.get("/config/reload")[0] == 200
    assert inst.post("/strategies/mm_btc/start")[1]["status"] == "running"
    assert inst.put("/strategies/mm_btc/config", {"paper_trading": True})[0] == 200
    assert inst.post("/killswitch", {"reason": "auth test"})[0] == 200
    assert inst.delete("/strategies/mm_btc")[0] == 200
    assert inst.post("/fence", {})[0] == 200

    logs = inst.logs()
    assert API_TOKEN not in logs and all(API_TOKEN not in b for b in inst.bodies)
    assert "state-changing requests need 'Authorization: Bearer'" in logs
    assert "READ-ONLY" not in logs


def test_no_token_means_read_only_api(make_instance, database):
    inst = make_instance(database, role="standby", trading=False, strategies=[LIVE],
                         env={"HFT_API_TOKEN": ""}).start()
    for method, path, body in WRITES:
        for token in (None, "anything"):
            status, err = inst.request(method, path, body, token=token)
            assert status == 403, (method, path, status)
            assert err["read_only"] is True and "HFT_API_TOKEN" in err["error"]
            assert "read-only" in err["error"]
    for path in READS:
        assert inst.get(path, token=None)[0] == 200, path
    assert inst.get("/status")[1]["role"] == "standby"
    assert inst.logs().count("API is READ-ONLY: HFT_API_TOKEN is not set") == 1


def test_bind_and_node_id_defaults(make_instance, database):
    inst = make_instance(database, role="standby", trading=False)
    cfg = dict(inst.config)
    cfg["api"] = {"port": inst.port}  # no bind: the default
    del cfg["node_id"]  # the default: the hostname
    inst.write_config(cfg)
    inst.start()
    assert inst.get("/config")[1]["api"]["bind"] == "127.0.0.1"
    assert inst.get("/status")[1]["node_id"] == socket.gethostname()
    assert "API listening on 127.0.0.1:" in inst.logs()
    # another loopback address of this host: nothing listens there (not 0.0.0.0)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.2", inst.port)) != 0
    example = json.loads((SRC / "config" / "production.json.example").read_text())
    assert example["api"]["bind"] == "127.0.0.1"


# ------------------------------------------------------------------------ one primary (issue 11)


def set_lease(pg, db, holder, epoch, seconds):
    """What another node would do: hold the lease with this epoch for `seconds`."""
    db_exec(pg, db, "UPDATE trading_lease SET holder = %s, epoch = %s, expires_at = "
            "clock_timestamp() + %s * interval '1 second' WHERE book = 'primary'",
            (holder, epoch, seconds))


def insert_order(pg, db, epoch, cid=None, status="working"):
    cid = cid or "sql-" + uuid.uuid4().hex[:8]
    return db_rows(pg, db, "INSERT INTO orders (client_order_id, strategy_id, exchange, symbol, "
                   "side, quantity, price, status, epoch) VALUES (%s, 's', 'binance', 'BTC-USD', "
                   "'buy', 1, 100, %s, %s) RETURNING id", (cid, status, epoch))[0][0]


def fenced(pg, db, sql, params=()):
    with pytest.raises(psycopg.Error) as e:
        db_exec(pg, db, sql, params)
    assert "fenced:" in str(e.value), e.value
    return str(e.value)


def test_database_refuses_stale_epoch(cluster, database):
    """Migration 006: the database itself refuses a write with a stale fencing token."""
    # before any fencing-aware node took the lease (epoch 0): writers without an epoch pass
    assert db_rows(cluster, database, "SELECT epoch, holder FROM trading_lease") == [(0, None)]
    legacy = insert_order(cluster, database, None)
    set_lease(cluster, database, "a", 3, 60)
    current = insert_order(cluster, database, 3)
    msg = fenced(cluster, database, "INSERT INTO orders (client_order_id, exchange, symbol, side, "
                 "quantity, price, status, epoch) VALUES ('stale', 'binance', 'BTC-USD', 'buy', 1, "
                 "100, 'working', 2)")
    assert "held by a with epoch 3" in msg
    fenced(cluster, database, "INSERT INTO orders (client_order_id, exchange, symbol, side, "
           "quantity, price, status) VALUES ('noepoch', 'binance', 'BTC-USD', 'buy', 1, 1, 'new')")

    # a stale node's fill: order update, fill and position in one transaction -> all refused
    db_exec(cluster, database, "INSERT INTO positions (exchange, symbol, quantity, avg_price, "
            "epoch) VALUES ('binance', 'BTC-USD', 5, 100, 3)")
    with psycopg.connect(cluster.dsn(database, user=DB_USER, password=DB_PASSWORD)) as conn:
        with pytest.raises(psycopg.Error) as e:
            with conn.transaction():
                conn.execute("INSERT INTO fills (order_id, exchange, symbol, side, quantity, "
                             "price, epoch) VALUES (%s, 'binance', 'BTC-USD', 'buy', 1, 100, 2)",
                             (current,))
                conn.execute("UPDATE positions SET quantity = 6, epoch = 2")
                conn.execute("UPDATE orders SET status = 'filled', epoch = 2 WHERE id = %s",
                             (current,))
        assert "fenced:" in str(e.value)
    assert db_rows(cluster, database, "SELECT count(*) FROM fills") == [(0,)]
    assert db_rows(cluster, database, "SELECT quantity, epoch FROM positions") == [(5, 3)]
    assert db_rows(cluster, database, "SELECT status FROM orders WHERE id = %s",
                   (current,)) == [("working",)]

    # the holder itself writes; an expired lease fences it too
    db_exec(cluster, database, "UPDATE orders SET status = 'filled', epoch = 3 WHERE id = %s",
            (current,))
    other = insert_order(cluster, database, 3)
    set_lease(cluster, database, "a", 3, -1)
    assert "expired" in fenced(cluster, database, "UPDATE orders SET price = 99 WHERE id = %s",
                               (other,))
    # a stale node may cancel (only cancel: no other change) -- it reduces risk
    set_lease(cluster, database, "b", 4, 60)
    fenced(cluster, database, "UPDATE orders SET status = 'cancelled', price = 1 WHERE id = %s",
           (other,))
    fenced(cluster, database, "UPDATE orders SET status = 'filled' WHERE id = %s", (other,))
    db_exec(cluster, database, "UPDATE orders SET status = 'cancelled', updated_at = now() "
            "WHERE id IN (%s, %s)", (other, legacy))
    # but not the orders of the current holder
    mine = insert_order(cluster, database, 4)
    db_exec(cluster, database, "UPDATE trading_lease SET epoch = 4")  # (still b, valid)
    fenced_msg = None
    try:
        db_exec(cluster, database, "UPDATE orders SET status = 'cancelled', epoch = 3 "
                "WHERE id = %s", (mine,))
    except psycopg.Error as e:
        fenced_msg = str(e)
    assert fenced_msg and "fenced:" in fenced_msg
    # operator corrections of positions (no epoch) only while nobody holds the lease
    fenced(cluster, database, "UPDATE positions SET quantity = 7, epoch = NULL")
    db_exec(cluster, database, "UPDATE trading_lease SET holder = NULL, expires_at = NULL")
    db_exec(cluster, database, "UPDATE positions SET quantity = 7, epoch = NULL")
    fenced(cluster, database, "UPDATE positions SET quantity = 8, epoch = 4")  # released
    fenced(cluster, database, "INSERT INTO orders (client_order_id, exchange, symbol, side, "
           "quantity, price, status, epoch) VALUES ('late', 'binance', 'BTC-USD', 'buy', 1, 1, "
           "'new', 4)")

    # 006 is safe to run again (the engine's contract for re-applied files)
    sql = (ROOT / "migrations" / "006_primary_lease_fencing.sql").read_text()
    with psycopg.connect(cluster.dsn(database, user=DB_USER, password=DB_PASSWORD)) as conn:
        conn.execute(sql)
    assert db_rows(cluster, database, "SELECT count(*), max(epoch) FROM trading_lease") == [(1, 4)]


def lease_of(inst):
    return inst.get("/status")[1]["lease"]


def test_two_nodes_promote_fence_cutover(make_instance, cluster, database):
    a = make_instance(database, name="a", role="standby", trading=False, strategies=[LIVE]).start()
    b = make_instance(database, name="b", role="standby", trading=False, strategies=[LIVE]).start()
    assert lease_of(a)["holder"] is None and lease_of(a)["held_by_me"] is False

    status, body = a.post("/promote")
    assert status == 200, body
    assert (body["status"], body["node_id"], body["epoch"], body["new_epoch"]) == \
        ("promoted", "a", 1, True)
    assert body["role"] == "primary" and body["trading_enabled"] is True
    assert body["strategies_started"] == []  # LIVE autostarts
    again = a.post("/promote")[1]  # idempotent: the same epoch
    assert (again["epoch"], again["new_epoch"]) == (1, False)
    wait_for(lambda: order_count(cluster, database, "epoch = 1 AND status = 'filled'") >= 2, 15,
             "orders of a with epoch 1")
    st = a.get("/status")[1]
    assert st["trading_active"] is True and st["lease"]["held_by_me"] is True
    assert st["lease"]["holder"] == "a" and st["lease"]["epoch"] == 1
    assert st["lease"]["expires_at"].endswith("Z")

    # B cannot become primary while A holds the lease: 409 naming the holder and expiry
    status, err = b.post("/promote")
    assert status == 409, err
    assert "held by a (epoch 1) until" in err["error"]
    assert err["lease"]["holder"] == "a"
    status, err = b.put("/config", {"role": "primary", "trading_enabled": True})
    assert status == 409 and "held by a" in err["error"]
    st = b.get("/status")[1]
    assert st["role"] == "standby" and st["trading_active"] is False
    wait_for(lambda: lease_of(b)["holder"] == "a", 5, "b sees a as the holder")

    # fence A: trading off, orders cancelled and confirmed, lease released
    status, body = a.post("/fence", {"reason": "cutover to b"})
    assert status == 200, body
    assert body["status"] == "fenced" and body["epoch_released"] == 1
    assert body["working_orders_in_db"] == 0 and body["last_order_at"]
    assert body["role"] == "standby" and body["trading_enabled"] is False
    fence_time = db_rows(cluster, database, "SELECT now()")[0][0]
    assert order_count(cluster, database, "status IN ('new', 'working')") == 0
    assert db_rows(cluster, database, "SELECT holder, epoch FROM trading_lease") == [(None, 1)]
    again = a.post("/fence")[1]  # idempotent
    assert again["already_fenced"] is True and again["epoch_released"] is None

    # while nobody holds it an operator reconciles a position; promotion reloads it
    # (epoch = NULL marks an operator's write; without it the row keeps a's epoch and the
    # database refuses it like a write from a)
    fenced(cluster, database, "UPDATE positions SET quantity = 0.125")
    db_exec(cluster, database, "UPDATE positions SET quantity = 0.125, avg_price = 49000, "
            "epoch = NULL WHERE exchange = 'binance' AND symbol = 'BTC-USD'")
    status, body = b.post("/promote", {"trading_enabled": False})
    assert status == 200 and body["epoch"] == 2 and body["trading_enabled"] is False, body
    [pos] = b.get("/positions")[1]["positions"]
    assert (pos["quantity"], pos["avg_price"]) == (0.125, 49000)
    status, body = b.post("/promote")
    assert status == 200 and (body["epoch"], body["new_epoch"]) == (2, False)
    wait_for(lambda: order_count(cluster, database, "epoch = 2 AND status = 'filled'") >= 2, 15,
             "orders of b with epoch 2")

    # A can no longer write: nothing of epoch 1 after its fence; its promote is refused
    assert order_count(cluster, database, "epoch = 1 AND updated_at > %s" % f"'{fence_time}'") == 0
    status, err = a.post("/promote")
    assert status == 409 and "held by b (epoch 2)" in err["error"]
    assert a.put("/config", {"role": "primary", "trading_enabled": True})[0] == 409
    assert a.get("/status")[1]["trading_active"] is False
    assert a.get("/health")[0] == 200  # a fenced standby is healthy
    assert order_count(cluster, database, "epoch = 1 AND updated_at > %s" % f"'{fence_time}'") == 0
    assert "PROMOTED: b is primary with lease epoch 2" in b.logs()
    assert "FENCED (cutover to b)" in a.logs()


def test_start_as_primary_while_another_holds_the_lease(make_instance, cluster, database):
    a = make_instance(database, name="a", strategies=[LIVE]).start()
    assert lease_of(a)["my_epoch"] == 1
    b = make_instance(database, name="b", strategies=[LIVE]).start(wait_healthy=False)
    status, body = wait_for(lambda: (r := b.get("/health"))[0] == 503 and "lease" in
                            r[1]["reason"] and r, 10, "b unhealthy because of the lease")
    assert "held by a (epoch 1)" in body["reason"]
    st = b.get("/status")[1]
    assert st["trading_enabled"] is False and st["trading_active"] is False
    assert "held by a" in st["trading_stopped_reason"] and st["lease"]["held_by_me"] is False
    time.sleep(20 * TICK_MS / 1000)
    assert order_count(cluster, database, "epoch IS DISTINCT FROM 1") == 0
    # the operator fences a and promotes b
    assert a.post("/fence")[0] == 200
    status, body = b.post("/promote")
    assert status == 200 and body["epoch"] == 2
    assert b.get("/health")[0] == 200 and b.get("/status")[1]["trading_stopped_reason"] is None


FAST_LEASE = {"ttl_ms": 1000, "renew_interval_ms": 200}


def test_node_that_loses_its_lease_stops_trading(make_instance, cluster, database):
    a = make_instance(database, name="a", strategies=[LIVE], lease=FAST_LEASE).start()
    wait_for(lambda: order_count(cluster, database, "epoch = 1") >= 2, 15, "orders of a")
    # someone else takes the lease (bump the epoch in SQL)
    set_lease(cluster, database, "intruder", 2, 60)
    t0 = time.monotonic()
    st = wait_for(lambda: (s := a.get("/status")[1])["trading_active"] is False and s, 5,
                  "a stops trading")
    assert time.monotonic() - t0 < 0.2 + 0.5  # within the renew interval (+ slack)
    assert "lease lost" in st["trading_stopped_reason"] and "intruder" in st["trading_stopped_reason"]
    assert st["trading_enabled"] is False and st["lease"]["held_by_me"] is False
    status, body = a.get("/health")
    assert status == 503 and "lease lost" in body["reason"]
    time.sleep(0.3)
    stop = db_rows(cluster, database, "SELECT now()")[0][0]
    time.sleep(20 * TICK_MS / 1000)
    assert order_count(cluster, database, f"created_at > '{stop}'") == 0
    assert order_count(cluster, database, "status IN ('new', 'working')") == 0  # it cancelled
    assert "STOPPED TRADING: lease lost" in a.logs()
    # once the intruder is gone an operator promotes it again: a new epoch
    db_exec(cluster, database, "UPDATE trading_lease SET holder = NULL, expires_at = NULL")
    status, body = a.post("/promote")
    assert status == 200 and body["epoch"] == 3
    assert a.get("/health")[0] == 200
    wait_for(lambda: order_count(cluster, database, "epoch = 3") >= 1, 15, "orders of epoch 3")


def test_renewal_refused_stops_trading_without_any_write(make_instance, cluster, database):
    """No order in flight to hit the database's fence: the renewal alone must notice."""
    a = make_instance(database, name="a", strategies=[], lease=FAST_LEASE).start()
    assert lease_of(a)["held_by_me"] is True
    set_lease(cluster, database, "intruder", 5, 60)
    t0 = time.monotonic()
    st = wait_for(lambda: (s := a.get("/status")[1])["trading_enabled"] is False and s, 5,
                  "a stops trading")
    assert time.monotonic() - t0 < 0.2 + 0.5
    assert "renewal of epoch 1 refused" in st["trading_stopped_reason"]
    assert "held by intruder (epoch 5)" in st["trading_stopped_reason"]
    assert st["lease"]["holder"] == "intruder" and st["lease"]["my_epoch"] is None


def test_paused_primary_is_fenced_after_expiry(make_instance, cluster, database):
    """Kleppmann's case: the old primary pauses past its lease, another takes over, the old
    one wakes up believing it is primary. Its writes must fail and it must stop by itself."""
    a = make_instance(database, name="a", strategies=[LIVE], lease=FAST_LEASE).start()
    b = make_instance(database, name="b", role="standby", trading=False, strategies=[LIVE],
                      lease=FAST_LEASE).start()
    wait_for(lambda: order_count(cluster, database, "epoch = 1") >= 2, 15, "orders of a")
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        status, err = b.post("/promote")
        assert status == 409  # not expired yet
        time.sleep(1.3)  # > ttl
        status, body = b.post("/promote")
        assert status == 200 and body["epoch"] == 2, body
        took_over = db_rows(cluster, database, "SELECT now()")[0][0]
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    st = wait_for(lambda: (s := a.get("/status")[1])["trading_active"] is False and s, 5,
                  "a stops trading after waking up")
    assert "lease" in st["trading_stopped_reason"]
    st = wait_for(lambda: (s := a.get("/status")[1])["trading_enabled"] is False and s, 5,
                  "a turns trading off by itself")
    assert "lease lost" in st["trading_stopped_reason"]
    time.sleep(0.5)
    assert order_count(cluster, database, f"epoch = 1 AND updated_at > '{took_over}' "
                       "AND status <> 'cancelled'") == 0
    assert db_rows(cluster, database, "SELECT count(*) FROM fills WHERE epoch = 1 AND "
                   f"filled_at > '{took_over}'") == [(0,)]
    wait_for(lambda: order_count(cluster, database, "epoch = 2") >= 1, 15, "orders of b")
    assert lease_of(b)["held_by_me"] is True and lease_of(a)["holder"] == "b"


# ------------------------------------------------------------------------ paper record (migration 007)


def paper_since_in_db(pg, db, sid):
    return db_rows(pg, db, "SELECT paper_since FROM strategies WHERE id = %s", (sid,))[0][0]


def iso_time(text: str):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_paper_since_set_on_load_kept_over_restart_reset_on_switch_back(make_instance, cluster, database,
                                                                        tmp_path):
    """Runbook 7.2 step 5: the deployment waits for a strategy's paper time by the workload's own
    record, so the record must start when the strategy enters paper, survive a restart, end when it
    goes live and start again when it comes back to paper or is loaded again."""
    sdir = tmp_path / "strategies"
    sdir.mkdir()
    (sdir / "paper_eth.json").write_text(json.dumps(PAPER))
    a = make_instance(database, name="a", role="standby", trading=False).start()
    status, body = a.post("/strategies/load", {"config_file": str(sdir / "paper_eth.json")})
    assert status == 201 and body["paper_trading"] is True
    since = body["paper_since"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", since), since
    in_db = paper_since_in_db(cluster, database, "paper_eth")
    assert abs((iso_time(since) - in_db).total_seconds()) < 0.001
    assert a.get("/strategies/paper_eth")[1]["paper_since"] == since
    assert [s["paper_since"] for s in a.get("/strategies")[1]["strategies"]] == [since]
    # start/stop keep the record
    assert a.post("/strategies/paper_eth/start")[0] == 200
    assert a.post("/strategies/paper_eth/stop")[1]["paper_since"] == since
    # a live strategy has none
    live = dict(LIVE, autostart=False)
    (sdir / "mm_btc.json").write_text(json.dumps(live))
    status, body = a.post("/strategies/load", {"config_file": str(sdir / "mm_btc.json")})
    assert status == 201 and body["paper_since"] is None
    assert paper_since_in_db(cluster, database, "mm_btc") is None

    # a restart loads the strategies from their files again: the paper record is the database's
    rc, _ = a.terminate(timeout=15)
    assert rc == 0
    time.sleep(0.05)
    b = make_instance(database, name="b", role="standby", trading=False, strategies_dir=str(sdir)).start()
    assert b.get("/strategies/paper_eth")[1]["paper_since"] == since
    assert b.get("/strategies/mm_btc")[1]["paper_since"] is None

    # live ends it; back to paper starts a new one
    status, body = b.put("/strategies/paper_eth/config", {"paper_trading": False})
    assert status == 200 and body["paper_since"] is None
    assert paper_since_in_db(cluster, database, "paper_eth") is None
    status, body = b.put("/strategies/paper_eth/config", {"paper_trading": True})
    assert status == 200 and body["paper_since"] is not None
    assert iso_time(body["paper_since"]) > iso_time(since)
    again = body["paper_since"]
    # unloading ends it too: a strategy loaded again starts a new paper record
    assert b.delete("/strategies/paper_eth")[0] == 200
    assert paper_since_in_db(cluster, database, "paper_eth") is None
    status, body = b.post("/strategies/load", {"config_file": str(sdir / "paper_eth.json")})
    assert status == 201 and iso_time(body["paper_since"]) > iso_time(again)


def test_paper_since_without_migration_007_saves_strategies_and_says_why(make_instance, cluster):
    """A release with the paper record on a schema without it (007 rolled back): strategies are still
    saved, paper_since is null (the deployment then refuses paper -> live), and the log says why."""
    name = "wl_" + uuid.uuid4().hex[:10]
    cluster.create_database(name, owner=DB_USER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = DB_PASSWORD
    proc = run([sys.executable, "-m", "migrations", "--dsn", cluster.dsn(name, user=DB_USER), "up", "--to", "6"],
               cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inst = make_instance(name, role="standby", trading=False, strategies=[PAPER]).start()
    wait_for(lambda: db_rows(cluster, name, "SELECT count(*) FROM strategies")[0][0] == 1, 10,
             "the strategies row")
    assert inst.get("/strategies/paper_eth")[1]["paper_since"] is None
    assert inst.post("/strategies/paper_eth/stop")[0] == 200
    assert db_rows(cluster, name, "SELECT enabled, paper_trading FROM strategies") == [(False, True)]
    assert "is migration 007 applied?" in inst.logs()


# ------------------------------------------------------------------------ strategy.sh against this binary


def strategy_step(home: Path, api: str, sid: str, doc: dict, mode: str, state: str, min_paper: int,
                  role: str = "primary", primary_api: str | None = None, placement: str = "app:blue"):
    """strategy.sh staged exactly as the Strategy component stages it, run here as root."""
    from components.remote import script_command
    from components.strategy import StrategySettings, render_strategy_file

    s = StrategySettings(id=sid, symbol=doc["symbol"], exchange=doc["exchange"], max_position=doc["max_position"],
                         mode=mode, state=state, name=doc.get("name"))
    env = {"HFT_STRATEGY_ID": sid, "HFT_MODE": mode, "HFT_STATE": state, "HFT_MIN_PAPER_SECONDS": str(min_paper),
           "HFT_HOME": str(home), "HFT_USER": "nobody", "HFT_API": api, "HFT_PLACEMENT": placement,
           "HFT_ROLE": role}
    if primary_api:
        env["HFT_PRIMARY_API"] = primary_api
    text = script_command("strategy.sh", env, {f"{sid}.json": render_strategy_file(s)})
    return text, run(["sh", "-c", text], timeout=120)


def strategy_delete(home: Path, api: str, sid: str):
    from components.remote import script_command
    text = script_command("strategy_delete.sh", {"HFT_STRATEGY_ID": sid, "HFT_HOME": str(home), "HFT_API": api,
                                                  "HFT_PLACEMENT": "app:blue"}, mode="delete")
    return run(["sh", "-c", text], timeout=120)


def step_report(proc) -> dict:
    [line] = [l for l in proc.stdout.splitlines() if l.startswith("HFT_STRATEGY_REPORT=")]
    return json.loads(line.split("=", 1)[1])


def test_strategy_script_add_paper_gate_live_rollback_remove(make_instance, cluster, database, tmp_path):
    """Runbook 7.2 and 5.3 through the real strategy.sh and a real hft_system: add in paper, a second
    run changes nothing, live refused before its paper time and allowed after, a parameter change
    and its revert reload only that strategy (another keeps its counters, position and row), a
    standby follows the primary, removal unloads it and a restart does not bring it back."""
    if os.geteuid() != 0:
        pytest.fail("prerequisite missing: strategy.sh installs root-owned files; run the tests as root")
    home = tmp_path / "opt" / "hft_system"
    sdir = home / "config" / "strategies"
    sdir.mkdir(parents=True)
    (home / ".env").write_text(f'DB_PASSWORD="x"\nHFT_API_TOKEN="{API_TOKEN}"\n')
    (home / ".env").chmod(0o600)
    a = make_instance(database, name="blue", strategies_dir=str(sdir)).start()
    api = f"http://127.0.0.1:{a.port}"
    mm = {"name": "BTC-USD market making", "symbol": "BTC-USD", "exchange": "coinbase", "max_position": 0.5}
    eth = {"symbol": "ETH-USD", "exchange": "binance", "max_position": 2.0}

    # add two strategies in paper; the second run of each changes nothing
    text, proc = strategy_step(home, api, "mm", mm, "paper", "running", 3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert API_TOKEN not in text and API_TOKEN not in proc.stdout + proc.stderr
    assert f"changed: strategy mm on app:blue loaded from {sdir}/mm.json" in proc.stdout
    rep = step_report(proc)
    assert rep["status"] == "running" and rep["paper_trading"] is True and rep["paper_since"]
    st = (sdir / "mm.json").stat()
    assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == ("0o640", 0, int(run(["id", "-g", "nobody"]).stdout))
    assert json.loads((sdir / "mm.json").read_text())["paper_trading"] is True
    _, proc = strategy_step(home, api, "eth", eth, "paper", "running", 3)
    assert proc.returncode == 0, proc.stderr
    _, again = strategy_step(home, api, "mm", mm, "paper", "running", 3)
    assert again.returncode == 0, again.stderr
    assert [l for l in again.stdout.splitlines() if l.startswith("changed")] == []
    assert "ok: strategy mm on app:blue: no changes" in again.stdout

    # live before its paper time (an hour here): refused, nothing changed
    _, refused = strategy_step(home, api, "mm", mm, "live", "running", 3600)
    assert refused.returncode == 1
    assert re.search(r"error: strategy mm on app:blue: refusing to go live: in paper for 0h00m\d\ds \(since "
                     + re.escape(rep["paper_since"]) + r"\), minPaperSeconds is 3600 \(1h00m00s\): (0h5\dm\d\ds|1h00m00s) left",
                     refused.stderr), refused.stderr
    assert json.loads((sdir / "mm.json").read_text())["paper_trading"] is True
    assert a.get("/strategies/mm")[1]["paper_trading"] is True
    # a brand-new strategy cannot start live on the primary either
    _, new_live = strategy_step(home, api, "new", eth, "live", "running", 2)
    assert new_live.returncode == 1 and "it has no paper record here" in new_live.stderr
    assert not (sdir / "new.json").exists() and a.get("/strategies/new")[0] == 404

    # after its paper time: live
    since = iso_time(rep["paper_since"]).timestamp()
    time.sleep(max(0.0, since + 2.2 - time.time()))
    _, live = strategy_step(home, api, "mm", mm, "live", "running", 2)
    assert live.returncode == 0, live.stdout + live.stderr
    assert "changed: strategy mm on app:blue: mode live" in live.stdout
    rep = step_report(live)
    assert rep["paper_trading"] is False and rep["paper_since"] is None and rep["status"] == "running"
    assert json.loads((sdir / "mm.json").read_text())["paper_trading"] is False

    # the other strategy stopped, with what it did so far
    wait_for(lambda: a.get("/strategies/eth")[1]["performance"]["orders"] > 0, 15, "eth's paper orders")
    _, proc = strategy_step(home, api, "eth", eth, "paper", "stopped", 3)
    assert proc.returncode == 0 and "changed: strategy eth on app:blue stopped" in proc.stdout
    eth_before = a.get("/strategies/eth")[1]
    row_before = db_rows(cluster, database, "SELECT updated_at, paper_since FROM strategies WHERE id = 'eth'")

    # 5.3: a new version of mm, then back to the previous one: stop, unload, load, start; eth untouched
    wait_for(lambda: a.get("/strategies/mm")[1]["performance"]["orders"] > 0, 15, "mm's live orders")
    _, v2 = strategy_step(home, api, "mm", dict(mm, max_position=1.0), "live", "running", 3)
    assert v2.returncode == 0, v2.stderr
    _, back = strategy_step(home, api, "mm", mm, "live", "running", 3)
    assert back.returncode == 0, back.stderr
    lines = [l for l in back.stdout.splitlines() if l.startswith("changed")]
    assert lines[:4] == [f"changed: {sdir}/mm.json", "changed: strategy mm on app:blue stopped (its configuration changed)",
                         "changed: strategy mm on app:blue unloaded",
                         f"changed: strategy mm on app:blue loaded from {sdir}/mm.json (running, paper_trading false)"]
    rep = step_report(back)
    assert rep["max_position"] == 0.5 and rep["status"] == "running" and rep["paper_trading"] is False
    eth_after = a.get("/strategies/eth")[1]
    kept = lambda s: ({k: s["performance"][k] for k in ("orders", "fills", "realized_pnl_usd", "win_rate")},
                      s["position"], s["status"], s["paper_since"])  # daily P&L moves with the market
    assert kept(eth_after) == kept(eth_before) and eth_after["status"] == "stopped"
    assert db_rows(cluster, database, "SELECT updated_at, paper_since FROM strategies WHERE id = 'eth'") == row_before

    # a standby loads a live strategy straight away once the primary runs it live
    bhome = tmp_path / "green" / "opt" / "hft_system"
    (bhome / "config" / "strategies").mkdir(parents=True)
    (bhome / ".env").write_text(f'HFT_API_TOKEN="{API_TOKEN}"\n')
    b = make_instance(database, name="green", role="standby", trading=False,
                      strategies_dir=str(bhome / "config" / "strategies")).start()
    bapi = f"http://127.0.0.1:{b.port}"
    _, follows = strategy_step(bhome, bapi, "mm", mm, "live", "running", 3, role="standby", primary_api=api,
                               placement="app:green")
    assert follows.returncode == 0, follows.stdout + follows.stderr
    assert "standby: the primary" in follows.stdout and step_report(follows)["paper_trading"] is False
    _, not_live = strategy_step(bhome, bapi, "eth", eth, "live", "running", 3, role="standby", primary_api=api,
                                placement="app:green")
    assert not_live.returncode == 1 and "it has no paper record here" in not_live.stderr

    # removed from config: unloaded, its file gone; eth stays; a restart does not bring mm back
    proc = strategy_delete(home, api, "mm")
    assert proc.returncode == 0, proc.stderr
    assert "changed: strategy mm on app:blue unloaded" in proc.stdout and not (sdir / "mm.json").exists()
    assert a.get("/strategies/mm")[0] == 404 and a.get("/strategies/eth")[0] == 200
    proc = strategy_delete(home, api, "mm")
    assert proc.returncode == 0 and "ok: strategy mm on app:blue: already removed" in proc.stdout
    assert a.terminate(timeout=15)[0] == 0
    a2 = make_instance(database, name="blue2", strategies_dir=str(sdir)).start()
    assert [s["id"] for s in a2.get("/strategies")[1]["strategies"]] == ["eth"]
