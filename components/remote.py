"""How a component runs one of ``components/scripts/*.sh`` on a host.

The ``create`` text of each ``remote.Command`` writes ``lib.sh``, the script and its payload
files into a fresh mode-700 directory as quoted heredocs and runs the script with its
``HFT_*`` variables, one ``export`` line each. So `pulumi preview --diff` shows, in plain
text, exactly which file content or value changes on which host, and the command re-runs
exactly when that text changes (pulumi-command runs ``update``/``create`` again when its
inputs change, and nothing otherwise). Secrets never go into this text: they reach the
script on stdin.

The staged wrapper (``script_command``) also holds a host-side lock per thing changed, and
does not apply the same text twice: a new pinned host key or a rotated deploy key changes
every command's ``connection`` and so re-runs every command, and each then prints
``ok: <step> already applied (<hash>)``. A step's text includes its ``env`` and files (not
the connection), and a keyed digest of its stdin is kept beside it (a rotated secret
re-applies). To force a real re-run of a step whose text did not change, either
- remove its marker on the host, ``rm /var/lib/hft-deploy/applied/<step>``, then make Pulumi
  run the command (``pulumi up --target <urn> --replace``, or any input change); or
- change the step's ``rerun`` text (e.g. a date) or bump its ``triggers``: both are part of
  the applied text, and show in the diff.
"""
from __future__ import annotations

import hashlib
import json
import re
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


# A step name and a lock name end up in host paths: a plain file name, nothing else.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ENV_NAME = re.compile(r"^HFT_[A-Z0-9_]+$")
# Set by the wrapper itself; a component cannot pass them.
_RESERVED_ENV = {"HFT_PAYLOAD"}
# Scripts that install a companion file the component does not list: staged with them.
_COMPANIONS = {"validate.sh": ("validate_deployment.sh",)}
DEFAULT_TIMEOUT = 10 * 60
# Steps that can legitimately run long: a release build, apt upgrades and installs, a backup.
SCRIPT_TIMEOUTS = {"service.sh": 30 * 60, "baseline.sh": 30 * 60, "realtime_kernel.sh": 30 * 60,
                   "migrations.sh": 30 * 60, "postgres.sh": 20 * 60, "monitoring.sh": 20 * 60}


def default_timeout(script: str) -> int:
    return SCRIPT_TIMEOUTS.get(script, DEFAULT_TIMEOUT)


def default_lock(script: str, env: Mapping[str, str]) -> str:
    """What a script changes on its host, as a lock name: steps changing the same thing queue."""
    stem = script.removesuffix(".sh")
    unit = env.get("HFT_UNIT_NAME") or "hft_system"
    if stem in ("service", "service_stop"):
        name = f"service-{unit}"
    elif stem == "validate":
        name = f"validate-{unit}"
    elif stem in ("database", "migrations"):
        name = f"db-{env.get('HFT_DB_NAME') or 'db'}"
    elif stem.startswith("realtime_kernel"):
        name = "kernel"
    else:
        name = stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# The staged wrapper (POSIX sh: sshd runs the text with the login shell's -c). It runs as root:
