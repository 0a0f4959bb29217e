"""The remote scripts of components/scripts, run for real on one lab host.

Each script runs exactly as the components run it: the text ``components.remote.script_command``
builds (the staged wrapper: host lock, lib.sh + script + payload as heredocs in a fresh 700 dir,
``export HFT_...`` lines, the applied marker) is the SSH command, as root, with secrets only on
stdin. The host state is checked afterwards, every script is run a second time and must report
no change (each run has a step name of its own, so the "already applied" short-circuit does not
hide a second run; that short-circuit has its own test), and no secret given on stdin may appear
in its output.

Some tests are the attack or the fault itself: links and Python modules planted by the service
user in the old layout (the service user owned $HFT_HOME), the service user trying to change
what root runs, two runs of one step at once, a held lock, a release build killed half-way.

One lab host (hft-canary-01) in a lab home of its own (a temp dir), with the shared image
cache, and an apt archive cache kept between runs outside the work tree
(HFT_SCRIPTS_LAB_APT_CACHE, default ~/.cache/hft-deploy/scripts-lab-apt) so that repeat runs
do not download the packages again. The workload's release repository is served to the host
by a ``git daemon`` that the test starts on the lab bridge and stops at the end.
Missing prerequisites fail the test with what is missing; nothing is skipped.

    venv/bin/python -m pytest tests/test_scripts_lab.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.remote import payload_dir, script_command
from components.migrations import latest_version
from lab import config, prereq
from tests.release_repo import served_release_repository
from tests.runbook_values import RUNBOOK_LIMITS, RUNBOOK_SYSCTL
from lab.sysutil import start_time

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "components" / "scripts"
DASHBOARDS = ROOT / "monitoring" / "dashboards"
HOST = "hft-canary-01"
SCHEMA = latest_version()   # the newest migration in the repository
DB_PASSWORD = "Lab-Pw_7f3c9e'q:x\\z"  # quote, colon and backslash: the escaping is exercised
API_KEY = "lab-binance-key-5d1e0a77"
FAIL_SECRET = "lab-secret-read-then-failed-93b1"
SECRETS = (DB_PASSWORD, API_KEY, FAIL_SECRET)
pytestmark = pytest.mark.timeout(3600)

LIMITS, SYSCTL = RUNBOOK_LIMITS, RUNBOOK_SYSCTL   # runbook 3.2 step 3, as written
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
    runs: int = 0

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

    def staged(self, script: str, env: dict[str, str] | None = None,
               files: dict[str, str] | None = None, dirs: dict[str, Path] | None = None,
               step: str | None = None, **kw) -> str:
        """The command text a component would send (script_command), with a fresh step name
        unless one is given."""
        payload = dict(files or {})
        for name, path in (dirs or {}).items():
            payload.update(payload_dir(path, name, ["**/*"]))
        if step is None:
            self.runs += 1
            step = f"lab-{self.runs:03d}-{script.removesuffix('.sh')}"
        return script_command(script, env or {}, payload, step=step, **kw)

    def run_script(self, script: str, env: dict[str, str] | None = None,
                   files: dict[str, str] | None = None, dirs: dict[str, Path] | None = None,
                   stdin: str = "", timeout: float = 2400, label: str | None = None,
                   step: str | None = None, **kw) -> Result:
        """Run the staged text of ``script`` over SSH, as pulumi-command does."""
        cmd = self.staged(script, env, files, dirs, step, **kw)
        t0 = time.monotonic()
        proc = self.ssh(cmd, stdin=stdin, timeout=timeout, check=False)
        res = Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
        self.times[label or script] = round(res.seconds, 1)
        for secret in SECRETS:
            assert secret not in res.text, f"{script} printed a secret"
        return res

    def start_script(self, script: str, env: dict[str, str] | None = None,
                     files: dict[str, str] | None = None, stdin: str | None = "",
                     step: str | None = None, **kw) -> subprocess.Popen[bytes]:
        """The same, in the background; ``stdin=None`` keeps its stdin open (the wrapper reads
        stdin after taking the lock, so the step holds its lock until stdin is closed)."""
        cmd = self.staged(script, env, files, None, step, **kw)
        proc = subprocess.Popen(self._argv(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        return proc


def finish(proc: subprocess.Popen[bytes], timeout: float) -> Result:
    t0 = time.monotonic()
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # closed by the test already: communicate() must not flush it
    out, err = proc.communicate(timeout=timeout)
    res = Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                 time.monotonic() - t0)
    for secret in SECRETS:
        assert secret not in res.text, "a background run printed a secret"
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
    with served_release_repository("hft-scripts-repo-") as url:
        yield url


STAND_IN_PACKAGES = {   # an apt repository standing in for TimescaleDB's (unreachable from the lab)
    "timescaledb-2-postgresql-15": "postgresql-15",    # a real (empty) package, downloadable
    "hft-broken-deps": "hft-no-such-dependency",       # an index entry whose dependency nothing provides
}


def _stand_in_repository(root: Path) -> None:
    """``root/debian``: a signed apt repository (InRelease) of STAND_IN_PACKAGES, and
    ``root/debian/key.asc``, its signing key (a throwaway key made here)."""
    import hashlib
    gnupg = root / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "hft lab repository <lab@example.invalid>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    repo = root / "debian"
    (repo / "pool").mkdir(parents=True)
    (repo / "key.asc").write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True,
                                                  capture_output=True).stdout)
    pkg = root / "build" / "DEBIAN"
    pkg.mkdir(parents=True)
    name = "timescaledb-2-postgresql-15"
    (pkg / "control").write_text(f"Package: {name}\nVersion: 2.99.0~lab\nArchitecture: amd64\n"
                                 "Maintainer: lab <lab@example.invalid>\nDepends: postgresql-15\n"
                                 "Description: lab stand-in for TimescaleDB (no files)\n")
    deb = repo / "pool" / f"{name}_2.99.0~lab_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg.parent), str(deb)], check=True,
                   capture_output=True)
    entries = []
    for package, dep in STAND_IN_PACKAGES.items():
        data = deb.read_bytes() if package == name else b"\0"
        entries.append(f"Package: {package}\nVersion: 2.99.0~lab\nArchitecture: amd64\n"
                       f"Maintainer: lab <lab@example.invalid>\nDepends: {dep}\n"
                       f"Filename: pool/{package}_2.99.0~lab_amd64.deb\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\nDescription: lab stand-in\n\n")
    body = "".join(entries).encode()
    dist = repo / "dists" / "bookworm"
    (dist / "main" / "binary-amd64").mkdir(parents=True)
    (dist / "main" / "binary-amd64" / "Packages").write_bytes(body)
    (dist / "Release").write_text("Origin: hft-lab\nSuite: bookworm\nCodename: bookworm\nArchitectures: amd64\n"
                                  "Components: main\nDate: Sat, 28 Nov 2026 00:00:00 UTC\n"
                                  f"SHA256:\n {hashlib.sha256(body).hexdigest()} {len(body)} main/binary-amd64/Packages\n")
    subprocess.run([*gpg, "--clearsign", "--output", str(dist / "InRelease"), str(dist / "Release")], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def apt_repo(host: Host) -> Iterator[str]:
    """The stand-in repository served on the lab bridge, reached by the host directly rather than
    through the lab's apt proxy (which lets only the distribution's mirrors through)."""
    for tool in ("gpg", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.fail(f"prerequisite missing on this machine: {tool}")
    root = Path(tempfile.mkdtemp(prefix="hft-scripts-apt-"))
    _stand_in_repository(root)
    with socket.socket() as s:
        s.bind((config.GATEWAY, 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", config.GATEWAY,
                               "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    direct = "/etc/apt/apt.conf.d/91hft-test-direct"
    host.ssh(f"echo 'Acquire::http::Proxy::{config.GATEWAY} \"DIRECT\";' > {direct}")
    try:
        url = f"http://{config.GATEWAY}:{port}/debian/"
        for _ in range(50):
            try:
                with socket.create_connection((config.GATEWAY, port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        host.ssh(f"rm -f {direct}", check=False)
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------ tests

def test_scripts_follow_the_contract() -> None:
    for f in sorted(SCRIPTS.glob("*.sh")):
        text = f.read_text()
        assert subprocess.run(["bash", "-n", str(f)]).returncode == 0, f.name
        if f.name == "lib.sh":
            continue
        assert text.startswith("#!/usr/bin/env bash\n"), f.name
        if f.name == "validate_deployment.sh":  # installed for operators: self-contained
            assert "set -uo pipefail" in text and "lib.sh" not in text.split("set -")[1]
            continue
        assert "set -euo pipefail" in text or "set -uo pipefail" in text, f.name
        if f.name == "realtime_kernel_await.sh":  # runs on the deployer's machine, with no payload
            assert "Runs on the deployer's" in text and "HFT_PAYLOAD" not in text
        else:
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


def _lab_package_lines(**changes: dict) -> str:
    """The packages.list the lab stack's preflight sends to its db/monitoring/app host (real config)."""
    from components.config import parse
    from components.preflight import package_lines
    from tests.test_config import LAB_INVENTORY, stack_values
    values = stack_values("lab")
    for section, value in changes.items():
        values.setdefault(section, {}).update(value)
    cfg = parse(values, inventory=LAB_INVENTORY)
    host = next(h for h in cfg.hosts if h.name == "hft-prod-01")
    return "".join(line + "\n" for line in package_lines(cfg, host))


