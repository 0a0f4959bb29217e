"""The remote scripts of components/scripts, run for real on one lab host.

Each script is copied with lib.sh and its payload into a fresh 700 temp dir on the host and run
as the components run it: ``HFT_PAYLOAD=<dir> HFT_...=... bash <dir>/<script>.sh`` as root, with
secrets only on stdin. The host state is checked afterwards, every script is run a second time
and must report no change, and no secret given on stdin may appear in its output.

One lab host (hft-canary-01) in a lab home of its own (a temp dir), with the shared image
cache, and an apt archive cache kept between runs outside the work tree
(HFT_SCRIPTS_LAB_APT_CACHE, default ~/.cache/hft-deploy/scripts-lab-apt) so that repeat runs
do not download the packages again. The workload's release repository is served to the host
by a ``git daemon`` that the test starts on the lab bridge and stops at the end.
Missing prerequisites fail the test with what is missing; nothing is skipped.

    venv/bin/python -m pytest tests/test_scripts_lab.py
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import config, prereq
from lab.sysutil import start_time

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "components" / "scripts"
DASHBOARDS = ROOT / "monitoring" / "dashboards"
HOST = "hft-canary-01"
DB_PASSWORD = "Lab-Pw_7f3c9e'q:x\\z"  # quote, colon and backslash: the escaping is exercised
API_KEY = "lab-binance-key-5d1e0a77"
pytestmark = pytest.mark.timeout(3600)

LIMITS = """hft_user soft nofile 65536
hft_user hard nofile 65536
hft_user soft memlock unlimited
hft_user hard memlock unlimited
hft_user soft rtprio 99
hft_user hard rtprio 99
"""
SYSCTL = """# Network tuning
net.ipv4.tcp_nodelay=1
net.ipv4.tcp_low_latency=1
net.core.rmem_max=134217728
net.core.wmem_max=134217728
net.ipv4.tcp_rmem=4096 87380 67108864
net.ipv4.tcp_wmem=4096 65536 67108864
# Memory
vm.swappiness=1
vm.overcommit_memory=1
# Huge pages
vm.nr_hugepages=4096
# File handles
fs.file-max=2097152
"""
PG_CONF = """listen_addresses = 'localhost'
shared_buffers = 192MB
wal_level = replica
work_mem = 8MB
"""
PG_HBA = """host hft_db hft_user 127.0.0.1/32 scram-sha-256
host hft_db hft_user 198.18.0.0/24 scram-sha-256
"""
UNIT = """[Unit]
Description=HFT Trading System
After=network.target postgresql.service
Wants=postgresql.service

[Service]
Type=simple
User=hft_user
Group=hft_user
WorkingDirectory=/opt/hft_system
EnvironmentFile=/opt/hft_system/.env
ExecStart=/opt/hft_system/bin/hft_system --config=/opt/hft_system/config/production.json
Restart=on-failure
RestartSec=10
StandardOutput=journal
StandardError=journal
SyslogIdentifier=hft_system
LimitNOFILE=65536
LimitMEMLOCK=infinity
NoNewPrivileges=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
"""
PROMETHEUS = """global:
  scrape_interval: 1s

scrape_configs:
  - job_name: 'hft_system'
    static_configs:
      - targets: ['localhost:8080']
    metrics_path: '/api/v1/metrics'

  - job_name: 'node_exporter'
    static_configs:
      - targets: ['localhost:9100']
