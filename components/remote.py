"""How a component runs one of ``components/scripts/*.sh`` on a host.

The ``create`` text of each ``remote.Command`` writes ``lib.sh``, the script and its payload
files into a fresh mode-700 directory as quoted heredocs and runs the script with its
``HFT_*`` variables. So `pulumi preview --diff` shows, in plain text, exactly which file
content or value changes on which host, and the command re-runs exactly when that text
changes (pulumi-command runs ``update``/``create`` again when its inputs change, and nothing
otherwise). Secrets never go into this text: they reach the script on stdin.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

if TYPE_CHECKING:
    from components.server import Host

SCRIPTS = Path(__file__).resolve().parent / "scripts"
# sshd runs the command text as one argument of `sh -c`; Linux caps one argument at 128 KiB.
MAX_COMMAND_BYTES = 120 * 1024


def managed_file(runbook: str, lines: list[str]) -> str:
    """A config file's text with the header that tells a reader who owns it."""
    header = f"# Managed by hft-deploy (runbook {runbook}). Local edits are overwritten."
    return "\n".join([header, *lines]) + "\n"


def read_script(name: str) -> str:
    return (SCRIPTS / name).read_text()


def _heredoc(path: str, content: str) -> str:
    tag = "HFT_EOF_" + hashlib.sha256(content.encode()).hexdigest()[:12]
    if not content.endswith("\n"):
        content += "\n"
    return f"cat > \"$HFT_PAYLOAD/{path}\" <<'{tag}'\n{content}{tag}\n"


def script_command(script: str, env: Mapping[str, str], files: Mapping[str, str] | None = None) -> str:
    """The shell text that stages ``script`` with its payload ``files`` and runs it with ``env``."""
    files = dict(files or {})
    staged = {"lib.sh": read_script("lib.sh"), script: read_script(script), **files}
    dirs = sorted({str(Path(p).parent) for p in staged if "/" in p})
    lines = [
        f"# hft-deploy: {script}",
        "set -eu",
        "umask 077",
        "HFT_PAYLOAD=$(mktemp -d /tmp/hft-deploy.XXXXXXXX)",
        "trap 'rm -rf \"$HFT_PAYLOAD\"' EXIT",
    ]
    lines += [f"mkdir -p \"$HFT_PAYLOAD/{d}\"" for d in dirs]
    text = "\n".join(lines) + "\n" + "".join(_heredoc(p, c) for p, c in staged.items())
    assignments = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items()))
    text += f"export HFT_PAYLOAD\n{assignments} bash \"$HFT_PAYLOAD/{script}\"\n"
    if len(text.encode()) > MAX_COMMAND_BYTES:
        raise ValueError(f"{script}: staged command is {len(text.encode())} bytes, over {MAX_COMMAND_BYTES}")
    return text


def payload_dir(root: Path, prefix: str, patterns: Sequence[str]) -> dict[str, str]:
    """Text files under ``root`` matching ``patterns``, keyed ``prefix/relative/path``."""
    out: dict[str, str] = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                out[f"{prefix}/{path.relative_to(root)}"] = path.read_text()
    return out


def connection(host: "Host", private_key: Optional[pulumi.Input[str]]) -> remote.ConnectionArgs:
    """SSH to ``host`` with its pinned host key; dial patiently (a host may be rebooting)."""
    return remote.ConnectionArgs(
        host=host.address, port=host.port, user=host.user, private_key=private_key,
        host_key=host.host_key, dial_error_limit=30, per_dial_timeout=10)


@dataclass
class Step:
    """One remote script run, as a component's child resource."""

    name: str
    script: str
    env: Mapping[str, str]
    files: Mapping[str, str] | None = None
    stdin: Optional[pulumi.Input[str]] = None
    delete_script: str | None = None
    delete_env: Mapping[str, str] | None = None

    @property
    def fingerprint(self) -> str:
        """Changes exactly when what this step applies changes (its staged command text)."""
        return hashlib.sha256(script_command(self.script, self.env, self.files).encode()).hexdigest()

    def create(self, conn: remote.ConnectionArgs, parent: pulumi.Resource,
               depends_on: Sequence[pulumi.Resource] = (), secret: bool = False,
               triggers: Optional[Sequence[pulumi.Input[str]]] = None,
               delete_before_replace: bool = False) -> remote.Command:
        delete = (script_command(self.delete_script, self.delete_env or self.env)
                  if self.delete_script else None)
        return remote.Command(
            self.name,
            connection=conn,
            create=script_command(self.script, self.env, self.files),
            delete=delete,
            stdin=self.stdin,
            triggers=list(triggers) if triggers else None,
            # Scripts never print what they read from stdin, so their output stays visible
            # (a failed validation must say why); it is still kept encrypted in state.
            logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=parent, depends_on=list(depends_on),
                additional_secret_outputs=["stdout", "stderr"] if secret else None,
                delete_before_replace=delete_before_replace),
        )