PREFLIGHT = {"HFT_MIN_CORES": "1", "HFT_MIN_RAM_GB": "1", "HFT_MIN_ROOT_GB": "1", "HFT_MIN_DATA_GB": "1",
             "HFT_DATA_MOUNT": "/data", "HFT_SUPPORTED_OS": "debian:12 ubuntu:22.04", "HFT_REQUIRED_OS": "Ubuntu 22.04",
             "HFT_MIN_BOOST": "1.74", "HFT_MIN_OPENSSL": "3.0", "HFT_LIB_BOOST": "libboost-dev",
             "HFT_LIB_OPENSSL": "libssl-dev", "HFT_LIB_PQ": "libpq-dev", "HFT_ENFORCE": "0"}


def _preflight_report(res: Result) -> dict:
    return json.loads(res.lines("HFT_PREFLIGHT_REPORT=")[-1].split("=", 1)[1])


def _host_apt_state(host: Host) -> str:
    """What a read-only preflight must leave as it was: apt's lists, dpkg's database, sources."""
    return host.out("stat -c '%n %Y %s' /var/lib/apt/lists /var/lib/dpkg/status /etc/apt/sources.list.d; "
                    "ls -l --time-style=+%s /var/lib/apt/lists | md5sum; dpkg -l | md5sum")


def test_preflight_passes_a_healthy_config_and_changes_nothing(host: Host, repo_url: str) -> None:
    env = dict(PREFLIGHT, HFT_REPOSITORY=repo_url, HFT_RELEASE_TAGS="release.blue.version=v1.0.0")
    files = {"packages.list": _lab_package_lines()}
    before = _host_apt_state(host)
    res = ok_run(host.run_script("preflight.sh", env, files, label="preflight healthy"), "preflight.sh")
    assert _host_apt_state(host) == before, "the preflight changed apt's or dpkg's state"
    report = _preflight_report(res)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["family"] == "debian" and checks["OS"]["status"] == "pass"
    assert checks["Runbook OS"] == {"check": "Runbook OS", "status": "warn", "key": "preflight.requiredOs",
                                    "detail": "Debian GNU/Linux 12 (bookworm), the runbook names Ubuntu 22.04"}
    # the lab has no /data: a requirement not met, reported (not enforced in the lab)
    assert checks["Disk /data"]["status"] == "unmet" and checks["Disk /data"]["key"] == "preflight.dataMount"
    assert "⚠ Disk /data: missing" in res.out
    assert checks["Packages"]["status"] == "pass" and "installable (apt-get -s)" in checks["Packages"]["detail"]
    # Boost at the version the baseline will install (Debian 12: 1.74), not what is installed now
    assert checks["Boost"]["status"] == "pass" and "libboost-dev 1.74" in checks["Boost"]["detail"]
    assert "apt will install" in checks["Boost"]["detail"]
    assert checks["Repository"]["status"] == "pass" and checks["Release tag v1.0.0"]["status"] == "pass"
    assert report["status"] == "WARN" and report["failed"] == 0 and report["unmet"] == 1
    # a second run finds exactly the same
    again = ok_run(host.run_script("preflight.sh", env, files, label="preflight healthy 2nd"), "preflight.sh")
    strip = lambda r: [(c["check"], c["status"], c["key"]) for c in _preflight_report(r)["checks"]]  # noqa: E731
    assert strip(again) == strip(res)
    assert [ln for ln in again.out.splitlines() if not ln.startswith(("✓ Disk", "HFT_"))] == \
        [ln for ln in res.out.splitlines() if not ln.startswith(("✓ Disk", "HFT_"))]
    # every requirement met (the data mount here: /, a mount point of this host), enforced: PASS
    res = ok_run(host.run_script("preflight.sh", dict(env, HFT_DATA_MOUNT="/", HFT_ENFORCE="1"), files,
                                 label="preflight pass"), "preflight.sh")
    assert _preflight_report(res)["status"] == "PASS" and not res.err.strip()


def test_preflight_names_an_uninstallable_package_with_its_key(host: Host) -> None:
    files = {"packages.list": _lab_package_lines(postgres={"timescaledb": True})
             + "any baseline.packages hft-no-such-package\n"}
    res = host.run_script("preflight.sh", PREFLIGHT, files, label="preflight package")
    assert res.rc == 1, res.text
    checks = {c["check"]: c for c in _preflight_report(res)["checks"]}
    assert checks["Package hft-no-such-package"]["status"] == "fail"
    assert checks["Package hft-no-such-package"]["key"] == "baseline.packages"
    ts = checks["Package timescaledb-2-postgresql-15"]
    assert ts["status"] == "fail" and ts["key"] == "postgres.timescaledb"
    assert "set postgres.timescaledb false and remove timescaledb from database.extensions" in ts["detail"]
    assert "[key: baseline.packages]" in res.err and "[key: postgres.timescaledb]" in res.err


def test_preflight_names_an_unreachable_repository_and_a_missing_tag(host: Host, repo_url: str) -> None:
    with socket.socket() as s:   # a port on the bridge nothing listens on
        s.bind((config.GATEWAY, 0))
        closed = f"git://{config.GATEWAY}:{s.getsockname()[1]}/hft_system.git"
    res = host.run_script("preflight.sh", dict(PREFLIGHT, HFT_REPOSITORY=closed,
                                               HFT_RELEASE_TAGS="release.blue.version=v1.0.0"),
                          label="preflight repository")
    assert res.rc == 1
    (finding,) = [c for c in _preflight_report(res)["checks"] if c["status"] == "fail"]
    assert finding["check"] == "Repository" and finding["key"] == "service.repository"
    assert f"{closed} not reachable from this host" in finding["detail"] and "Connection refused" in finding["detail"]
    res = host.run_script("preflight.sh", dict(PREFLIGHT, HFT_REPOSITORY=repo_url,
                                               HFT_RELEASE_TAGS="release.blue.version=v1.0.0 "
                                                                "release.green.version=v1.0.99"),
                          label="preflight tag")
    assert res.rc == 1
    (finding,) = [c for c in _preflight_report(res)["checks"] if c["status"] == "fail"]
    assert finding == {"check": "Release tag v1.0.99", "status": "fail", "key": "release.green.version",
                       "detail": f"no tag v1.0.99 in {repo_url}"}