"""
# systemd's EnvironmentFile syntax: double quotes, backslash and double quote escaped
_SYSTEMD_PW = DB_PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
ENV_FILE = (f"BINANCE_API_KEY={API_KEY}\nBINANCE_API_SECRET=lab-secret-1\n"
            f'DB_PASSWORD="{_SYSTEMD_PW}"\n')

DB_ENV = {"HFT_DB_HOST": "127.0.0.1", "HFT_DB_PORT": "5432", "HFT_DB_NAME": "hft_db",
          "HFT_DB_USER": "hft_user"}


def production_config(**changes: object) -> str:
    cfg = json.loads((ROOT / "workload/hft_system/config/production.json.example").read_text())
    cfg["database"]["host"] = "127.0.0.1"
    cfg.update(changes)
    return json.dumps(cfg, indent=2) + "\n"


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def lines(self, prefix: str) -> list[str]:
        return [ln for ln in self.out.splitlines() if ln.startswith(prefix)]


@dataclass
class Host:
    name: str
    address: str
    key: str
    known_hosts: Path
    times: dict[str, float] = field(default_factory=dict)

    def _argv(self, cmd: str) -> list[str]:
        return ["ssh", "-i", self.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                "-o", "LogLevel=ERROR", "-T", f"root@{self.address}", cmd]

    def ssh(self, cmd: str, stdin: bytes | str = b"", timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        proc = subprocess.run(self._argv(cmd), input=data, capture_output=True, timeout=timeout)
        res = subprocess.CompletedProcess(proc.args, proc.returncode,
                                          proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check and res.returncode != 0:
            pytest.fail(f"on {self.name}: `{cmd}` exited {res.returncode}:\n{res.stderr}{res.stdout}")
        return res

    def out(self, cmd: str) -> str:
        return self.ssh(cmd).stdout.strip()

    def run_script(self, script: str, env: dict[str, str] | None = None,
                   files: dict[str, str] | None = None, dirs: dict[str, Path] | None = None,
                   stdin: str = "", timeout: float = 2400, label: str | None = None) -> Result:
        """Upload lib.sh, the script and its payload to a fresh temp dir; run it per the contract."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in ("lib.sh", script):
                tar.add(SCRIPTS / name, arcname=name)
            for name, text in (files or {}).items():
                info = tarfile.TarInfo(name)
                data = text.encode()
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
            for name, path in (dirs or {}).items():
                tar.add(path, arcname=name,
                        filter=lambda t: None if "__pycache__" in t.name else t)
        payload = self.ssh('d=$(mktemp -d /tmp/hft-payload.XXXXXX) && chmod 700 "$d" && '
                           'tar -xf - -C "$d" --no-same-owner && echo "$d"', stdin=buf.getvalue())
        d = payload.stdout.strip()
        exports = " ".join(f"{k}={_q(v)}" for k, v in {"HFT_PAYLOAD": d, **(env or {})}.items())
        cmd = (f'cd / && export {exports} && bash "$HFT_PAYLOAD/{script}"; rc=$?; '
               f'rm -rf "$HFT_PAYLOAD"; exit $rc')
        t0 = time.monotonic()
        proc = self.ssh(cmd, stdin=stdin, timeout=timeout, check=False)
        res = Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
        self.times[label or script] = round(res.seconds, 1)
        for secret in (DB_PASSWORD, API_KEY):
            assert secret not in res.text, f"{script} printed a secret"
        return res


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def ok_run(res: Result, script: str) -> Result:
    assert res.rc == 0, f"{script} exited {res.rc}:\n{res.out}\n{res.err}"
    return res


def no_change(res: Result, script: str) -> None:
    ok_run(res, script)
    assert not res.lines("changed:"), f"second run of {script} changed something:\n{res.out}"


# ------------------------------------------------------------------------------ fixtures

