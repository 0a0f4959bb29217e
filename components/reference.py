"""The reference of every config key, generated from the section dataclasses and runbook.yaml.

    venv/bin/python -m components.reference > docs/config-reference.md

tests/test_config_reference.py fails when the committed file is not what this prints.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator

import yaml

from components.config import RUNBOOK_DEFAULTS, StackSettings
from components.reader import ListOf, MapOf, Section


def _default(defaults: Any, key: str) -> str:
    if not isinstance(defaults, dict) or key not in defaults:
        return ""
    return "`" + json.dumps(defaults[key], separators=(", ", ": ")) + "`" if not isinstance(
        defaults[key], (dict, list)) or len(json.dumps(defaults[key])) < 60 else "(see runbook.yaml)"


def rows(cls: type, prefix: str, defaults: Any, item_defaults: dict[str, Any]) -> Iterator[list[str]]:
    """One table row per key of ``cls``, then its sub-keys (``item_defaults``: defaults of each
    item of a list or mapping, by config path, e.g. ``hosts`` from runbook.yaml's hostDefaults)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        key, rule = meta["key"], meta["rule"]
        path = f"{prefix}{key}"
        sub = getattr(rule, "item", None) or getattr(rule, "value", None)
        yield [f"`hft:{path}`", meta["doc"], rule.allowed.replace("|", "\\|"), _default(defaults, key),
               meta["runbook"], meta["lab"] + (" (optional)" if meta["optional"] else "")]
        child = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(rule, Section):
            yield from rows(rule.cls, f"{path}.", child or {}, item_defaults)
        elif isinstance(rule, (ListOf, MapOf)) and isinstance(sub, Section):
            marker = "[i]" if isinstance(rule, ListOf) else ".NAME"
            yield from rows(sub.cls, f"{path}{marker}.", item_defaults.get(path, {}), item_defaults)


def render() -> str:
    defaults = yaml.safe_load(RUNBOOK_DEFAULTS.read_text())
    out = ["# Configuration reference", "",
           "Every key of a stack's `hft:` namespace, generated from the section dataclasses beside the",
           "components (`venv/bin/python -m components.reference > docs/config-reference.md`). Defaults",
           "come from `config/runbook.yaml` (host keys from its `hostDefaults`); a stack's",
           "`Pulumi.<stack>.yaml` overrides them key by key. Set a key whose name has dots with",
           "Pulumi's path syntax: `pulumi config set --path 'hft:baseline.sysctl[\"vm.swappiness\"]' 10`.",
           "Secrets only from a file or stdin: `pulumi config set --secret --path 'hft:exchangeKeys.X' < file`.",
           "", "| key | what | allowed | default | runbook | lab / notes |", "|---|---|---|---|---|---|"]
    for row in rows(StackSettings, "", defaults, {"hosts": defaults.get("hostDefaults", {})}):
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
