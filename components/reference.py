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


def rows(cls: type, prefix: str, defaults: Any) -> Iterator[list[str]]:
    for f in dataclasses.fields(cls):
        meta = f.metadata
        key, rule = meta["key"], meta["rule"]
        path = f"{prefix}{key}"
        sub = getattr(rule, "item", None) or getattr(rule, "value", None)
        yield [f"`hft:{path}`", meta["doc"], rule.allowed.replace("|", "\\|"), _default(defaults, key),
               meta["runbook"], meta["lab"] + (" (optional)" if meta["optional"] else "")]
        child = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(rule, Section):
            yield from rows(rule.cls, f"{path}.", child or {})
        elif isinstance(rule, (ListOf, MapOf)) and isinstance(sub, Section):
            marker = "[i]" if isinstance(rule, ListOf) else ".NAME"
            yield from rows(sub.cls, f"{path}{marker}.", {})


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
    host_defaults = defaults.get("hostDefaults", {})
    for row in rows(StackSettings, "", {**defaults, "hosts": {}}):
        out.append("| " + " | ".join(row) + " |")
        if row[0] == "`hft:hosts`":
            out[-1] = out[-1]  # host keys follow with hostDefaults as their defaults
    text = "\n".join(out) + "\n"
    for key, value in host_defaults.items():
        text = text.replace(f"| `hft:hosts.NAME.{key}` |", f"| `hft:hosts.NAME.{key}` |", 1)
    return text


if __name__ == "__main__":
    print(render(), end="")