def test_preflight_lists_every_problem_in_one_failure(host: Host) -> None:
    with socket.socket() as s:
        s.bind((config.GATEWAY, 0))
        closed = f"git://{config.GATEWAY}:{s.getsockname()[1]}/hft_system.git"
    env = dict(PREFLIGHT, HFT_MIN_CORES="4096", HFT_MIN_RAM_GB="65536", HFT_MIN_ROOT_GB="1000000",
               HFT_MIN_BOOST="1.75", HFT_ENFORCE="1", HFT_REPOSITORY=closed,
               HFT_RELEASE_TAGS="release.blue.version=v1.0.0")
    files = {"packages.list": _lab_package_lines(monitoring={"grafana": True})
             + "any baseline.packages hft-no-such-package\n"
             + "debian realtimeKernel.packages.debian hft-no-such-rt-kernel\n"
             + "ubuntu realtimeKernel.packages.ubuntu linux-realtime\n"}
    res = host.run_script("preflight.sh", env, files, label="preflight all at once")
    assert res.rc == 1
    report = _preflight_report(res)
    fatal = {c["key"] for c in report["checks"] if c["status"] in ("fail", "unmet")}
    assert fatal == {"preflight.minCores", "preflight.minRamGb", "preflight.minRootGb", "preflight.dataMount",
                     "baseline.packages", "realtimeKernel.packages.debian", "monitoring.grafana",
                     "preflight.minBoost, baseline.packages", "service.repository"}, fatal
    assert report["status"] == "FAIL" and report["enforce"] is True
    # one message naming every problem and its key (the Ubuntu package is not asked of a Debian host)
    (head,) = [ln for ln in res.err.splitlines() if ln.startswith("error: ")]
    assert head.startswith("error: preflight found 9 problem(s) on hft-canary-01")
    for key in fatal:
        assert f"[key: {key}]" in res.err
    assert "linux-realtime" not in res.text
    # an OS the config does not support fails, naming it
    res = host.run_script("preflight.sh", dict(PREFLIGHT, HFT_SUPPORTED_OS="ubuntu:22.04"), label="preflight os")
    assert res.rc == 1
    (finding,) = [c for c in _preflight_report(res)["checks"] if c["status"] == "fail"]
    assert finding["check"] == "OS" and finding["key"] == "preflight.supportedOs"
    assert finding["detail"].startswith("Debian GNU/Linux 12 (bookworm) (ID=debian VERSION_ID=12) is not supported")


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


BASELINE_STEPS = {   # runbook 3.2-3.3, one script per concern: (script, env, payload)
    "apt_upgrade.sh": ({"HFT_APT_UPGRADE": "1", "HFT_APT_UPGRADE_REQUESTED": "initial"}, {}),
    "limits.sh": ({}, {"limits.conf": LIMITS}),
    "sysctl.sh": ({"HFT_APPLY_SYSCTL": "0", "HFT_KERNEL_SKIP_REASON": "container host"}, {"sysctl.conf": SYSCTL}),
    "governor.sh": ({"HFT_CPU_GOVERNOR": "performance", "HFT_KERNEL_SKIP_REASON": "container host"}, {}),
    "services.sh": ({"HFT_DISABLED_SERVICES": "bluetooth cups snapd unattended-upgrades hft-dummy"}, {}),
    "packages.sh": ({"HFT_PACKAGES": "build-essential zlib1g-dev liblz4-dev", "HFT_GCC_ALTERNATIVES": "12"}, {}),
}


def test_baseline(host: Host) -> None:
    host.ssh("printf '[Unit]\\nDescription=lab dummy\\n[Service]\\nExecStart=/bin/sleep infinity\\n"
             "[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/hft-dummy.service"
             " && systemctl daemon-reload && systemctl enable --now hft-dummy")
    out = {script: ok_run(host.run_script(script, env, files), script).out
           for script, (env, files) in BASELINE_STEPS.items()}
    assert "skipped: sysctl apply (container host)" in out["sysctl.sh"]
    assert 'HFT_SYSCTL_REPORT={"status":"skipped: container host"' in out["sysctl.sh"]
    for svc in ("bluetooth", "cups", "snapd", "unattended-upgrades"):
        assert f"ok: {svc} not installed" in out["services.sh"]
    assert "changed: hft-dummy disabled and stopped" in out["services.sh"]
    assert host.ssh("systemctl is-active hft-dummy", check=False).stdout.strip() == "inactive"
    assert host.out("stat -c '%a %U' /etc/security/limits.d/90-hft.conf") == "644 root"
    assert host.out("cat /etc/security/limits.d/90-hft.conf") == LIMITS.strip()
    assert host.out("cat /etc/sysctl.d/90-hft.conf") == SYSCTL.strip()
    assert host.out("cat /etc/default/cpufrequtils") == 'GOVERNOR="performance"'
    assert 'HFT_GOVERNOR_REPORT={"status":"skipped: no cpufreq on this host"}' in out["governor.sh"]
    assert host.out("readlink /usr/bin/gcc /etc/alternatives/gcc /usr/bin/g++ "
                    "/etc/alternatives/g++").split() == \
        ["/etc/alternatives/gcc", "/usr/bin/gcc-12", "/etc/alternatives/g++", "/usr/bin/g++-12"]
    assert "/usr/bin/gcc-12" in host.out("update-alternatives --query gcc")
    for p in ("build-essential", "zlib1g-dev", "liblz4-dev", "cpufrequtils"):
        assert host.out(f"dpkg-query -W -f='${{db:Status-Status}}' {p}") == "installed"
    for script, (env, files) in BASELINE_STEPS.items():
        no_change(host.run_script(script, env, files, label=f"{script} 2nd"), script)
    # the runbook's file applied for real: its keys this kernel lacks are named, nothing applied
    res = host.run_script("sysctl.sh", {"HFT_APPLY_SYSCTL": "1", "HFT_KERNEL_SKIP_REASON": "container host"},
                          {"sysctl.conf": SYSCTL}, label="sysctl.sh apply")
    assert res.rc != 0 and "sysctl keys this kernel does not have on hft-canary-01: net.ipv4.tcp_nodelay" in res.err, \
        res.text


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
    # per OS family, as the component sends it: this Debian host takes the _DEBIAN values
    fam = {"HFT_RT_PACKAGES_DEBIAN": "linux-image-rt-amd64", "HFT_RT_PATTERN_DEBIAN": pattern,
           "HFT_RT_PACKAGES_UBUNTU": "linux-realtime", "HFT_RT_PATTERN_UBUNTU": "-realtime$"}
    res = ok_run(host.run_script("realtime_kernel.sh", fam, label="realtime_kernel.sh family"), "realtime_kernel.sh")
    assert res.out.strip() == f"ok: running RT kernel {release}"
    res = host.run_script("realtime_kernel_verify.sh", {"HFT_RT_PATTERN_UBUNTU": pattern},
                          label="realtime_kernel_verify.sh no family value")
    assert res.rc == 1 and "no HFT_RT_PATTERN_DEBIAN: this host's OS family is debian" in res.err, res.text


# ------------------------------------------------------------------ the staged wrapper

SMALL = {"HFT_MIN_CORES": "1", "HFT_MIN_RAM_GB": "1", "HFT_MIN_ROOT_GB": "1", "HFT_MIN_DATA_GB": "1",
         "HFT_SUPPORTED_OS": "debian:12", "HFT_ENFORCE": "0"}