#  1. takes the host-side lock /run/lock/hft-deploy-<lock>.lock (flock, bounded wait; the
#     holder's step and PID are in .holder beside it, named when the wait times out);
#  2. stages the payload into a fresh 700 dir under /run/hft-deploy (tmpfs, root only),
#     removing what an interrupted run of this step left there (stdin included);
#  3. reads stdin into that dir (the script gets it from there), so a secret step's marker
#     can include a keyed digest of its input: a rotated secret re-applies the step;
#  4. when /var/lib/hft-deploy/applied/<step> says this exact text (and input) was applied
#     successfully, prints "ok: <step> already applied (<hash>)", replays the report lines of
#     that run and exits 0: a changed connection (host key, deploy key) re-runs every
#     command, and this makes that cheap and harmless;
#  5. otherwise removes the marker, runs the script, and writes the marker only on success.
# The delete command removes the step's marker before it runs and never short-circuits.
_WRAPPER_PRE = r"""_hft_die() { printf 'error: %s: %s\n' "$_hft_step" "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || _hft_die "must run as root"
command -v flock >/dev/null 2>&1 || _hft_die "flock (util-linux) not found"
_hft_dir() {
  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -d "$1" ]; }; then _hft_die "$1 is a symlink or not a directory: refusing to use it"; fi
  # two steps starting at once on a fresh host both try: the loser's mkdir fails, the dir is there
  [ -d "$1" ] || mkdir -m "$2" "$1" 2>/dev/null || [ -d "$1" ] || _hft_die "cannot create $1"
  { [ ! -L "$1" ] && [ "$(stat -c %u "$1")" = 0 ]; } || _hft_die "$1 is not owned by root"
  chmod "$2" "$1"
}
_hft_rootfile() {
  if [ -L "$1" ] || { [ -e "$1" ] && { [ ! -f "$1" ] || [ "$(stat -c %u "$1")" != 0 ]; }; }; then rm -rf -- "$1"; fi
  [ -e "$1" ] || ( set -C; : >"$1" ) 2>/dev/null || _hft_die "cannot create $1"
  { [ -f "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %u "$1")" = 0 ]; } || _hft_die "$1 is not a root-owned file"
}
_hft_dir /var/lib/hft-deploy 755
_hft_dir /var/lib/hft-deploy/applied 700
_hft_dir /run/hft-deploy 700
[ -d /run/lock ] || mkdir -m 755 /run/lock 2>/dev/null || [ -d /run/lock ] || _hft_die "cannot create /run/lock"
_hft_lockf=/run/lock/hft-deploy-$_hft_lock.lock
_hft_holder=/run/lock/hft-deploy-$_hft_lock.holder
_hft_holder_text() {
  if [ -f "$_hft_holder" ] && [ ! -L "$_hft_holder" ] && [ "$(stat -c %u "$_hft_holder")" = 0 ]; then
    head -c 300 "$_hft_holder"
  else
    printf 'an unknown process'
  fi
}
_hft_rootfile "$_hft_lockf"
exec 9<"$_hft_lockf"
if ! flock -n 9; then
  printf 'waiting: lock %s is held by %s (waiting up to %s s)\n' "$_hft_lock" "$(_hft_holder_text)" "$_hft_wait" >&2
  flock -w "$_hft_wait" 9 || _hft_die "not run: lock $_hft_lock still held after $_hft_wait s by $(_hft_holder_text)"
fi
_hft_rootfile "$_hft_holder"
printf 'step %s (pid %s, since %s)' "$_hft_step" "$$" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$_hft_holder"
for _hft_old in /run/hft-deploy/"$_hft_step".????????; do
  [ -e "$_hft_old" ] || continue
  rm -rf -- "$_hft_old"
  printf 'warning: removed %s, left by an interrupted run of %s\n' "$_hft_old" "$_hft_step" >&2
done
HFT_PAYLOAD=$(mktemp -d "/run/hft-deploy/$_hft_step.XXXXXXXX")
trap 'rm -rf "$HFT_PAYLOAD"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
export HFT_PAYLOAD
cat >"$HFT_PAYLOAD/.stdin"
_hft_marker=/var/lib/hft-deploy/applied/$_hft_step
_hft_in=-
if [ -s "$HFT_PAYLOAD/.stdin" ]; then
  _hft_salt=/var/lib/hft-deploy/applied/.salt
  if [ ! -s "$_hft_salt" ] || [ -L "$_hft_salt" ]; then
    rm -f "$_hft_salt"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$_hft_salt"
  fi
  _hft_in=$(cat "$_hft_salt" "$HFT_PAYLOAD/.stdin" | sha256sum | cut -c1-64)
fi
_hft_want="$_hft_hash $_hft_in"
if [ "$_hft_mode" = create ] && [ -f "$_hft_marker" ] && [ "$(cat "$_hft_marker")" = "$_hft_want" ]; then
  printf 'ok: %s already applied (%s)\n' "$_hft_step" "$(printf '%s' "$_hft_hash" | cut -c1-12)"
  if [ -f "$_hft_marker.out" ]; then cat "$_hft_marker.out"; fi
  exit 0
fi
rm -f "$_hft_marker" "$_hft_marker.out"
"""

