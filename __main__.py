"""hft-deploy: the HFT system's deployment runbook as a Pulumi program.

Configuration is parsed and validated first (components/config.py); an invalid stack
config stops here, at preview, before any resource is registered.
"""
import json

import pulumi
from pulumi.runtime.config import CONFIG

from components.config import ConfigError, check_exchange_keys, parse
from components.stack import build


def hft_values() -> dict:
    """The stack's ``hft:*`` config values, decoded (objects arrive as JSON text)."""
    values = {}
    for key, raw in CONFIG.get().items():
        if not key.startswith("hft:") or key in ("hft:exchangeKeys", "hft:sshPrivateKey"):
            continue
        try:
            values[key[4:]] = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            values[key[4:]] = raw
    return values


def main() -> None:
    config = pulumi.Config("hft")
    raw_keys = CONFIG.get().get("hft:exchangeKeys")
    try:
        cfg = parse(hft_values())
        check_exchange_keys(json.loads(raw_keys) if raw_keys else None, cfg.exchange_secret_names)
        outputs = build(cfg, config.require_secret_object("exchangeKeys"), config.get_secret("sshPrivateKey"))
    except ConfigError as err:
        raise pulumi.RunError(str(err)) from None
    for name, value in outputs.items():
        pulumi.export(name, value)


main()