def test_concurrent_runs_of_a_step_queue_on_its_lock(host: Host) -> None:
    """A second run waits for the first's lock; a lock held too long fails naming the holder."""
    holder = "/run/lock/hft-deploy-lab-test.holder"
    host.ssh(f"rm -f {holder}")
    first = host.start_script("preflight.sh", SMALL, step="lock-first", lock="lab-test", stdin=None)
    try:
        for _ in range(100):
            if "step lock-first" in host.ssh(f"cat {holder} 2>/dev/null", check=False).stdout:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first run never took the lock")
        second = host.start_script("preflight.sh", SMALL, step="lock-second", lock="lab-test",
                                   lock_wait=120)
        time.sleep(3)
        assert second.poll() is None, "the second run did not wait for the lock"
        res = host.run_script("preflight.sh", SMALL, step="lock-third", lock="lab-test",
                              lock_wait=2, label="lock timeout")
        assert res.rc == 1, res.text
        assert re.search(r"error: lock-third: not run: lock lab-test still held after 2 s by "
                         r"step lock-first \(pid \d+, since ", res.err), res.err
        assert "HFT_PREFLIGHT_REPORT" not in res.out  # the script did not run
        assert second.poll() is None
    finally:
        assert first.stdin is not None
        first.stdin.close()
    r1 = finish(first, 60)
    assert r1.rc == 0 and "HFT_PREFLIGHT_REPORT=" in r1.out, r1.text
    r2 = finish(second, 60)
    assert r2.rc == 0 and "HFT_PREFLIGHT_REPORT=" in r2.out, r2.text
    assert "waiting: lock lab-test is held by step lock-first" in r2.err, r2.err
    assert host.out(f"cat {holder}").startswith("step lock-second ")
    assert host.out("stat -c '%U %a' /run/lock/hft-deploy-lab-test.lock").startswith("root ")


