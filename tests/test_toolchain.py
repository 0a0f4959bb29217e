"""Issue 2: the real Pulumi engine, built from source, drives a throwaway stack end to end."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

from tests.pulumi_cli import REPO, Pulumi, toolchain_env

SOURCE = REPO / "tests" / "programs" / "toolchain_smoke"


def program(tmp_path: Path) -> Path:
    """A private copy: `stack init` writes Pulumi.<stack>.yaml beside the program."""
    dest = tmp_path / "program"
    shutil.copytree(SOURCE, dest)
    (dest / "Pulumi.yaml").write_text((dest / "Pulumi.yaml").read_text().replace(
        "virtualenv: ../../../venv", f"virtualenv: {REPO / 'venv'}"))
    return dest


def test_pulumi_version_is_the_pinned_one() -> None:
    pinned = dict(
        line.split("=", 1) for line in (REPO / "tools" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )["PULUMI_VERSION"]
    out = subprocess.run(["pulumi", "version"], env=toolchain_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == pinned


def test_preview_up_noop_destroy_with_secrets_encrypted(tmp_path: Path) -> None:
    cli = Pulumi(program(tmp_path), "smoke", tmp_path / "state", passphrase=secrets.token_hex(16))
    cli.init()

    preview = cli.run("preview", "--diff")
    assert "+ 3 to create" in preview.stdout or "3 to create" in preview.stdout, preview.stdout

    cli.run("up", "--yes", "--skip-preview")
    outputs = cli.outputs(show_secrets=True)
    assert outputs["stdout"] == "hello-from-local-command"
    password = outputs["password"]
    assert len(password) == 24 and password.isalnum()

    state_text = json.dumps(cli.export())
    assert password not in state_text, "the generated password is in plaintext in the state"
    assert "ciphertext" in state_text
    assert cli.outputs()["password"] == "[secret]"

    second = cli.run("up", "--yes", "--skip-preview", "--expect-no-changes")
    assert "3 unchanged" in second.stdout, second.stdout

    cli.run("destroy", "--yes", "--skip-preview")
    resources = cli.export()["deployment"].get("resources") or []
    assert resources == [], resources


def test_providers_come_from_the_plugin_cache_not_path(tmp_path: Path) -> None:
    """Installed the way Pulumi expects: no provider on PATH, no "using ... from $PATH" warning."""
    env = toolchain_env()
    on_path = [d for d in env["PATH"].split(":") if d and any(
        (Path(d) / f"pulumi-resource-{p}").exists() for p in ("command", "random"))]
    assert on_path == [], f"a provider is on PATH (an ambient plugin, used without a version check): {on_path}"
    listed = subprocess.run(["pulumi", "plugin", "ls", "--json"], env=env, capture_output=True, text=True,
                            check=True).stdout
    installed = {(p["name"], p["kind"], p["version"]) for p in json.loads(listed)}
    assert {("command", "resource", "1.2.1"), ("random", "resource", "4.21.4")} <= installed, installed
    cli = Pulumi(program(tmp_path), "quiet", tmp_path / "state", passphrase=secrets.token_hex(16))
    cli.init()
    preview = cli.run("preview", "--diff")
    out = preview.stdout + preview.stderr
    assert "3 to create" in out, out
    assert "from $PATH" not in out and "warning" not in out, out


def test_a_missing_plugin_fails_at_once_naming_it(tmp_path: Path) -> None:
    """No plugin download is ever attempted: without pulumi-resource-random the run stops, naming it."""
    env = toolchain_env()
    toolbin = Path(env["PATH"].split(":")[0])
    home = tmp_path / "pulumi-home"  # a plugin cache holding only the command provider
    command = Path(env["PULUMI_HOME"]) / "plugins" / "resource-command-v1.2.1" / "pulumi-resource-command"
    subprocess.run(["pulumi", "plugin", "install", "resource", "command", "1.2.1", "--file", str(command)],
                   env={**env, "PULUMI_HOME": str(home)}, capture_output=True, text=True, check=True)
    cli = Pulumi(program(tmp_path), "noplugin", tmp_path / "state", passphrase=secrets.token_hex(16))
    cli.init()
    env = {**cli.env(), "PULUMI_HOME": str(home), "PATH": f"{toolbin}:{REPO / 'venv' / 'bin'}:/usr/bin:/bin"}
    proc = subprocess.run(["pulumi", "preview", "--non-interactive", "--cwd", str(cli.project_dir), "--stack", "noplugin"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no resource plugin 'pulumi-resource-random' found" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
