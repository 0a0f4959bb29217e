"""One stack as the on-call commands see it: its parsed config (the program's own parser) and
the Automation API to change its config and run `pulumi up`."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pulumi import automation as auto

from components.config import SECRET_KEYS, StackConfig, parse

PROJECT = Path(__file__).resolve().parent.parent


@dataclass
class OpsStack:
    stack: auto.Stack
    project_dir: Path

    @classmethod
    def select(cls, name: str, project_dir: Path = PROJECT) -> "OpsStack":
        return cls(auto.select_stack(stack_name=name, work_dir=str(project_dir)), project_dir)

    def values(self) -> dict[str, Any]:
        """The stack's hft:* values, decoded as the program decodes them (secrets left out)."""
        out = {}
        for key, value in self.stack.get_all_config().items():
            if not key.startswith("hft:") or key[4:] in SECRET_KEYS:
                continue
            try:
                out[key[4:]] = json.loads(value.value)
            except (TypeError, json.JSONDecodeError):
                out[key[4:]] = value.value
        return out

    def config(self) -> StackConfig:
        values = self.values()
        inventory = None
        if values.get("inventory") == "lab":
            proc = subprocess.run([sys.executable, "-m", "lab", "inventory"], cwd=self.project_dir,
                                  capture_output=True, text=True, check=True)
            inventory = json.loads(proc.stdout)
        return parse(values, inventory=inventory)

    def set(self, path: str, value: str) -> None:
        """Record a change in the stack file (`pulumi config set --path`)."""
        self.stack.set_config(f"hft:{path}", auto.ConfigValue(value=value), path=True)

    def up(self, say: Callable[[str], None]) -> auto.UpResult:
        return self.stack.up(on_output=say, color="never")

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.stack.outputs().items()}