def test_already_applied_text_is_not_applied_twice(host: Host) -> None:
    block = "10.0.0.20 hft-lab-applied\n"
    env = {"HFT_HOSTNAME": HOST, "HFT_APPLY_NETWORK": "0"}
    text = host.staged("server.sh", env, {"hosts.block": block}, step="applied-server")
    short = re.search(r"^_hft_hash=([0-9a-f]{12})", text, re.M).group(1)
    res = ok_run(host.run_script("server.sh", env, {"hosts.block": block}, step="applied-server"),
                 "server.sh")
    assert "changed: /etc/hosts: hft-deploy block" in res.out and "already applied" not in res.out
    marker = "/var/lib/hft-deploy/applied/applied-server"
    assert host.out(f"stat -c '%U %a' /var/lib/hft-deploy/applied {marker}").split("\n") == \
        ["root 700", "root 600"]
    assert host.out(f"cat {marker}").split()[0] == re.search(r"^_hft_hash=(\w+)", text, re.M).group(1)
    # the same text again (as after a host-key or deploy-key change): not re-applied
    host.ssh("sed -i 's/hft-lab-applied/hft-lab-edited/' /etc/hosts")  # drift, to see no re-apply
    res = ok_run(host.run_script("server.sh", env, {"hosts.block": block}, step="applied-server",
                                 label="server.sh applied"), "server.sh")
    assert res.out == f"ok: applied-server already applied ({short})\n", res.out
    assert "hft-lab-edited" in host.out("cat /etc/hosts")
    # one value changed: applied
    res = ok_run(host.run_script("server.sh", env, {"hosts.block": "10.0.0.21 hft-lab-applied\n"},
                                 step="applied-server", label="server.sh changed"), "server.sh")
    assert "already applied" not in res.out and "changed: /etc/hosts: hft-deploy block" in res.out
    # back to the first text: the marker holds the last applied text, so it applies again
    res = ok_run(host.run_script("server.sh", env, {"hosts.block": block}, step="applied-server",
                                 label="server.sh back"), "server.sh")
    assert "already applied" not in res.out and "10.0.0.20 hft-lab-applied" in host.out("cat /etc/hosts")
    # forcing a re-run: remove the marker, or change the rerun text
    host.ssh(f"rm {marker}")
    res = ok_run(host.run_script("server.sh", env, {"hosts.block": block}, step="applied-server",
                                 label="server.sh forced"), "server.sh")
    assert "already applied" not in res.out and "ok: server: no changes" in res.out
    res = ok_run(host.run_script("server.sh", env, {"hosts.block": block}, step="applied-server",
                                 rerun="2024-05-01", label="server.sh rerun"), "server.sh")
    assert "already applied" not in res.out and "ok: server: no changes" in res.out
    # a failed run leaves no marker: the same text runs again next time
    bad = {"HFT_HOSTNAME": "-bad-", "HFT_APPLY_NETWORK": "0"}
    for i in (1, 2):
        res = host.run_script("server.sh", bad, {"hosts.block": block}, step="applied-server",
                              label=f"server.sh failing {i}")
        assert res.rc == 1 and "invalid hostname" in res.err and "already applied" not in res.out
    host.ssh("sed -i '/hft-lab-/d' /etc/hosts")


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
            "HFT_EXPECTED_SCHEMA_VERSION": str(SCHEMA), "HFT_LOG_DIR": "/var/log/hft_system",
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
    # TimescaleDB whose repository cannot be reached fails clearly, naming the key, adding no source
    with socket.socket() as s:
        s.bind((config.GATEWAY, 0))
        closed = f"http://{config.GATEWAY}:{s.getsockname()[1]}"
    res = host.run_script("postgres.sh", dict(PG_ENV, HFT_TIMESCALEDB="1", HFT_TIMESCALEDB_REPO_DEBIAN=f"{closed}/debian/",
                                              HFT_TIMESCALEDB_KEY_URL=f"{closed}/key.asc"), pg_files,
                          label="postgres.sh timescaledb")
    assert res.rc == 1 and f"cannot fetch TimescaleDB's signing key from {closed}/key.asc " \
                           "(postgres.timescaledbKeyUrl)" in res.err, res.text
    assert host.out("ls /etc/apt/sources.list.d/ /etc/apt/keyrings/ 2>/dev/null | grep -c timescaledb || true") == "0"

    db_env = {"HFT_DB_NAME": "hft_db", "HFT_DB_USER": "hft_user", "HFT_DB_PASSWORD_ROTATION": "initial",
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
    assert doc["verb"] == "up" and doc["current_version"] == SCHEMA and len(doc["applied"]) == SCHEMA
    assert host.out("ls /opt/hft_system/migrations/001_initial_schema.sql")
    assert host.out("stat -c '%U %a' /opt/hft_system /opt/hft_system/migrations "
                    "/opt/hft_system/migrations/engine.py").split("\n") == \
        ["root 755", "root 755", "root 644"]
    assert host.out("find /opt/hft_system/migrations -name __pycache__ | wc -l") == "0"  # -B
    assert host.out("stat -c %a /var/backup") == "700"
    res = host.run_script("migrations.sh", DB_ENV | {"HFT_BACKUP_DIR": "/var/backup"},
                          dirs=mig, stdin=DB_PASSWORD + "\n", label="migrations.sh 2nd")
    no_change(res, "migrations.sh")
    assert f"ok: schema at version {SCHEMA}" in res.out
    assert json.loads(res.out.strip().splitlines()[-1])["current_version"] == SCHEMA
    assert host.out("ls /var/backup | wc -l") == "1"  # nothing pending: no second backup

    senv = _service_env(repo_url)
    res = ok_run(host.run_script("service.sh", senv, SERVICE_FILES, stdin=ENV_FILE),
                 "service.sh")
    assert "changed: user hft_user created (home /opt/hft_system)" in res.out
    assert "changed: build user hft_build created" in res.out
    assert re.search(r"changed: built v1\.0\.0 \(Release, [0-9a-f]{12}\) as hft_build", res.out), res.out
    assert "changed: hft_system started" in res.out and "ok: hft_system healthy" in res.out
    assert host.out("stat -c '%a %U' /opt/hft_system/.env") == "600 root"
    assert host.out("cat /opt/hft_system/.env") == ENV_FILE.strip()
    # the layout: everything root's; config readable by the service group; logs the service's
    layout = {"/opt/hft_system": "755 root root", "/opt/hft_system/bin": "755 root root",
              "/opt/hft_system/releases": "755 root root",
              "/opt/hft_system/releases/v1.0.0": "755 root root",
              "/opt/hft_system/releases/v1.0.0/bin/hft_system": "755 root root",
              "/opt/hft_system/releases/v1.0.0/.hft-release-complete": "644 root root",
              "/opt/hft_system/config": "750 root hft_user",
              "/opt/hft_system/config/strategies": "750 root hft_user",
              "/opt/hft_system/config/production.json": "640 root hft_user",
              "/var/log/hft_system": "755 hft_user hft_user",
              "/var/lib/hft-build": "700 hft_build hft_build"}
    for path, want in layout.items():
        assert host.out(f"stat -c '%a %U %G' {path}") == want, path
    assert host.out("stat -c %U /opt/hft_system/bin/hft_system") == "root"  # the link itself
    # nothing under $HFT_HOME the service user owns or can write
    assert host.out("find /opt/hft_system \\( -user hft_user -o -perm /022 ! -type l \\) | wc -l") == "0"
    assert host.out("runuser -u hft_user -- find /opt/hft_system -writable | wc -l") == "0"
    assert host.out("readlink /opt/hft_system/bin/hft_system") == \
        "/opt/hft_system/releases/v1.0.0/bin/hft_system"
    assert host.out("runuser -u hft_user -- /opt/hft_system/bin/hft_system --version") == \
        "hft_system 1.0.0"
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

    res = host.run_script("validate.sh", _validate_env())
    report = _report(res)
    assert res.rc == 0 and report["status"] == "SUCCESS" and report["failed"] == [], res.out
    assert len(report["passed"]) == 12 and "Deployment Status: SUCCESS" in res.out
    assert report["warnings"] == [] and report["strict"] is False
    assert "✓ Prometheus scraping hft_system" in res.out
    assert "✓ Database connection successful (hft_db@127.0.0.1:5432, as the service sees it)" in res.out
    assert f"✓ Migrations up to date (version {SCHEMA})" in res.out
    assert "✓ Configuration valid (as hft_user)" in res.out
    # installed where the runbook's operators run it, and it runs from there as they do
    assert host.out("stat -c '%a %U' /opt/hft_system/scripts /opt/hft_system/scripts/"
                    "validate_deployment.sh").split("\n") == ["755 root", "755 root"]
    op = host.ssh("cd /opt/hft_system && ./scripts/validate_deployment.sh", check=False)
    assert op.returncode == 0 and "Deployment Status: SUCCESS" in op.stdout, op.stdout + op.stderr
    op = host.ssh("cd /opt/hft_system && runuser -u hft_user -- ./scripts/validate_deployment.sh",
                  check=False)
    assert op.returncode == 0 and "✓ Configuration valid (as hft_user)" in op.stdout, op.stdout


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
    assert host.out("ls -a /opt/hft_system/config").count(".production.json.") == 0


def test_failing_secret_step_prints_no_secret(host: Host, repo_url: str) -> None:
    """service.sh reads .env, then fails (no such tag): neither stdout nor stderr has the
    secret, and no staged copy of it is left on the host."""
    env_file = ENV_FILE + f"EXTRA_SECRET={FAIL_SECRET}\n"
    res = host.run_script("service.sh", _service_env(repo_url, "v9.9.9"), SERVICE_FILES,
                          stdin=env_file, label="service.sh no such tag")
    assert res.rc == 1 and "error: tag v9.9.9 not found" in res.err, res.text
    assert FAIL_SECRET not in res.text  # (run_script checks it as well)
    assert host.out("ls -A /run/hft-deploy | wc -l") == "0"
    assert host.ssh(f"grep -rl -D skip {FAIL_SECRET} /run /tmp /var/lib/hft-deploy /var/lib/hft-build "
                    "/opt/hft_system", check=False).stdout == ""
    assert host.out("systemctl is-active hft_system") == "active"


def test_service_user_cannot_change_what_root_runs(host: Host) -> None:
    rel = host.out("readlink /opt/hft_system/bin/hft_system")
    attempts = [f"echo evil > {rel}", f"mv {rel} /tmp/x", f"rm -rf {rel.rsplit('/bin/', 1)[0]}",
                "ln -sfn /bin/sh /opt/hft_system/bin/hft_system",
                "echo '{}' > /opt/hft_system/config/production.json",
                "touch /opt/hft_system/config/strategies/evil.json",
                "cat /opt/hft_system/.env", "touch /opt/hft_system/evil",
                "echo evil >> /opt/hft_system/scripts/validate_deployment.sh",
                "touch /opt/hft_system/migrations/psycopg.py"]
    for cmd in attempts:
        r = host.ssh(f"runuser -u hft_user -- sh -c {_q(cmd)}", check=False)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r.stderr)
    assert host.out(f"runuser -u hft_user -- {rel} --version").startswith("hft_system ")
    # validate.sh runs the service's binary only as the service user: a root-installed shim
    # in place of the binary records every uid that runs it
    uid = host.out("id -u hft_user")
    host.ssh(f"install -m 666 /dev/null /tmp/hft-shim-uids && mv {rel} {rel}.orig && "
             f"printf '#!/bin/sh\\nid -u >> /tmp/hft-shim-uids\\nexec {rel}.orig \"$@\"\\n' > {rel}"
             f" && chmod 755 {rel}")
    try:
        res = host.run_script("validate.sh", _validate_env(host.out(
            f"runuser -u hft_user -- {rel}.orig --version").split()[-1]), label="validate.sh shim")
        assert res.rc == 0 and _report(res)["status"] == "SUCCESS", res.text
        uids = host.out("cat /tmp/hft-shim-uids").split()
        assert uids and set(uids) == {uid}, f"the binary ran as {uids}, not only as hft_user ({uid})"
    finally:
        host.ssh(f"mv -f {rel}.orig {rel}; rm -f /tmp/hft-shim-uids")
    assert host.out("runuser -u hft_user -- find /opt/hft_system -writable | wc -l") == "0"


def _old_layout(host: Host) -> None:
    """What the old service.sh left: $HFT_HOME and its directories owned by the service user."""
    host.ssh("chown hft_user:hft_user /opt/hft_system /opt/hft_system/bin /opt/hft_system/config")


