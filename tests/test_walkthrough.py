"""Issue 14: the README's "Pointing it at real servers", followed as a new user would, is a test.

A fresh lab host (hft-asia-east-01, a systemd-nspawn container standing in for a server) and a
scratch ``staging`` stack, configured ONLY with what that README section tells a user to set:
- the committed ``Pulumi.staging.yaml`` with the host's name, ``address`` and pinned
  ``hostKey`` (what ``ssh-keyscan`` would print, here from the lab inventory), ``container:
  true`` and no ``network`` section (it is a container), the placements on that host;
- ``hft:service.repository`` (the release repository: a git daemon of this test on the bridge);
- the secrets from files on stdin: ``hft:sshPrivateKey`` and the four exchange keys;
- a state backend of its own (a scratch ``file://`` directory) and a passphrase;
then ``pulumi preview --diff`` and ``pulumi up``. Each key the test sets is checked to be named
in the README section, so the README cannot drop a step the walk-through needs.

The lab cannot serve everything a staging server gets (TimescaleDB's and Grafana's apt
repositories are not reachable from the lab): those are turned off only after, and only
because, the first failed ``up`` named them, and that first failure must name all of them at
once (nothing left for a third ``up``). So: a validated service in at most two ``up`` runs, the
second needing no change the first failure did not name; no Python traceback, no "from $PATH"
plugin warning, no ``could not change directory`` noise in anything printed. The number of
``up`` runs and the wall time are printed (for the issue's note).

Then, on the deployed stack: a version bump is visible, as one short line per changed value,
in ``pulumi preview --diff``; a step that fails reports host, step and error with no traceback.

    venv/bin/python -m pytest tests/test_walkthrough.py -s
"""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.lab_stack import lab, project_copy
from tests.pulumi_cli import REPO, Pulumi
from tests.release_repo import served_release_repository

HOST = "hft-asia-east-01"
COMMITTED_HOST = "hft-staging-01"
EXCHANGE_KEYS = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "COINBASE_API_KEY", "COINBASE_API_SECRET")
# What the lab cannot serve: the key, the value that turns it off, and the words by which a
# failure names it (the key, with or without the `hft:` namespace, or the product a message says
# to turn off). Each is applied only when the first failed `up` named it.
LAB_CANNOT_SERVE = {
    "hft:postgres.timescaledb": (False, ("postgres.timescaledb", "TimescaleDB")),
    "hft:database.extensions": ([], ("database.extensions",)),
    "hft:monitoring.grafana": (False, ("monitoring.grafana", "Grafana")),
}
NOISE = ("Traceback (most recent call last)", "from $PATH", "could not change directory")
pytestmark = pytest.mark.timeout(5400)
REPORT: dict[str, object] = {}


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Pointing it at real servers")
    return text[start:text.index("\n## ", start + 1)]


def on_host(command: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "lab", "ssh", HOST, command], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"on {HOST}: `{command}` exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc


@pytest.fixture(scope="module")
def fresh_host() -> Iterator[dict]:
    """hft-asia-east-01 from nothing (also brings up the lab bridge the repository listens on)."""
    lab("destroy", HOST, check=False)
    t0 = time.monotonic()
    lab("up", HOST, timeout=1500)
    REPORT["lab up (s)"] = round(time.monotonic() - t0, 1)
    try:
        yield json.loads(lab("inventory").stdout)["hosts"][HOST]
    finally:
        lab("destroy", HOST, check=False)


@pytest.fixture(scope="module")
def repository(fresh_host) -> Iterator[str]:
    """The release repository a real user already has: here the workload's, served by a git
    daemon of this test on the lab bridge (a free port: other lab users have their own)."""
    with served_release_repository("hft-walkthrough-repo-") as url:
        yield url