def _claimed_elsewhere(name: str) -> bool:
    f = Path("/run/hftlab/hosts") / f"{name}.json"
    if not f.exists():
        return False
    claim = json.loads(f.read_text())
    return start_time(int(claim["pid"])) == claim.get("start")


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    missing = prereq.problems(need_root=True)
    if missing:
        pytest.fail("lab prerequisites missing: " + "; ".join(missing))
    if _claimed_elsewhere(HOST):
        pytest.fail(f"{HOST} is running from another lab home; stop it there first")
    for tool in ("ssh", "git", "tar"):
        if shutil.which(tool) is None:
            pytest.fail(f"prerequisite missing on this machine: {tool}")
    home = Path(tempfile.mkdtemp(prefix="hft-scripts-lab-"))
    cache = Path(os.environ.get("HFT_SCRIPTS_LAB_APT_CACHE")
                 or Path.home() / ".cache" / "hft-deploy" / "scripts-lab-apt")
    (cache / "partial").mkdir(parents=True, exist_ok=True)
    (home / "apt-archives").symlink_to(cache)
    env = dict(os.environ, HFT_LAB_HOME=str(home))
    env.setdefault("HFT_LAB_IMAGE_CACHE", str(config.paths().image_cache))

    def lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1500)

    try:
        t0 = time.monotonic()
        up = lab("up", HOST)
        if up.returncode != 0:
            pytest.fail(f"`python3 -m lab up {HOST}` failed:\n{up.stderr}{up.stdout}")
        inv = json.loads(lab("inventory").stdout)["hosts"][HOST]
        h = Host(HOST, inv["address"], inv["private_key"], home / "ssh" / "known_hosts")
        h.times["lab up"] = round(time.monotonic() - t0, 1)
        yield h
        print("\nscript times (s):", json.dumps(h.times))
    finally:
        lab("destroy", HOST)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def repo_url(host: Host) -> Iterator[str]:
    """The workload's release repository, served by git daemon on the lab bridge."""
    tmp = Path(tempfile.mkdtemp(prefix="hft-scripts-repo-"))
    dest = tmp / "hft_system.git"
    pub = subprocess.run([str(ROOT / "workload/publish-repo.sh"), str(dest)],
                         capture_output=True, text=True, timeout=300)
    if pub.returncode != 0:
        pytest.fail(f"workload/publish-repo.sh failed: {pub.stderr}{pub.stdout}")
    with socket.socket() as s:  # a free port on the bridge address, so others' daemons don't clash
        s.bind((config.GATEWAY, 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", f"--base-path={tmp}", "--export-all",
         f"--listen={config.GATEWAY}", f"--port={port}", str(dest)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"git://{config.GATEWAY}:{port}/hft_system.git"
        for _ in range(50):
            if subprocess.run(["git", "ls-remote", url], capture_output=True,
                              timeout=10).returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"git daemon on {url} does not answer")
        yield url
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ tests

def test_scripts_follow_the_contract() -> None:
    for f in sorted(SCRIPTS.glob("*.sh")):
        text = f.read_text()
        assert subprocess.run(["bash", "-n", str(f)]).returncode == 0, f.name
        if f.name == "lib.sh":
            continue
        assert text.startswith("#!/usr/bin/env bash\n"), f.name
        assert "set -euo pipefail" in text or "set -uo pipefail" in text, f.name
        assert 'source "$HFT_PAYLOAD/lib.sh"' in text, f.name
        assert "env" in text.split("set -")[0] and "stdin" in text.split("set -")[0], \
            f"{f.name}: header must list env and stdin"
    assert "/work/" not in "".join(f.read_text() for f in SCRIPTS.glob("*.sh"))


def test_dashboards_use_the_workloads_metrics() -> None:
    src = "".join(p.read_text() for p in (ROOT / "workload/hft_system/src").glob("*.cpp"))
    names = set(re.findall(r"\b(hft_[a-z_]+)", src))
    for f in DASHBOARDS.glob("*.json"):
        dash = json.loads(f.read_text())
        assert dash["title"] and dash["panels"], f.name
    dash = json.loads((DASHBOARDS / "hft_system.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(hft_[a-z_]+?)(?:_bucket|_sum|_count)?\b", e)}
    assert used and used <= names, f"metrics not exposed by the workload: {used - names}"
    joined = " ".join(exprs)
    for q in ("0.5", "0.99", "0.999"):
        assert f"histogram_quantile({q}," in joined
    assert "hft_orders_total" in joined and "hft_errors_total" in joined
    assert "hft_build_info" in joined


def test_preflight(host: Host) -> None:
    env = {"HFT_MIN_CORES": "32", "HFT_MIN_RAM_GB": "128", "HFT_MIN_DISK_GB": "100000",
           "HFT_REQUIRED_OS": "Ubuntu 22.04", "HFT_ENFORCE": "0"}
    res = ok_run(host.run_script("preflight.sh", env), "preflight.sh")
    report = json.loads(res.lines("HFT_PREFLIGHT_REPORT=")[-1].split("=", 1)[1])
    assert report["status"] == "WARN" and report["enforce"] is False
    assert report["os"].startswith("Debian GNU/Linux 12")
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["OS"]["status"] == "warn" and checks["Disk /"]["status"] == "fail"
    assert "⚠ OS" in res.out and "✗ Disk /" in res.out
    res = host.run_script("preflight.sh", dict(env, HFT_ENFORCE="1"), label="preflight enforce")
    assert res.rc == 1 and "error: " in res.err and "not met" in res.err
    assert json.loads(res.lines("HFT_PREFLIGHT_REPORT=")[-1].split("=", 1)[1])["status"] == "FAIL"
    small = dict(env, HFT_MIN_CORES="1", HFT_MIN_RAM_GB="1", HFT_MIN_DISK_GB="1", HFT_ENFORCE="1")
    res = ok_run(host.run_script("preflight.sh", small, label="preflight met"), "preflight.sh")
    assert json.loads(res.lines("HFT_PREFLIGHT_REPORT=")[-1].split("=", 1)[1])["status"] == "PASS"


def test_server(host: Host) -> None:
    block = "10.0.0.10 hft-prod-01\n10.0.0.11 hft-prod-02\n"
    env = {"HFT_HOSTNAME": "hft-canary-01a", "HFT_APPLY_NETWORK": "0"}
    files = {"hosts.block": block, "netplan.yaml": "network: {version: 2}\n"}
    res = ok_run(host.run_script("server.sh", env, files), "server.sh")
    assert "changed: hostname hft-canary-01 -> hft-canary-01a" in res.out
    assert "skipped: network (container host)" in res.out
    assert host.out("hostname") == "hft-canary-01a" == host.out("cat /etc/hostname")
    hosts = host.out("cat /etc/hosts")
    assert f"# BEGIN hft-deploy\n{block}# END hft-deploy" in hosts
    assert "hftlab-gateway" in hosts  # lines outside the block are kept
    assert host.out("test -e /etc/netplan/00-installer-config.yaml || echo absent") == "absent"
    no_change(host.run_script("server.sh", env, files, label="server.sh 2nd"), "server.sh")
    # a changed block replaces the old one, once; back to the host's own name
    env2 = dict(env, HFT_HOSTNAME=HOST)
    res = ok_run(host.run_script("server.sh", env2, {"hosts.block": "10.0.0.12 hft-canary-01\n"},
                                 label="server.sh change"), "server.sh")
    hosts = host.out("cat /etc/hosts")
    assert hosts.count("# BEGIN hft-deploy") == 1 and "10.0.0.11" not in hosts
    assert "# BEGIN hft-deploy\n10.0.0.12 hft-canary-01\n# END hft-deploy" in hosts
    assert host.out("hostname") == HOST


def test_baseline(host: Host) -> None:
    host.ssh("printf '[Unit]\\nDescription=lab dummy\\n[Service]\\nExecStart=/bin/sleep infinity\\n"
             "[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/hft-dummy.service"
             " && systemctl daemon-reload && systemctl enable --now hft-dummy")
    env = {"HFT_APPLY_SYSCTL": "0", "HFT_KERNEL_SKIP_REASON": "container host", "HFT_CPU_GOVERNOR": "performance",
           "HFT_DISABLED_SERVICES": "bluetooth cups snapd unattended-upgrades hft-dummy",
           "HFT_APT_UPGRADE": "1", "HFT_PACKAGES": "build-essential zlib1g-dev liblz4-dev",
           "HFT_GCC_ALTERNATIVES": "12"}
    files = {"limits.conf": LIMITS, "sysctl.conf": SYSCTL}
    res = ok_run(host.run_script("baseline.sh", env, files), "baseline.sh")
    assert "skipped: sysctl apply (container host)" in res.out
    for svc in ("bluetooth", "cups", "snapd", "unattended-upgrades"):
        assert f"ok: {svc} not installed" in res.out
    assert "changed: hft-dummy disabled and stopped" in res.out
    assert host.ssh("systemctl is-active hft-dummy", check=False).stdout.strip() == "inactive"
    assert host.out("stat -c '%a %U' /etc/security/limits.d/90-hft.conf") == "644 root"
    assert host.out("cat /etc/security/limits.d/90-hft.conf") == LIMITS.strip()
    assert host.out("cat /etc/sysctl.d/90-hft.conf") == SYSCTL.strip()
    assert host.out("cat /etc/default/cpufrequtils") == 'GOVERNOR="performance"'
    assert host.out("readlink /usr/bin/gcc /etc/alternatives/gcc /usr/bin/g++ "
                    "/etc/alternatives/g++").split() == \
        ["/etc/alternatives/gcc", "/usr/bin/gcc-12", "/etc/alternatives/g++", "/usr/bin/g++-12"]
    assert "/usr/bin/gcc-12" in host.out("update-alternatives --query gcc")
    for p in ("build-essential", "zlib1g-dev", "liblz4-dev", "cpufrequtils"):
        assert host.out(f"dpkg-query -W -f='${{db:Status-Status}}' {p}") == "installed"
    no_change(host.run_script("baseline.sh", env, files, label="baseline.sh 2nd"), "baseline.sh")
    # sysctl apply is real where allowed: a key a container cannot set fails clearly
    res = host.run_script("baseline.sh", dict(env, HFT_APPLY_SYSCTL="1"), files,
                          label="baseline.sh sysctl")
    if res.rc != 0:
        assert "error: sysctl -p failed" in res.err


def test_realtime_kernel_already_running(host: Host) -> None:
    release = host.out("uname -r")
    pattern = "^" + re.escape(release) + "$"
    env = {"HFT_RT_PACKAGES": "linux-image-rt-amd64 linux-headers-rt-amd64",
           "HFT_RT_PATTERN": pattern}
    for i in (1, 2):
        res = ok_run(host.run_script("realtime_kernel.sh", env, label=f"realtime_kernel.sh {i}"),
                     "realtime_kernel.sh")
        assert res.out.strip() == f"ok: running RT kernel {release}"
    ok_run(host.run_script("realtime_kernel_verify.sh", {"HFT_RT_PATTERN": pattern}),
           "realtime_kernel_verify.sh")
    res = host.run_script("realtime_kernel_verify.sh", {"HFT_RT_PATTERN": "-rt-no-such-kernel$"},
                          label="realtime_kernel_verify.sh fail")
    assert res.rc == 1 and "error: kernel" in res.err and "RT kernel not running" in res.err


def _service_env(repo: str, version: str = "v1.0.0") -> dict[str, str]:
    return {"HFT_USER": "hft_user", "HFT_HOME": "/opt/hft_system",
            "HFT_LOG_DIR": "/var/log/hft_system", "HFT_LOG_DIR_MODE": "755", "HFT_REPO": repo,
            "HFT_VERSION": version, "HFT_BUILD_TYPE": "Release",
            "HFT_BUILD_PACKAGES": "build-essential cmake git pkg-config libcpp-httplib-dev "
                                  "nlohmann-json3-dev libpq-dev",
            "HFT_UNIT_NAME": "hft_system",
            "HFT_HEALTH_URL": "http://127.0.0.1:8080/api/v1/health", "HFT_HEALTH_TIMEOUT": "60"}


def _validate_env(version: str = "1.0.0") -> dict[str, str]:
    return {"HFT_HOME": "/opt/hft_system", "HFT_CONFIG": "/opt/hft_system/config/production.json",
            "HFT_UNIT_NAME": "hft_system", "HFT_API": "http://127.0.0.1:8080", **DB_ENV,
            "HFT_EXPECTED_SCHEMA_VERSION": "5", "HFT_LOG_DIR": "/var/log/hft_system",
            "HFT_PROMETHEUS": "http://127.0.0.1:9090", "HFT_EXPECTED_VERSION": version}


def _report(res: Result) -> dict:
    lines = res.lines("HFT_VALIDATION_REPORT=")
    assert lines, f"no HFT_VALIDATION_REPORT line:\n{res.out}\n{res.err}"
    return json.loads(lines[-1].split("=", 1)[1])


def _main_pid(host: Host, unit: str) -> str:
    return host.out(f"systemctl show -p MainPID --value {unit}")


PG_ENV = {"HFT_PG_PACKAGES": "postgresql postgresql-contrib", "HFT_TIMESCALEDB": "0"}
SERVICE_FILES = {"production.json": production_config(), "hft_system.service": UNIT}


def test_full_chain(host: Host, repo_url: str) -> None:
    """postgres -> database -> migrations -> service -> monitoring -> validate, each twice."""
    pg_files = {"postgresql.conf": PG_CONF, "pg_hba.block": PG_HBA}
    res = ok_run(host.run_script("postgres.sh", PG_ENV, pg_files), "postgres.sh")
    assert "skipped: timescaledb (not configured)" in res.out
    assert "changed: postgresql restarted (pending restart: shared_buffers)" in res.out, res.out
    ver = host.out("pg_lsclusters -h | awk '{print $1}'")
    assert host.out(f"runuser -u postgres -- psql -XAtc 'SHOW shared_buffers'") == "192MB"
    assert host.out(f"stat -c '%U' /etc/postgresql/{ver}/main/conf.d/90-hft.conf") == "postgres"
    hba = host.out(f"cat /etc/postgresql/{ver}/main/pg_hba.conf")
    assert hba.startswith(f"# BEGIN hft-deploy\n{PG_HBA}# END hft-deploy")
    no_change(host.run_script("postgres.sh", PG_ENV, pg_files, label="postgres.sh 2nd"),
              "postgres.sh")
    # TimescaleDB without its repository fails clearly, naming the package
    res = host.run_script("postgres.sh", dict(PG_ENV, HFT_TIMESCALEDB="1"), pg_files,
                          label="postgres.sh timescaledb")
    assert res.rc == 1 and f"timescaledb-2-postgresql-{ver} is not installable" in res.err

    db_env = {"HFT_DB_NAME": "hft_db", "HFT_DB_USER": "hft_user",
              "HFT_DB_EXTENSIONS": "pg_trgm timescaledb", "HFT_DB_EXTENSIONS_OPTIONAL": "1"}
    res = ok_run(host.run_script("database.sh", db_env, stdin=DB_PASSWORD + "\n"), "database.sh")
    assert "changed: role hft_user created" in res.out
    assert "changed: database hft_db created (owner hft_user)" in res.out
    assert "changed: extension pg_trgm created in hft_db" in res.out
    assert "skipped: extension timescaledb not installed" in res.out
    no_change(host.run_script("database.sh", db_env, stdin=DB_PASSWORD + "\n",
                              label="database.sh 2nd"), "database.sh")
    res = host.run_script("database.sh", dict(db_env, HFT_DB_EXTENSIONS_OPTIONAL="0"),
                          stdin=DB_PASSWORD + "\n", label="database.sh required ext")
    assert res.rc == 1 and "error: extension timescaledb is not available" in res.err
    # the password works over TCP with scram (pg_hba), given only through a passfile
    pw = DB_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    host.ssh("umask 077; cat > /root/.pgpass_t", stdin=f"127.0.0.1:5432:hft_db:hft_user:{pw}\n")
    assert host.out("PGPASSFILE=/root/.pgpass_t psql -XAtw -h 127.0.0.1 -U hft_user -d hft_db "
                    "-c 'SELECT current_user' ; rm -f /root/.pgpass_t") == "hft_user"

    mig = {"migrations": ROOT / "migrations"}
    res = ok_run(host.run_script("migrations.sh", DB_ENV | {"HFT_BACKUP_DIR": "/var/backup"},
                                 dirs=mig, stdin=DB_PASSWORD + "\n"), "migrations.sh")
    assert "changed: backup written: /var/backup/hft_db_" in res.out
    doc = json.loads(res.out.strip().splitlines()[-1])
    assert doc["verb"] == "up" and doc["current_version"] == 5 and len(doc["applied"]) == 5
    assert host.out("ls /opt/hft_system/migrations/001_initial_schema.sql")
    assert host.out("stat -c %a /var/backup") == "700"
    res = host.run_script("migrations.sh", DB_ENV | {"HFT_BACKUP_DIR": "/var/backup"},
                          dirs=mig, stdin=DB_PASSWORD + "\n", label="migrations.sh 2nd")
    no_change(res, "migrations.sh")
    assert "ok: schema at version 5" in res.out
    assert json.loads(res.out.strip().splitlines()[-1])["current_version"] == 5
    assert host.out("ls /var/backup | wc -l") == "1"  # nothing pending: no second backup

    senv = _service_env(repo_url)
    res = ok_run(host.run_script("service.sh", senv, SERVICE_FILES, stdin=ENV_FILE),
                 "service.sh")
    assert "changed: user hft_user created (home /opt/hft_system)" in res.out
    assert re.search(r"changed: built v1\.0\.0 \(Release\)", res.out), res.out
    assert "changed: hft_system started" in res.out and "ok: hft_system healthy" in res.out
    assert host.out("stat -c '%a %U' /opt/hft_system/.env") == "600 hft_user"
    assert host.out("cat /opt/hft_system/.env") == ENV_FILE.strip()
    assert host.out("stat -c '%a %U %G' /opt/hft_system/config/production.json") == \
        "640 hft_user hft_user"
    assert host.out("stat -c '%a %U' /var/log/hft_system") == "755 hft_user"
    assert host.out("readlink /opt/hft_system/bin/hft_system") == \
        "/opt/hft_system/releases/v1.0.0/bin/hft_system"
    assert host.out("/opt/hft_system/bin/hft_system --version") == "hft_system 1.0.0"
    assert host.out("systemctl is-enabled hft_system") == "enabled"
    assert host.out("getent passwd hft_user | cut -d: -f6,7") == "/opt/hft_system:/bin/bash"
    pid = _main_pid(host, "hft_system")
    res = host.run_script("service.sh", senv, SERVICE_FILES, stdin=ENV_FILE,
                          label="service.sh 2nd")
    no_change(res, "service.sh")
    assert "ok: hft_system running, unchanged" in res.out
    assert _main_pid(host, "hft_system") == pid

    dash = {"dashboards": DASHBOARDS}
    menv = {"HFT_MONITORING_PACKAGES": "prometheus prometheus-node-exporter", "HFT_GRAFANA": "0"}
    res = ok_run(host.run_script("monitoring.sh", menv, {"prometheus.yml": PROMETHEUS},
                                 dirs=dash), "monitoring.sh")
    assert "skipped: grafana (not configured); dashboards provisioned as files" in res.out
    assert "ok: prometheus healthy" in res.out
    assert host.out("cat /etc/prometheus/prometheus.yml") == PROMETHEUS.strip()
    assert host.out("ls /var/lib/hft-deploy/dashboards") .split() == \
        sorted(p.name for p in DASHBOARDS.glob("*.json"))
    no_change(host.run_script("monitoring.sh", menv, {"prometheus.yml": PROMETHEUS}, dirs=dash,
                              label="monitoring.sh 2nd"), "monitoring.sh")
    bad = host.run_script("monitoring.sh", menv, {"prometheus.yml": "global: [\n"}, dirs=dash,
                          label="monitoring.sh bad")
    assert bad.rc == 1 and "error: prometheus.yml rejected by promtool" in bad.err
    assert host.out("cat /etc/prometheus/prometheus.yml") == PROMETHEUS.strip()

    res = host.run_script("validate.sh", _validate_env(), stdin=DB_PASSWORD + "\n")
    report = _report(res)
    assert res.rc == 0 and report["status"] == "SUCCESS" and report["failed"] == [], res.out
    assert len(report["passed"]) == 12 and "Deployment Status: SUCCESS" in res.out
    assert "✓ Prometheus scraping hft_system" in res.out


def test_postgres_reload_or_restart(host: Host) -> None:
    pid = host.out("head -n 1 /var/lib/postgresql/*/main/postmaster.pid")
    conf = PG_CONF.replace("work_mem = 8MB", "work_mem = 16MB")
    files = {"postgresql.conf": conf, "pg_hba.block": PG_HBA}
    res = ok_run(host.run_script("postgres.sh", PG_ENV, files, label="postgres.sh reload"),
                 "postgres.sh")
    assert "changed: postgresql reloaded" in res.out
    assert host.out("head -n 1 /var/lib/postgresql/*/main/postmaster.pid") == pid
    assert host.out("runuser -u postgres -- psql -XAtc 'SHOW work_mem'") == "16MB"
    files["postgresql.conf"] = conf.replace("shared_buffers = 192MB", "shared_buffers = 160MB")
    res = ok_run(host.run_script("postgres.sh", PG_ENV, files, label="postgres.sh restart"),
                 "postgres.sh")
    assert "changed: postgresql restarted (pending restart: shared_buffers)" in res.out
    assert host.out("head -n 1 /var/lib/postgresql/*/main/postmaster.pid") != pid


def test_service_bad_config_keeps_running(host: Host, repo_url: str) -> None:
    pid = _main_pid(host, "hft_system")
    cfg_before = host.out("sha256sum /opt/hft_system/config/production.json")
    bad = production_config(api={"bind": "0.0.0.0", "port": "eighty"})
    res = host.run_script("service.sh", _service_env(repo_url),
                          {"production.json": bad, "hft_system.service": UNIT},
                          stdin=ENV_FILE, label="service.sh bad config")
    assert res.rc == 1
    assert "error: config validation failed:" in res.err and "'api.port' must be an integer" \
        in res.err, res.err
    assert _main_pid(host, "hft_system") == pid
    assert host.out("systemctl is-active hft_system") == "active"
    assert host.out("sha256sum /opt/hft_system/config/production.json") == cfg_before
    assert host.out("ls -a /opt/hft_system/config").count(".new") == 0


def test_service_release_upgrade(host: Host, repo_url: str) -> None:
    pid = _main_pid(host, "hft_system")
    res = ok_run(host.run_script("service.sh", _service_env(repo_url, "v1.1.0"), SERVICE_FILES,
                                 stdin=ENV_FILE, label="service.sh v1.1.0"), "service.sh")
    assert "changed: hft_system restarted (binary changed)" in res.out, res.out
    assert _main_pid(host, "hft_system") != pid
    assert host.out("/opt/hft_system/bin/hft_system --version") == "hft_system 1.1.0"
    res = host.run_script("validate.sh", _validate_env("1.1.0"), stdin=DB_PASSWORD + "\n",
                          label="validate.sh v1.1.0")
    assert res.rc == 0 and _report(res)["status"] == "SUCCESS", res.out


def test_validate_lists_failures(host: Host) -> None:
    host.ssh("systemctl stop prometheus")
    try:
        res = host.run_script("validate.sh", _validate_env("1.1.0"), stdin=DB_PASSWORD + "\n",
                              label="validate.sh broken")
        report = _report(res)
        assert res.rc == 1 and report["status"] == "FAILED"
        failed = {f["check"] for f in report["failed"]}
        assert failed == {"Monitoring configured", "Prometheus scraping hft_system"}, report
        assert "✗ Monitoring configured" in res.out and "✓ Service running" in res.out
        assert len(report["passed"]) == 10  # every other check still ran
    finally:
        host.ssh("systemctl start prometheus")


def test_service_stop(host: Host) -> None:
    env = {"HFT_UNIT_NAME": "hft_system", "HFT_USER": "hft_user", "HFT_HOME": "/opt/hft_system",
           "HFT_LOG_DIR": "/var/log/hft_system"}
    res = ok_run(host.run_script("service_stop.sh", env), "service_stop.sh")
    assert "changed: hft_system stopped and disabled" in res.out
    assert "changed: /etc/systemd/system/hft_system.service removed" in res.out
    assert host.ssh("systemctl is-active hft_system", check=False).stdout.strip() != "active"
    assert host.out("test -f /opt/hft_system/.env && id -u hft_user >/dev/null && echo kept") == "kept"
    no_change(host.run_script("service_stop.sh", env, label="service_stop.sh 2nd"),
              "service_stop.sh")