_WRAPPER_RUN = r"""{ bash "$HFT_PAYLOAD/$_hft_script" <"$HFT_PAYLOAD/.stdin" || echo "$?" >"$HFT_PAYLOAD/.rc"; } | tee "$HFT_PAYLOAD/.stdout"
rm -f "$HFT_PAYLOAD/.stdin"
_hft_rc=0
if [ -f "$HFT_PAYLOAD/.rc" ]; then _hft_rc=$(cat "$HFT_PAYLOAD/.rc"); fi
if [ "$_hft_rc" = 0 ] && [ "$_hft_mode" = create ]; then
  { grep -E '^HFT_[A-Z_]+_REPORT=' "$HFT_PAYLOAD/.stdout" || true
    _hft_last=$(tail -n 1 "$HFT_PAYLOAD/.stdout")
    case $_hft_last in '{'*) printf '%s\n' "$_hft_last" ;; esac; } >"$_hft_marker.out.new"
  mv -f "$_hft_marker.out.new" "$_hft_marker.out"
  printf '%s\n' "$_hft_want" >"$_hft_marker.new"
  mv -f "$_hft_marker.new" "$_hft_marker"
fi
exit "$_hft_rc"
"""


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{kind} {value!r}: letters, digits, '.', '_' and '-' only (it names a host file)")
    return value