class User(Pulumi):
    """The CLI as the user runs it, keeping every word it printed."""

    transcript: list[str]

    def run(self, *args, **kwargs) -> subprocess.CompletedProcess[str]:
        proc = super().run(*args, check=False, **{k: v for k, v in kwargs.items() if k != "check"})
        self.transcript.append(proc.stdout + proc.stderr)
        if kwargs.get("check", True) and proc.returncode != 0:
            raise AssertionError(f"`pulumi {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def set_from_file(self, key: str, path: Path, secret: bool = True, use_path: bool = False) -> None:
        """`pulumi config set --secret KEY < FILE`, as the README says for secrets."""
        cmd = ["pulumi", "config", "set", *(["--secret"] if secret else []), *(["--path"] if use_path else []),
               key, "--non-interactive", "--cwd", str(self.project_dir), "--stack", self.stack]
        proc = subprocess.run(cmd, env=self.env(), stdin=path.open(), capture_output=True, text=True, timeout=120)
        self.transcript.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"{' '.join(cmd)} < {path.name}: {proc.stdout}{proc.stderr}"


def the_users_stack_file(project: Path, address: str, host_key: str) -> dict[str, str]:
    """README step 2 done by hand on the committed Pulumi.staging.yaml; the keys it set."""
    path = project / "Pulumi.staging.yaml"
    doc = yaml.safe_load(path.read_text())
    cfg = doc["config"]
    committed = cfg["hft:hosts"].pop(COMMITTED_HOST)
    committed.pop("network", None)       # a container's network is its host's
    committed.update(address=address, hostKey=host_key, container=True)
    cfg["hft:hosts"][HOST] = committed
    cfg["hft:placements"] = {role: HOST for role in cfg["hft:placements"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"address": address, "hostKey": host_key, "container": "true", "hft:placements": HOST}


def set_in_stack_file(project: Path, key: str, value: object) -> None:
    """Edit Pulumi.staging.yaml as a user does (`pulumi config set --path` would store the
    text "[]" for an empty list)."""
    path = project / "Pulumi.staging.yaml"
    doc = yaml.safe_load(path.read_text())
    top, _, rest = key.partition(".")
    section = doc["config"].setdefault(top, {})
    section[rest] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def walkthrough(fresh_host: dict, repository: str,
                tmp_path_factory) -> Iterator[tuple[User, list[subprocess.CompletedProcess[str]]]]:
    user = None
    try:
        inv = fresh_host
        work = tmp_path_factory.mktemp("walkthrough")
        (work / "project").mkdir()
        project = project_copy(work / "project")
        # step 1: a backend of its own (stands in for the shared bucket) and a passphrase file
        passphrase = work / "passphrase"
        passphrase.write_text(secrets.token_hex(16) + "\n")
        user = User(project, "staging", work / "state", passphrase=passphrase.read_text().strip())
        user.transcript = []
        t0 = time.monotonic()
        user.init()
        # step 2: hosts and placements, the release repository
        set_keys = the_users_stack_file(project, inv["address"], inv["host_key"])
        user.run("config", "set", "--path", "hft:service.repository", repository)
        set_keys["hft:service.repository"] = repository
        # step 3: secrets from files, on stdin
        keyfile = Path(inv["private_key"])
        user.set_from_file("hft:sshPrivateKey", keyfile)
        for name in EXCHANGE_KEYS:
            f = work / name.lower()
            f.write_text(f"walkthrough-{name.lower()}-{secrets.token_hex(6)}\n")
            user.set_from_file(f"hft:exchangeKeys.{name}", f, use_path=True)
            set_keys[f"hft:exchangeKeys.{name}"] = "(secret)"
        set_keys["hft:sshPrivateKey"] = "(secret)"
        readme = readme_section()
        for key in set_keys:
            word = key.split(".")[0] if key.startswith("hft:exchangeKeys.") else key
            assert word in readme, f"the walk-through sets {key}, which the README's real-server section never names"
        # step 5: preview, review, up
        preview = user.run("preview", "--diff", check=False)
        ups: list[subprocess.CompletedProcess[str]] = []
        turned_off: list[str] = []
        while True:
            up = user.run("up", "--yes", "--skip-preview", timeout=3600, check=False)
            ups.append(up)
            if up.returncode == 0 or len(ups) == 2:
                break
            said = up.stdout + up.stderr
            # turn off what the lab cannot serve, each only when the failure named it
            for key, (value, names) in LAB_CANNOT_SERVE.items():
                if any(n in said for n in names):
                    set_in_stack_file(project, key, value)
                    turned_off.append(key)
        REPORT.update({"up runs": len(ups), "walk-through wall time (s)": round(time.monotonic() - t0, 1),
                       "turned off after the first failure": turned_off,
                       "preview exit": preview.returncode})
        yield user, ups
    finally:
        print("\nwalk-through:", json.dumps(REPORT))
        if user is not None:
            user.run("destroy", "--yes", "--skip-preview", timeout=1800, check=False)


def test_the_readme_walkthrough_reaches_a_validated_service_in_two_ups(walkthrough) -> None:
    user, ups = walkthrough
    first = ups[0].stdout + ups[0].stderr
    assert ups[-1].returncode == 0, (f"no validated service after {len(ups)} `up` runs; the last said:\n"
                                     f"{ups[-1].stdout[-6000:]}\n{ups[-1].stderr[-3000:]}\n\nthe first said:\n{first[-6000:]}")
    if len(ups) == 2:
        # the first failure said everything at once: every change the second up needed was named
        missing = [k for k, (_, names) in LAB_CANNOT_SERVE.items() if not any(n in first for n in names)]
        assert not missing, f"the first failure did not name {missing}; it said:\n{first[-6000:]}"
    outputs = user.outputs()
    assert outputs["validation"]["blue"]["status"] == "SUCCESS", outputs["validation"]
    status = json.loads(on_host("curl -sf http://127.0.0.1:8080/api/v1/status").stdout)
    assert status["role"] == "primary", status


def test_nothing_printed_a_traceback_or_noise(walkthrough) -> None:
    user, _ = walkthrough
    for text in user.transcript:
        for noise in NOISE:
            assert noise not in text, f"{noise!r} in:\n{text[-4000:]}"


def test_psql_from_roots_home_is_quiet(walkthrough) -> None:
    """pg_run (lib.sh) from /root, where postgres may not enter: no `could not change directory`."""
    lib = (REPO / "components" / "scripts" / "lib.sh").read_text()
    proc = on_host("cd /root && umask 077 && cat >/tmp/hft-lib.sh && "
                   "bash -c 'source /tmp/hft-lib.sh; echo \"SELECT 41 + 1;\" | pg_run'; rc=$?; rm -f /tmp/hft-lib.sh; exit $rc",
                   stdin=lib)
    assert proc.stdout.strip() == "42" and proc.stderr == "", (proc.stdout, proc.stderr)


def test_a_version_bump_is_one_visible_line_in_preview_diff(walkthrough) -> None:
    user, _ = walkthrough
    user.run("config", "set", "--path", "hft:release.blue.version", "v1.1.0")
    try:
        diff = user.run("preview", "--diff").stdout
    finally:
        user.run("config", "set", "--path", "hft:release.blue.version", "v1.0.0")
    old = [ln for ln in diff.splitlines() if "v1.0.0" in ln and ln.lstrip().startswith("-")]
    new = [ln for ln in diff.splitlines() if "v1.1.0" in ln and ln.lstrip().startswith("+")]
    assert old and new, diff[-6000:]
    assert all(len(ln) < 200 for ln in old + new), old + new   # the value's own line, not a cut long one
    assert any("HFT_VERSION" in ln or "version" in ln.lower() for ln in new), new


def test_a_failed_step_says_host_step_error_without_traceback(walkthrough) -> None:
    """A step that fails on the host while later resources are still registering (the engine
    then stops the program): host, step and error, no traceback. Last: leaves a failed update
    (the running release is untouched)."""
    user, _ = walkthrough
    doc = yaml.safe_load((user.project_dir / "Pulumi.staging.yaml").read_text())
    packages = list(doc["config"].get("hft:baseline", {}).get("packages") or [])
    if not packages:  # the runbook's list, from its defaults, plus one that no apt source has
        packages = list(yaml.safe_load((REPO / "config" / "runbook.yaml").read_text())["baseline"]["packages"])
    set_in_stack_file(user.project_dir, "hft:baseline.packages", packages + ["hft-no-such-package"])
    up = user.run("up", "--yes", "--skip-preview", timeout=1800, check=False)
    said = up.stdout + up.stderr
    assert up.returncode != 0
    assert "Traceback" not in said and "unhandled" not in said, said[-6000:]
    assert HOST in said and "hft-no-such-package" in said and "error:" in said, said[-6000:]
    status = json.loads(on_host("curl -sf http://127.0.0.1:8080/api/v1/status").stdout)
    assert status["role"] == "primary"   # the previous release still runs