def test_service_does_not_follow_links_the_service_user_planted(host: Host, repo_url: str) -> None:
    _old_layout(host)
    snap = ("stat -c '%U:%G %a' /etc /etc/shadow; sha256sum /etc/shadow /etc/passwd; "
            "ls -A /etc | sha256sum")
    etc_before = host.out(snap)
    plant = ("cd /opt/hft_system && mv config config.old && ln -s /etc config && "
             "ln -s /bin/sh bin/.x && mv -T bin/.x bin/hft_system && "
             "ln -sfn /etc/shadow .env")
    host.ssh(f"runuser -u hft_user -- sh -c {_q(plant)}")
    assert host.out("readlink /opt/hft_system/config /opt/hft_system/bin/hft_system "
                    "/opt/hft_system/.env").split() == ["/etc", "/bin/sh", "/etc/shadow"]
    res = ok_run(host.run_script("service.sh", _service_env(repo_url, "v1.0.0"), SERVICE_FILES,
                                 stdin=ENV_FILE, label="service.sh planted links"), "service.sh")
    assert host.out(snap) == etc_before, "service.sh changed /etc through a planted link"
    assert host.out("ls /etc/production.json /etc/strategies 2>&1 | grep -c 'No such' || true") == "2"
    assert ("changed: /opt/hft_system/config was a symlink to /etc (owned by hft_user): "
            "replaced by a directory, not followed") in res.out, res.out
    assert ("changed: /opt/hft_system/bin/hft_system -> /opt/hft_system/releases/v1.0.0/bin/"
            "hft_system (was -> /bin/sh)") in res.out, res.out
    assert "changed: /opt/hft_system/.env (was a symlink to /etc/shadow: replaced, not followed)" \
        in res.out, res.out
    assert "changed: hft_system restarted (binary config .env changed)" in res.out, res.out
    assert host.out("stat -c '%F %a %U %G' /opt/hft_system/config /opt/hft_system/.env "
                    "/opt/hft_system /opt/hft_system/bin /opt/hft_system/config.old").split("\n") == \
        ["directory 750 root hft_user", "regular file 600 root root", "directory 755 root root",
         "directory 755 root root", "directory 750 root root"]
    assert host.out("cat /opt/hft_system/.env") == ENV_FILE.strip()
    assert host.out("runuser -u hft_user -- find /opt/hft_system -writable | wc -l") == "0"
    assert host.out("curl -fsS http://127.0.0.1:8080/api/v1/health").find("healthy") >= 0
    no_change(host.run_script("service.sh", _service_env(repo_url, "v1.0.0"), SERVICE_FILES,
                              stdin=ENV_FILE, label="service.sh after links"), "service.sh")
    host.ssh("rm -rf /opt/hft_system/config.old")


def test_migrations_import_nothing_the_service_user_planted(host: Host) -> None:
    host.ssh("chown hft_user:hft_user /opt/hft_system")  # the old layout's home
    planted = ("import os\nopen('/tmp/planted-{n}-imported', 'w').write(str(os.getuid()))\n"
               "raise ImportError('planted by the service user')\n")
    for n in ("psycopg", "json", "migrations"):
        host.ssh(f"runuser -u hft_user -- tee /opt/hft_system/{n}.py >/dev/null",
                 stdin=planted.format(n=n))
    # the plant is real: from that cwd, the old way (python3 -m / -c) imports it
    r = host.ssh("cd /opt/hft_system && runuser -u hft_user -- python3 -c 'import psycopg'",
                 check=False)
    assert r.returncode != 0 and host.out("cat /tmp/planted-psycopg-imported") == \
        host.out("id -u hft_user")
    host.ssh("rm -f /tmp/planted-*")
    mig = {"migrations": ROOT / "migrations"}
    res = ok_run(host.run_script("migrations.sh", DB_ENV | {"HFT_BACKUP_DIR": "/var/backup"},
                                 dirs=mig, stdin=DB_PASSWORD + "\n", label="migrations.sh planted"),
                 "migrations.sh")
    assert f"ok: schema at version {SCHEMA}" in res.out
    assert host.out("ls /tmp/planted-* 2>/dev/null | wc -l") == "0", "a planted module was imported"
    assert host.out("stat -c '%U %a' /opt/hft_system") == "root 755"
    host.ssh("rm -f /opt/hft_system/psycopg.py /opt/hft_system/json.py /opt/hft_system/migrations.py")


def test_secret_step_reapplies_when_its_secret_changes(host: Host) -> None:
    """The applied marker of a step with stdin includes a keyed digest of it: the same text with
    a rotated password is applied, the same password is not."""
    db_env = {"HFT_DB_NAME": "hft_db", "HFT_DB_USER": "hft_user", "HFT_DB_EXTENSIONS": "",
              "HFT_DB_EXTENSIONS_OPTIONAL": "1", "HFT_DB_PASSWORD_ROTATION": "initial"}
    run = lambda pw, label, rotation="initial": ok_run(host.run_script(  # noqa: E731
        "database.sh", dict(db_env, HFT_DB_PASSWORD_ROTATION=rotation), stdin=pw + "\n", step="applied-db",
        label=label), "database.sh")
    assert "ok: role hft_user, password unchanged" in run(DB_PASSWORD, "database.sh a").out
    assert "ok: applied-db already applied (" in run(DB_PASSWORD, "database.sh a again").out
    assert "changed: role hft_user password updated" in run(DB_PASSWORD + "-2", "database.sh b", "r2").out
    assert "changed: role hft_user password updated" in run(DB_PASSWORD, "database.sh a back", "r3").out
    marker = host.out("cat /var/lib/hft-deploy/applied/applied-db")
    assert re.fullmatch(r"[0-9a-f]{64} [0-9a-f]{64}", marker), marker
    assert host.out("stat -c '%U %a' /var/lib/hft-deploy/applied/.salt") == "root 600"
    # a report is replayed by the short-circuit, so the stack output stays what it was
    r1 = ok_run(host.run_script("validate.sh", _validate_env(), step="applied-validate",
                                label="validate.sh a"), "validate.sh")
    r2 = ok_run(host.run_script("validate.sh", _validate_env(), step="applied-validate",
                                label="validate.sh a again"), "validate.sh")
    assert r2.out.startswith("ok: applied-validate already applied (")
    assert _report(r2) == _report(r1) and _report(r2)["status"] == "SUCCESS"


def test_a_lost_state_never_rotates_the_database_password_silently(host: Host) -> None:
    """A new password without a new rotation label (what a lost state looks like: the random
    password is generated again) fails the step, names the way out, and changes nothing."""
    db_env = {"HFT_DB_NAME": "hft_db", "HFT_DB_USER": "hft_user", "HFT_DB_EXTENSIONS": "",
              "HFT_DB_EXTENSIONS_OPTIONAL": "1", "HFT_DB_PASSWORD_ROTATION": "r3"}
    ok_run(host.run_script("database.sh", db_env, stdin=DB_PASSWORD + "\n", label="database.sh live"), "database.sh")
    before = host.out("runuser -u postgres -- psql -Atc \"SELECT rolpassword FROM pg_authid WHERE rolname = 'hft_user'\"")
    res = host.run_script("database.sh", db_env, stdin="a-regenerated-password-0000\n", label="database.sh lost state")
    assert res.rc == 1, res.text
    assert "exists with another password than the one in this stack's state" in res.err
    assert "pulumi config set --secret hft:dbPassword" in res.err and "passwordRotation" in res.err
    assert "a-regenerated-password-0000" not in res.out + res.err
    after = host.out("runuser -u postgres -- psql -Atc \"SELECT rolpassword FROM pg_authid WHERE rolname = 'hft_user'\"")
    assert after == before, "the role's password changed"


