"""Reading the one-line JSON reports that remote scripts print last (``NAME=<json>``)."""
from __future__ import annotations

import json

import pulumi


def parse_report(stdout: str, marker: str) -> dict:
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(marker + "="):
            return json.loads(line[len(marker) + 1:])
    lines = (stdout or "").strip().splitlines()
    if lines and lines[-1].startswith("{"):
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    return {"status": "no report", "marker": marker}


def report_from_stdout(stdout: pulumi.Output[str], marker: str) -> pulumi.Output[dict]:
    return stdout.apply(lambda text: parse_report(text, marker))