def script_command(script: str, env: Mapping[str, str], files: Mapping[str, str] | None = None, *,
                   step: str | None = None, lock: str | None = None, lock_wait: int | None = None,
                   mode: str = "create", rerun: str = "") -> str:
    """The shell text that stages ``script`` with its payload ``files`` and runs it with ``env``.

    ``step`` names the applied marker and the lock holder (default: the script's name);
    ``lock`` what the step changes (default: ``default_lock``); ``lock_wait`` how long to wait
    for it (default: two thirds of the script's default timeout); ``mode`` "create",
    "delete" (a delete never short-circuits and forgets the step's marker) or "always" (never
    short-circuits: for a step whose effect depends on state that other steps, on other
    hosts, change: the cutover); ``rerun`` any text: changing it re-applies a step whose
    text is otherwise unchanged.

    The text is a short header (step name and the sha256 of the rest) and a body: the
    ``HFT_*`` values one ``export`` per line (so `pulumi preview --diff` shows exactly the
    value that changed), the wrapper, the payload files as quoted heredocs, and the run.
    """
    if mode not in ("create", "delete", "always"):
        raise ValueError(f"mode {mode!r}: create, delete or always")
    step = _check_name("step", step or script.removesuffix(".sh"))
    lock = _check_name("lock", lock or default_lock(script, env))
    wait = int(lock_wait if lock_wait is not None else default_timeout(script) * 2 // 3)
    files = dict(files or {})
    companions = {c: read_script(c) for c in _COMPANIONS.get(script, ())}
    staged = {"lib.sh": read_script("lib.sh"), script: read_script(script), **companions, **files}
    dirs = sorted({str(Path(p).parent) for p in staged if "/" in p})
    body = ["set -eu", "umask 077", "cd /"]
    for k, v in sorted(env.items()):
        if not _ENV_NAME.match(k) or k in _RESERVED_ENV:
            raise ValueError(f"{script}: environment name {k!r} is not an HFT_* input a step may set")
        body.append(f"export {k}={shlex.quote(str(v))}")
    body.append(f"_hft_script={shlex.quote(script)} _hft_mode={mode} _hft_lock={lock} _hft_wait={wait}")
    if rerun:
        body.append(f"_hft_rerun={shlex.quote(rerun)}")
    text = "\n".join(body) + "\n" + _WRAPPER_PRE
    text += "".join(f"mkdir -p \"$HFT_PAYLOAD/{d}\"\n" for d in dirs)
    text += "".join(_heredoc(p, c) for p, c in staged.items()) + _WRAPPER_RUN
    digest = hashlib.sha256(text.encode()).hexdigest()
    header = (f"# hft-deploy step {step}: {script} ({mode})\n"
              f"_hft_step={step}\n"
              f"_hft_hash={digest}\n")
    text = header + text
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
    """One remote script run, as a component's child resource.

    ``timeout`` (seconds; default per script, ``default_timeout``: 30 min for a release build,
    apt upgrades, the RT kernel and migrations (a backup), 20 min for PostgreSQL and
    monitoring installs, 10 min otherwise) bounds create, update and delete
    (``customTimeouts``): a hung host fails the update naming this resource.
    ``lock`` (default ``default_lock``) and ``lock_wait`` (default two thirds of the timeout)
    set the host-side lock the step holds while it runs.
    ``rerun``: any text; changing it re-applies the step even though its text is otherwise
    the same (see ``script_command``: an unchanged step is not applied twice).
    ``mode``: "create" (the default: text already applied on this host is not applied twice)
    or "always" (it runs whenever Pulumi runs it: the cutover, whose command goes back to an
    earlier text on an earlier host after the other color's switch changed what is live).
    """

    name: str
    script: str
    env: Mapping[str, str]
    files: Mapping[str, str] | None = None
    stdin: Optional[pulumi.Input[str]] = None
    delete_script: str | None = None
    delete_env: Mapping[str, str] | None = None
    timeout: int | None = None
    lock: str | None = None
    lock_wait: int | None = None
    rerun: str = ""
    mode: str = "create"

    @property
    def timeout_seconds(self) -> int:
        return int(self.timeout) if self.timeout else default_timeout(self.script)

    def _text(self, rerun: str = "") -> str:
        wait = self.lock_wait if self.lock_wait is not None else self.timeout_seconds * 2 // 3
        return script_command(self.script, self.env, self.files, step=self.name, lock=self.lock,
                              lock_wait=wait, rerun=rerun, mode=self.mode)

    @property
    def fingerprint(self) -> str:
        """Changes exactly when what this step applies changes (its staged command text)."""
        return hashlib.sha256(self._text(self.rerun).encode()).hexdigest()

    def create(self, conn: remote.ConnectionArgs, parent: pulumi.Resource,
               depends_on: Sequence[pulumi.Resource] = (), secret: bool = False,
               triggers: Optional[Sequence[pulumi.Input[str]]] = None,
               delete_before_replace: bool = False) -> remote.Command:
        """The ``remote.Command``. ``triggers`` also go into the applied text, so a triggers
        bump really re-applies (pulumi-command replaces the resource on a triggers change,
        which also runs the delete command of the old one: prefer ``rerun``, except where that
        is the point: a placement moved to another host, with ``delete_before_replace``)."""
        delete = None
        if self.delete_script:
            env = self.delete_env or self.env
            wait = self.lock_wait if self.lock_wait is not None else self.timeout_seconds * 2 // 3
            delete = script_command(self.delete_script, env, step=self.name, mode="delete",
                                    lock=self.lock or default_lock(self.script, self.env),
                                    lock_wait=wait)
        if triggers:
            create: pulumi.Input[str] = pulumi.Output.all(*triggers).apply(
                lambda ts: self._text(self.rerun + "\ntriggers " + json.dumps(ts, sort_keys=True, default=str)))
        else:
            create = self._text(self.rerun)
        t = f"{self.timeout_seconds}s"
        return remote.Command(
            self.name,
            connection=conn,
            create=create,
            delete=delete,
            stdin=self.stdin,
            triggers=list(triggers) if triggers else None,
            # Scripts never print what they read from stdin, so their output stays visible
            # (a failed validation must say why); it is still kept encrypted in state.
            logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=parent, depends_on=list(depends_on),
                additional_secret_outputs=["stdout", "stderr"] if secret else None,
                delete_before_replace=delete_before_replace,
                custom_timeouts=pulumi.CustomTimeouts(create=t, update=t, delete=t)),
        )