def test_killed_release_build_is_redone_from_clean(host: Host, repo_url: str) -> None:
    """Kill the remote run (its whole process group) during the v1.1.0 build, as a cancelled
    `pulumi up` or a lost connection would: v1.0.0 keeps running, nothing of v1.1.0 is
    installed, and the next run builds it from clean and switches."""
    pid = _main_pid(host, "hft_system")
    env = _service_env(repo_url, "v1.1.0")
    proc = host.start_script("service.sh", env, SERVICE_FILES, stdin=ENV_FILE, step="upgrade")
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if host.ssh("pgrep -u hft_build -x cc1plus", check=False).returncode == 0:
                break
            if proc.poll() is not None:
                pytest.fail(f"service.sh ended before the build was killed:\n{finish(proc, 10).text}")
            time.sleep(1)
        else:
            pytest.fail("no compiler of the v1.1.0 build seen within 900 s")
        holder = host.out("cat /run/lock/hft-deploy-service-hft_system.holder")
        wpid = re.search(r"\(pid (\d+),", holder).group(1)
        pgid = host.out(f"ps -o pgid= -p {wpid}").strip()
        host.ssh(f"kill -KILL -- -{pgid}")
        for _ in range(60):
            if host.ssh("pgrep -u hft_build", check=False).returncode != 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the build outlived its process group: " + host.out("ps -u hft_build -o pid,pgid,cmd"))
    finally:
        if proc.poll() is None:
            proc.kill()
        finish(proc, 30)
    assert _main_pid(host, "hft_system") == pid
    assert host.out("systemctl is-active hft_system") == "active"
    assert host.out("readlink /opt/hft_system/bin/hft_system") == \
        "/opt/hft_system/releases/v1.0.0/bin/hft_system"
    assert host.out("ls -A /opt/hft_system/releases") == "v1.0.0"
    assert host.out("ls -d /var/lib/hft-build/work.* | wc -l") == "1"  # the interrupted scratch
    assert host.out("ls /run/hft-deploy | grep -c '^upgrade\\.' || true") == "1"  # and its staging
    # rerun at once (the lock was released with the killed processes)
    res = ok_run(host.run_script("service.sh", env, SERVICE_FILES, stdin=ENV_FILE, step="upgrade",
                                 label="service.sh v1.1.0 rerun"), "service.sh")
    assert "warning: removed /run/hft-deploy/upgrade." in res.err, res.err
    assert "changed: removed 1 scratch dir(s) of interrupted builds in /var/lib/hft-build" in res.out
    assert re.search(r"changed: built v1\.1\.0 \(Release, [0-9a-f]{12}\) as hft_build", res.out)
    assert "changed: hft_system restarted (binary changed)" in res.out, res.out
    assert _main_pid(host, "hft_system") != pid
    assert host.out("runuser -u hft_user -- /opt/hft_system/bin/hft_system --version") == \
        "hft_system 1.1.0"
    assert host.out("cat /opt/hft_system/releases/v1.1.0/.hft-release-complete").startswith("tag=v1.1.0\n")
    assert host.out("ls -A /opt/hft_system/releases").split() == ["v1.0.0", "v1.1.0"]
    assert host.out("ls -A /var/lib/hft-build").split() == ["src"]
    res = host.run_script("validate.sh", _validate_env("1.1.0"), label="validate.sh v1.1.0")
    assert res.rc == 0 and _report(res)["status"] == "SUCCESS", res.out


def test_validate_warns_or_fails_on_prometheus(host: Host) -> None:
    host.ssh("systemctl stop prometheus")
    try:
        res = host.run_script("validate.sh", _validate_env("1.1.0"), label="validate.sh no prom")
        report = _report(res)
        assert res.rc == 0 and report["status"] == "SUCCESS", res.text
        warned = {w["check"] for w in report["warnings"]}
        assert warned == {"Monitoring configured", "Prometheus scraping hft_system"}, report
        assert "⚠ Monitoring configured" in res.out and "✓ Service running" in res.out
        assert len(report["passed"]) == 10 and report["failed"] == []
        res = host.run_script("validate.sh", _validate_env("1.1.0") | {"HFT_STRICT_CHECKS": "1"},
                              label="validate.sh strict")
        report = _report(res)
        assert res.rc == 1 and report["status"] == "FAILED" and report["strict"] is True
        failed = {f["check"] for f in report["failed"]}
        assert failed == {"Monitoring configured", "Prometheus scraping hft_system"}, report
        assert "✗ Monitoring configured" in res.out and "✓ Service running" in res.out
        assert "✗ Prometheus scraping hft_system" in res.err
        assert len(report["passed"]) == 10  # every other check still ran
    finally:
        host.ssh("systemctl start prometheus")
    # a failed check that is never a warning: the service down
    host.ssh("systemctl stop hft_system")
    try:
        res = host.run_script("validate.sh", _validate_env("1.1.0"), label="validate.sh down")
        report = _report(res)
        failed = {f["check"] for f in report["failed"]}
        assert res.rc == 1 and {"Service running", "API responding",
                                "Database connection successful"} <= failed, report
    finally:
        host.ssh("systemctl start hft_system")
        host.ssh("for i in $(seq 60); do curl -fs http://127.0.0.1:8080/api/v1/health && exit 0; "
                 "sleep 1; done; exit 1")


def test_service_stop(host: Host) -> None:
    env = {"HFT_UNIT_NAME": "hft_system", "HFT_USER": "hft_user", "HFT_HOME": "/opt/hft_system",
           "HFT_LOG_DIR": "/var/log/hft_system"}
    res = ok_run(host.run_script("service_stop.sh", env), "service_stop.sh")
    assert "changed: hft_system stopped and disabled" in res.out
    assert "changed: /etc/systemd/system/hft_system.service removed" in res.out
    assert host.ssh("systemctl is-active hft_system", check=False).stdout.strip() != "active"
    # the secrets go with the service; the user, the releases, the config and the logs stay
    assert "changed: /opt/hft_system/.env removed (exchange keys, database password, API token)" in res.out
    assert host.out("test -e /opt/hft_system/.env || echo gone") == "gone"
    assert host.out("id -u hft_user >/dev/null && test -d /opt/hft_system/releases && "
                    "test -f /opt/hft_system/config/production.json && echo kept") == "kept"
    no_change(host.run_script("service_stop.sh", env, label="service_stop.sh 2nd"),
              "service_stop.sh")


def test_a_failing_preflight_stops_the_real_update_before_anything_changes(host: Host, tmp_path: Path) -> None:
    """The real CLI: a preview-time conflict is refused naming its key; then an `up` whose preflight
    finds two problems on the host fails listing both, and no other step ran (state and host)."""
    import secrets
    from tests.lab_stack import project_copy
    from tests.pulumi_cli import Pulumi
    with socket.socket() as s:
        s.bind((config.GATEWAY, 0))
        closed = f"git://{config.GATEWAY}:{s.getsockname()[1]}/hft_system.git"
    (tmp_path / "project").mkdir()
    project = project_copy(tmp_path / "project")
    (project / "Pulumi.lab.yaml").write_text(json.dumps({"config": {
        "hft:environment": "lab", "hft:inventory": "lab", "hft:hosts": {HOST: {}},
        "hft:placements": {"app:blue": HOST, "db": HOST, "monitoring": HOST},
        "hft:release": {"live": "blue", "blue": {"version": "v1.0.0"}},
        "hft:baseline": {"aptUpgrade": {"enabled": False}, "packages": ["build-essential", "hft-no-such-package"]},
        "hft:postgres": {"timescaledb": False}, "hft:database": {"extensions": ["timescaledb"]},
        "hft:service": {"repository": closed}, "hft:monitoring": {"grafana": False},
        "hft:preflight": {"enforce": False}}}, indent=2) + "\n")
    cli = Pulumi(project, "lab", tmp_path / "state", passphrase=secrets.token_hex(16))
    lab_home = {"HFT_LAB_HOME": str(host.known_hosts.parent.parent)}
    cli.init()
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "COINBASE_API_KEY", "COINBASE_API_SECRET"):
        cli.run("config", "set", "--secret", "--path", f"hft:exchangeKeys.{name}", f"lab-{name.lower()}")
    # refused at preview, before any host is contacted
    proc = cli.run("preview", check=False, extra_env=lab_home)
    assert proc.returncode != 0
    assert 'hft:database.extensions = ["timescaledb"]: expected no timescaledb while hft:postgres.timescaledb is ' \
           "false" in proc.stdout + proc.stderr
    import yaml
    stack_file = project / "Pulumi.lab.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"]["hft:database"] = {"extensions": []}
    stack_file.write_text(yaml.safe_dump(doc))
    state = "hostname; cat /etc/hosts; ls /var/lib/hft-deploy/applied 2>/dev/null; dpkg -l | md5sum"
    before = host.out(state)
    t0 = time.monotonic()
    proc = cli.run("up", "--yes", check=False, extra_env=lab_home, timeout=1200)
    host.times["up stopped by preflight"] = round(time.monotonic() - t0, 1)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "preflight found 2 problem(s) on hft-canary-01" in out, out
    assert "Package hft-no-such-package: not installable from this host's apt sources" in out
    assert "[key: baseline.packages]" in out and "[key: service.repository]" in out
    # nothing but the preflight ran: no command in state, nothing changed on the host
    commands = [r["urn"] for r in cli.export()["deployment"].get("resources", [])
                if r["type"] == "command:remote:Command"]
    assert commands == [], commands
    assert host.out(state) == before


