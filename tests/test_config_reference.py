"""docs/config-reference.md is what the section dataclasses and runbook.yaml say today."""
from __future__ import annotations

from pathlib import Path

from components.reference import render

REPO = Path(__file__).resolve().parent.parent


def test_the_committed_key_reference_is_current() -> None:
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == render(), ("docs/config-reference.md is stale: run "
                                   "`venv/bin/python -m components.reference > docs/config-reference.md`")


def test_every_section_key_is_in_the_reference() -> None:
    text = render()
    for key in ("hft:placements", "hft:release.live", "hft:baseline.aptUpgrade.requested", "hft:hosts.NAME.hostKey",
                "hft:postgres.hba[i].method", "hft:service.unit.limitMEMLOCK", "hft:exchangeKeys"):
        assert f"`{key}`" in text, key
