"""Static rules for components/scripts/*.sh and the staged wrapper (no host needed).

- No script enables xtrace (`set -x`, `set -o xtrace`, `bash -x`, `BASH_XTRACEFD`): a traced
  line would print what a script read from stdin (DESIGN.md section 8).
- Every script's header lists its env inputs, each once, in an ``# env:`` block; the names
  listed are exactly the HFT_* names the script uses, and the ones ``require_env`` demands
  are the ones marked "(required)".
- The staged command text: one ``export HFT_...`` line per value, a header naming the step
  and the hash of the rest, and the hash changes with any value but not with nothing.

    venv/bin/python -m pytest tests/test_scripts_static.py
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from components import remote

SCRIPTS = Path(remote.__file__).resolve().parent / "scripts"
ALL = sorted(SCRIPTS.glob("*.sh"))
# Names a script may use without listing them: set by the wrapper or by lib.sh itself.
NOT_INPUTS = {"HFT_PAYLOAD", "HFT_CHANGES"}
XTRACE = re.compile(r"set\s+-[A-Za-z]*x|set\s+-o\s+xtrace|\bbash\s+-[A-Za-z]*x|BASH_XTRACEFD|shopt\s+-s\s+.*xtrace")


def _header(text: str) -> list[str]:
    """The leading comment block (after the shebang)."""
    out = []
    for line in text.splitlines()[1:]:
        if not line.startswith("#"):
            break
        out.append(line)
    return out


def env_inputs(text: str) -> tuple[list[str], set[str]]:
    """(names listed in the ``# env:`` block, in order; those marked required)."""
    names: list[str] = []
    required: set[str] = set()
    inside = False
    for line in _header(text):
        body = line.lstrip("#").strip()
        if body.startswith("env:"):
            inside = True
            body = body[len("env:"):].strip()
        elif re.match(r"^(payload|stdin)\b", body) or not body:
            inside = False
            continue
        if not inside:
            continue
        m = re.match(r"^(HFT_[A-Z0-9_]+)\b", body)
        if m:
            names.append(m.group(1))
            if "(required)" in body:
                required.add(m.group(1))
        elif "(required)" in body and names:
            required.add(names[-1])
    return names, required


def code_of(text: str) -> str:
    """The script without its header and without comment-only lines."""
    lines = text.splitlines()[1 + len(_header(text)):]
    return "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))


def required_by_code(code: str) -> set[str]:
    out: set[str] = set()
    for m in re.finditer(r"require_env((?:[ \t]+(?:HFT_[A-Z0-9_]+|\\\n))+)", code):
        out |= set(re.findall(r"HFT_[A-Z0-9_]+", m.group(1)))
    return out


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_xtrace(path: Path) -> None:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        assert not XTRACE.search(line), f"{path.name}:{n} enables xtrace: {line.strip()}"


def test_the_wrapper_has_no_xtrace() -> None:
    text = remote.script_command("preflight.sh", {"HFT_MIN_CORES": "1"})
    for n, line in enumerate(text.splitlines(), 1):
        assert not XTRACE.search(line), f"staged wrapper line {n}: {line.strip()}"


def test_the_xtrace_rule_catches_what_it_should() -> None:
    for bad in ("set -x", "set -eux", "set -o xtrace", "bash -x script.sh", "BASH_XTRACEFD=3"):
        assert XTRACE.search(bad), bad
    for fine in ("set -euo pipefail", "set +e", "tar -x -C d", "exec 9<f"):
        assert not XTRACE.search(fine), fine


@pytest.mark.parametrize("path", [p for p in ALL if p.name != "lib.sh"], ids=lambda p: p.name)
def test_header_lists_env_inputs_once_and_they_match(path: Path) -> None:
    text = path.read_text()
    header = "\n".join(_header(text))
    assert re.search(r"^#\s*env:", header, re.M), f"{path.name}: no '# env:' block in the header"
    assert re.search(r"^#\s*stdin:", header, re.M), f"{path.name}: the header must say what stdin is"
    names, required = env_inputs(text)
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"{path.name}: listed more than once: {sorted(dupes)}"
    code = code_of(text)
    used = {n for n in re.findall(r"HFT_[A-Z0-9_]+", code) if not n.endswith("_REPORT")} - NOT_INPUTS
    assert set(names) == used, (f"{path.name}: listed but unused {sorted(set(names) - used)}; "
                                f"used but not listed {sorted(used - set(names))}")
    demanded = required_by_code(code)
    if path.name == "validate_deployment.sh":  # self-contained: its own loop, not require_env
        m = re.search(r"for v in ([A-Z0-9_ \\\n]+); do", code)
        assert m, "validate_deployment.sh: the loop over required variables"
        demanded = set(re.findall(r"HFT_[A-Z0-9_]+", m.group(1)))
    assert demanded == required, (f"{path.name}: require_env {sorted(demanded)} but the header "
                                  f"marks (required) {sorted(required)}")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_parses(path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, path.name


def test_staged_text_one_value_per_line_and_hash() -> None:
    env = {"HFT_A": "one", "HFT_B": "two words", "HFT_C": "it's"}
    text = remote.script_command("preflight.sh", env, step="s1")
    lines = text.splitlines()
    assert lines[0] == "# hft-deploy step s1: preflight.sh (create)"
    assert "export HFT_A=one" in lines and "export HFT_B='two words'" in lines
    assert "export HFT_C='it'\"'\"'s'" in lines
    digest = re.search(r"^_hft_hash=([0-9a-f]{64})$", text, re.M).group(1)
    assert remote.script_command("preflight.sh", env, step="s1") == text  # deterministic
    other = remote.script_command("preflight.sh", {**env, "HFT_B": "three"}, step="s1")
    assert re.search(r"^_hft_hash=([0-9a-f]{64})$", other, re.M).group(1) != digest
    # the diff of a changed value is that value's line (and the hash line)
    changed = [a for a, b in zip(text.splitlines(), other.splitlines()) if a != b]
    assert changed == [f"_hft_hash={digest}", "export HFT_B='two words'"], changed
    for shell in ("dash", "bash"):
        assert subprocess.run([shell, "-n"], input=text.encode()).returncode == 0, shell


def test_staged_text_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="environment name"):
        remote.script_command("preflight.sh", {"HFT_PAYLOAD": "/tmp/x"})
    with pytest.raises(ValueError, match="environment name"):
        remote.script_command("preflight.sh", {"PATH": "/tmp"})
    with pytest.raises(ValueError, match="step"):
        remote.script_command("preflight.sh", {}, step="../etc/x")
    with pytest.raises(ValueError, match="lock"):
        remote.script_command("preflight.sh", {}, lock="a b")


def test_validate_stages_its_companion() -> None:
    text = remote.script_command("validate.sh", {"HFT_HOME": "/opt/hft_system"})
    assert 'cat > "$HFT_PAYLOAD/validate_deployment.sh"' in text


def test_step_defaults() -> None:
    svc = remote.Step("x-service", "service.sh", {"HFT_UNIT_NAME": "hft_system"})
    assert svc.timeout_seconds == 30 * 60
    assert remote.Step("x-id", "server.sh", {}).timeout_seconds == 10 * 60
    assert remote.Step("x-id", "server.sh", {}, timeout=42).timeout_seconds == 42
    text = svc._text()
    assert "_hft_lock=service-hft_system _hft_wait=1200" in text
    assert remote.default_lock("service_stop.sh", {"HFT_UNIT_NAME": "hft_system"}) == "service-hft_system"
    assert remote.default_lock("migrations.sh", {"HFT_DB_NAME": "hft_db"}) == "db-hft_db"
    # rerun re-applies: it changes the hash
    a = remote.Step("x", "server.sh", {"HFT_HOSTNAME": "h"})
    b = remote.Step("x", "server.sh", {"HFT_HOSTNAME": "h"}, rerun="2024-05-01")
    assert a.fingerprint != b.fingerprint