def test_preflight_reads_the_repositories_later_steps_add(host: Host, apt_repo: str) -> None:
    """TimescaleDB's repository (postgres.sh adds it) is read into the preflight's private lists:
    its package counts as installable there, and neither apt's lists nor sources change."""
    with socket.socket() as s:
        s.bind((config.GATEWAY, 0))
        closed = f"http://{config.GATEWAY}:{s.getsockname()[1]}/debian/"
    packages = {"packages.list": _lab_package_lines(postgres={"timescaledb": True})}
    good = dict(packages, **{"repositories.list": f"debian postgres.timescaledbRepository.debian {apt_repo}\n"
                                                  "ubuntu postgres.timescaledbRepository.ubuntu http://198.18.0.1:1/ubuntu/\n"})
    before = _host_apt_state(host)
    res = ok_run(host.run_script("preflight.sh", PREFLIGHT, good, label="preflight repo"), "preflight.sh")
    assert _host_apt_state(host) == before
    checks = {c["check"]: c for c in _preflight_report(res)["checks"]}
    assert checks[f"Repository {apt_repo}"]["status"] == "pass"
    assert checks["Packages"]["status"] == "pass"
    assert "Repository http://198.18.0.1:1/ubuntu/" not in checks   # the Ubuntu one is not asked of a Debian host
    # a package of that repository whose dependencies cannot be met: the simulation says so, with its key
    broken = dict(good, **{"packages.list": good["packages.list"] + "any postgres.packages hft-broken-deps\n"})
    res = host.run_script("preflight.sh", PREFLIGHT, broken, label="preflight deps")
    assert res.rc == 1
    (finding,) = [c for c in _preflight_report(res)["checks"] if c["status"] == "fail"]
    assert finding["check"] == "Packages" and "hft-no-such-dependency" in finding["detail"], finding
    assert "postgres.packages" in finding["key"]
    # the repository unreachable: named with its key, and the package it should provide with its own
    bad = dict(packages, **{"repositories.list": f"debian postgres.timescaledbRepository.debian {closed}\n"})
    res = host.run_script("preflight.sh", PREFLIGHT, bad, label="preflight repo unreachable")
    assert res.rc == 1
    fails = {c["key"]: c for c in _preflight_report(res)["checks"] if c["status"] == "fail"}
    assert set(fails) == {"postgres.timescaledbRepository.debian", "postgres.timescaledb"}, fails
    assert "Connection refused" in fails["postgres.timescaledbRepository.debian"]["detail"]
    assert "postgres.timescaledbRepository.debian must provide it" in fails["postgres.timescaledb"]["detail"]


def test_postgres_adds_the_timescaledb_repository_per_family_and_installs_from_it(host: Host, apt_repo: str) -> None:
    """Runbook 3.3 step 3 with the stand-in repository: source (signed-by its key, the host's
    codename), key, package; a second run changes nothing; then removed for the later tests."""
    files = {"postgresql.conf": PG_CONF, "pg_hba.block": PG_HBA}
    env = dict(PG_ENV, HFT_TIMESCALEDB="1", HFT_TIMESCALEDB_REPO_DEBIAN=apt_repo,
               HFT_TIMESCALEDB_REPO_UBUNTU="http://198.18.0.1:1/ubuntu/", HFT_TIMESCALEDB_KEY_URL=apt_repo + "key.asc")
    try:
        res = ok_run(host.run_script("postgres.sh", env, files, label="postgres.sh timescaledb repo"), "postgres.sh")
        assert host.out("cat /etc/apt/sources.list.d/timescaledb.list") == \
            f"deb [signed-by=/etc/apt/keyrings/timescaledb.asc] {apt_repo} bookworm main"
        assert host.out("head -n 1 /etc/apt/keyrings/timescaledb.asc") == "-----BEGIN PGP PUBLIC KEY BLOCK-----"
        assert host.out("dpkg-query -W -f='${Version}' timescaledb-2-postgresql-15") == "2.99.0~lab"
        assert "changed: installed timescaledb-2-postgresql-15" in res.out
        no_change(host.run_script("postgres.sh", env, files, label="postgres.sh timescaledb repo 2nd"), "postgres.sh")
    finally:
        host.ssh("apt-get -q -y purge timescaledb-2-postgresql-15 >/dev/null 2>&1; "
                 "rm -f /etc/apt/sources.list.d/timescaledb.list /etc/apt/keyrings/timescaledb.asc", check=False)


UBUNTU_OS_RELEASE = ('PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nVERSION="22.04.4 LTS (Jammy '
                     'Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n')


def test_preflight_takes_the_values_of_the_family_the_host_reports(host: Host) -> None:
    """The same staged preflight under Ubuntu 22.04's os-release (bind-mounted in a private mount
    namespace of this Debian host: the Ubuntu archive is not reachable here) picks the ubuntu
    values: Ubuntu's RT kernel is asked for, Debian's is not."""
    env = dict(PREFLIGHT, HFT_REQUIRED_OS="Ubuntu 22.04")
    files = {"packages.list": "any baseline.packages build-essential\n"
                              "debian realtimeKernel.packages.debian linux-image-rt-amd64\n"
                              "ubuntu realtimeKernel.packages.ubuntu linux-realtime\n"}
    host.ssh("cat > /root/hft-os-release.ubuntu", stdin=UBUNTU_OS_RELEASE)
    host.ssh("cat > /root/hft-staged-preflight.sh", stdin=host.staged("preflight.sh", env, files))
    try:
        proc = host.ssh("unshare -m sh -c 'mount --bind /root/hft-os-release.ubuntu /etc/os-release && "
                        "sh /root/hft-staged-preflight.sh'", check=False)
    finally:
        host.ssh("rm -f /root/hft-staged-preflight.sh /root/hft-os-release.ubuntu")
    res = Result(proc.returncode, proc.stdout, proc.stderr, 0)
    assert res.rc == 1, res.text
    report = _preflight_report(res)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["family"] == "ubuntu" and checks["Runbook OS"]["status"] == "pass"
    assert checks["OS"]["detail"] == "Ubuntu 22.04.4 LTS (family ubuntu)"
    rt = checks["Package linux-realtime"]
    assert rt["status"] == "fail" and rt["key"] == "realtimeKernel.packages.ubuntu"
    assert "Ubuntu Pro (`pro enable realtime-kernel`)" in rt["detail"]
    assert "linux-image-rt-amd64" not in res.out
    assert host.out("cat /etc/os-release | grep ^ID=") == "ID=debian"   # the host itself is untouched
