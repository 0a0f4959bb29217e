"""hft-deploy: the HFT system's deployment runbook as a Pulumi program.

config -> topology -> fleet / data / release components -> stack outputs. Configuration is
parsed and validated first (components/config.py); an invalid stack config stops here, at
preview, before any resource is registered.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pulumi
from pulumi.runtime.config import CONFIG, is_config_secret

from components.config import (SECRET_KEYS, ConfigError, check_exchange_keys, default_state_url, parse,
                               secret_problems, state_problems)
from components.stack import build


def hft_values() -> tuple[dict, set[str]]:
    """The stack's plain ``hft:*`` config values, decoded, and the names of the secret ones."""
    values, secret = {}, set()
    for key, raw in CONFIG.get().items():
        if not key.startswith("hft:"):
            continue
        name = key[4:]
        if is_config_secret(key):
            secret.add(name)
        if name in SECRET_KEYS:
            continue
        try:
            values[name] = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            values[name] = raw
    return values, secret


def backend_url() -> str | None:
    """The state backend this update runs against: PULUMI_BACKEND_URL, else the `pulumi login` one."""
    if os.environ.get("PULUMI_BACKEND_URL"):
        return os.environ["PULUMI_BACKEND_URL"]
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    try:
        return json.loads((home / "credentials.json").read_text()).get("current")
    except (OSError, json.JSONDecodeError):
        return None


def lab_inventory() -> dict:
    """The lab's hosts, addresses and keys, as `python3 -m lab inventory` prints them."""
    proc = subprocess.run([sys.executable, "-m", "lab", "inventory"], cwd=Path(__file__).parent,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError([f'hft:inventory = "lab": `python3 -m lab inventory` failed: {proc.stderr.strip()}'])
    return json.loads(proc.stdout)


# Exit code that tells the language host "the error was already shown: no more output"
# (pulumi-language-python-exec's PYTHON_PROCESS_EXITED_AFTER_SHOWING_USER_ACTIONABLE_MESSAGE_CODE).
BAIL = 32


def _stopped_by_the_engine(signum, frame) -> None:
    """When a step fails, the engine reports it and stops the program with SIGINT (its plugin
    process group) while resources are still registering: Python's default KeyboardInterrupt
    printed ~70 lines of gRPC traceback after the step's own error. Exit at once instead."""
    os._exit(BAIL)


def main() -> None:
    config = pulumi.Config("hft")
    try:
        values, secret = hft_values()
        problems = secret_problems(secret)
        if problems:
            raise ConfigError(problems)
        cfg = parse(values, inventory=lab_inventory() if values.get("inventory") == "lab" else None)
        problems = state_problems(cfg.environment, backend_url(),
                                  os.environ.get("HFT_LOCAL_STATE_URL") or default_state_url(),
                                  os.environ.get("HFT_ALLOW_LOCAL_STATE") == "1")
        if problems:
            raise ConfigError(problems)
        raw_keys = CONFIG.get().get("hft:exchangeKeys")
        check_exchange_keys(json.loads(raw_keys) if raw_keys else None, cfg.exchange_secret_names)
        deployment = build(cfg, config.require_secret_object("exchangeKeys"), config.get_secret("sshPrivateKey"),
                           config.get_secret("dbPassword"))
    except ConfigError as err:
        # shown once, then the "already reported" exit: a RunError would add the language
        # host's "an unhandled error occurred: Program exited with non-zero exit code: 1"
        pulumi.log.error(str(err))
        sys.exit(BAIL)
    for name, value in deployment.outputs.items():
        pulumi.export(name, value)


signal.signal(signal.SIGINT, _stopped_by_the_engine)
main()
