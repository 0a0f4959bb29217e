"""Strategies (runbook 7.2, 5.3) under Pulumi mocks and the config reader: what each Strategy
records (its step's env and files, its command's inputs), and which config is refused, without a host.
"""
from __future__ import annotations

import json

import pulumi
import pytest

from components.reader import read
from components.strategy import StrategiesSettings, build_strategies, render_strategy_file
from tests.test_components_unit import Mocks, plain
from tests.test_config import stack_values

MM = {"name": "BTC-USD market making", "symbol": "BTC-USD", "exchange": "coinbase", "maxPosition": 0.5,
      "mode": "paper", "state": "running"}
ETH = {"symbol": "ETH-USD", "exchange": "binance", "maxPosition": 2, "mode": "live", "state": "stopped"}
REPORT = {"id": "mm_btc_usd", "status": "running", "paper_trading": True, "paper_since": "2025-11-28T10:00:00.000Z"}


def strategies(raw: dict) -> StrategiesSettings:
    problems: list[str] = []
    out = read(StrategiesSettings, raw, "strategies", problems)
    assert problems == []
    return out


class StrategyMocks(Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        rid, outputs = super().new_resource(args)
        if args.typ == "command:remote:Command" and args.name.endswith("-strategy"):
            outputs["stdout"] = "ok: loaded\nHFT_STRATEGY_REPORT=" + json.dumps(REPORT) + "\n"
        return rid, outputs


def run(tmp_path, raw: dict, stack: str = "prod", values: dict | None = None):
    """The prod stack under mocks, plus the strategies of ``raw`` wired as the stack wires them."""
    from components.config import parse
    from components.stack import build

    mocks = StrategyMocks()
    pulumi.runtime.set_mocks(mocks, project="hft-deploy", stack=stack, preview=False)
    values = values or stack_values(stack)
    values.setdefault("service", {})["strategies"] = []   # strategies live in hft:strategies only
    cfg = parse(values)
    d = build(cfg, pulumi.Output.secret({n: "k" for n in cfg.exchange_secret_names}), pulumi.Output.secret("mock-key"))
    settings = strategies(raw)
    assert settings.problems(cfg.service) == []
    built = build_strategies(cfg.topology, settings, cfg.service, d.fleet.servers,
                             {c: s.ready for c, s in d.services.items()})
    reports = {}

    @pulumi.runtime.test
    def resolved():
        return pulumi.Output.all(*[s.report for per in built.values() for s in per.values()]).apply(
            lambda r: reports.update(all=r))

    resolved()
    commands = {r.name: r for r in mocks.resources if r.typ == "command:remote:Command"}
    return built, commands, reports.get("all"), d


RAW = {"minPaperSeconds": 86400, "deployed": {"mm_btc_usd": MM, "eth_mr": ETH}}


def test_one_strategy_step_per_strategy_and_app_placement(tmp_path) -> None:
    built, commands, _, _ = run(tmp_path, RAW)
    assert {c: set(per) for c, per in built.items()} == {"blue": {"mm_btc_usd", "eth_mr"},
                                                         "green": {"mm_btc_usd", "eth_mr"}}
    assert {n for n in commands if n.endswith("-strategy")} == {
        "app-blue-mm_btc_usd-strategy", "app-blue-eth_mr-strategy",
        "app-green-mm_btc_usd-strategy", "app-green-eth_mr-strategy"}
    blue = built["blue"]["mm_btc_usd"].step
    assert blue.script == "strategy.sh" and blue.delete_script == "strategy_delete.sh"
    assert blue.env == {"HFT_STRATEGY_ID": "mm_btc_usd", "HFT_MODE": "paper", "HFT_STATE": "running",
                        "HFT_MIN_PAPER_SECONDS": "86400", "HFT_HOME": "/opt/hft_system", "HFT_USER": "hft_user",
                        "HFT_API": "http://10.0.0.10:8080", "HFT_PLACEMENT": "app:blue", "HFT_ROLE": "primary"}
    assert blue.delete_env == {"HFT_STRATEGY_ID": "mm_btc_usd", "HFT_HOME": "/opt/hft_system",
                               "HFT_API": "http://10.0.0.10:8080", "HFT_PLACEMENT": "app:blue"}


def test_the_file_is_the_strategy_as_the_workload_reads_it(tmp_path) -> None:
    built, _, _, _ = run(tmp_path, RAW)
    files = built["blue"]["mm_btc_usd"].step.files
    assert set(files) == {"mm_btc_usd.json"}
    assert json.loads(files["mm_btc_usd.json"]) == {
        "id": "mm_btc_usd", "name": "BTC-USD market making", "symbol": "BTC-USD", "exchange": "coinbase",
        "paper_trading": True, "max_position": 0.5, "autostart": True}
    eth = json.loads(built["green"]["eth_mr"].step.files["eth_mr.json"])
    assert eth["name"] == "eth_mr" and eth["paper_trading"] is False and eth["autostart"] is False


def test_a_standby_follows_the_primary(tmp_path) -> None:
    built, commands, _, d = run(tmp_path, RAW)
    green = built["green"]["mm_btc_usd"]
    assert green.step.env["HFT_ROLE"] == "standby"
    assert green.step.env["HFT_PRIMARY_API"] == "http://10.0.0.10:8080"   # blue as green's host reaches it
    assert green.step.env["HFT_API"] == "http://10.0.0.11:8080"
    assert "HFT_PRIMARY_API" not in built["blue"]["mm_btc_usd"].step.env
    inputs = plain(commands["app-green-mm_btc_usd-strategy"].inputs)
    assert inputs["connection"]["host"] == "10.0.0.11" and inputs["triggers"] == ["hft-prod-02"]
    assert plain(commands["app-blue-mm_btc_usd-strategy"].inputs)["connection"]["host"] == "10.0.0.10"
    # green's step waits for green's release and for blue's step of the same strategy
    assert green.after == [d.services["green"].ready, built["blue"]["mm_btc_usd"].ready]
    assert built["blue"]["mm_btc_usd"].after == [d.services["blue"].ready]


def test_no_secret_reaches_a_strategy_step(tmp_path) -> None:
    _, commands, _, _ = run(tmp_path, RAW)
    for name in (n for n in commands if n.endswith("-strategy")):
        inputs = plain(commands[name].inputs)
        assert inputs.get("stdin") in (None, "")
        for secret in ("mock-hft_db-password", "mock-api-token", "mock-key"):
            assert secret not in inputs["create"] and secret not in (inputs.get("delete") or ""), (name, secret)


def test_the_report_is_what_the_workload_said(tmp_path) -> None:
    _, _, reports, _ = run(tmp_path, RAW)
    assert reports and all(r == REPORT for r in reports)


def test_a_mode_change_changes_only_that_strategys_steps(tmp_path) -> None:
    before, _, _, _ = run(tmp_path, RAW)
    live = {**RAW, "deployed": {**RAW["deployed"], "mm_btc_usd": {**MM, "mode": "live"}}}
    after, _, _, _ = run(tmp_path, live)
    changed = {(c, sid) for c in before for sid in before[c]
               if before[c][sid].fingerprint != after[c][sid].fingerprint}
    assert changed == {("blue", "mm_btc_usd"), ("green", "mm_btc_usd")}
    assert after["blue"]["mm_btc_usd"].step.env["HFT_MODE"] == "live"
    # the file says live too: strategy.sh writes it only once the gate has passed
    assert json.loads(after["blue"]["mm_btc_usd"].step.files["mm_btc_usd.json"])["paper_trading"] is False


def test_a_cutover_swaps_which_step_goes_first(tmp_path) -> None:
    values = stack_values("prod")
    values["release"]["live"] = "green"
    built, _, _, _ = run(tmp_path, RAW, values=values)
    assert built["green"]["mm_btc_usd"].step.env["HFT_ROLE"] == "primary"
    assert built["blue"]["mm_btc_usd"].step.env["HFT_PRIMARY_API"] == "http://10.0.0.11:8080"
    assert built["green"]["mm_btc_usd"].ready in built["blue"]["mm_btc_usd"].after


# ---- config: each value by the grammar of where it lands ------------------------------------

def problems_of(raw) -> list[str]:
    problems: list[str] = []
    read(StrategiesSettings, raw, "strategies", problems)
    return problems


@pytest.mark.parametrize("deployed, expect", [
    ({"bad id!": MM}, 'hft:strategies.deployed key = "bad id!": expected a strategy id'),
    ({"x" * 65: MM}, "hft:strategies.deployed key"),
    ({"..": MM}, 'hft:strategies.deployed key = "..": expected a strategy id'),
    ({"mm": {**MM, "id": "other"}}, 'hft:strategies.deployed.mm.id = "other": expected "mm"'),
    ({"mm": {**MM, "mode": "real"}}, 'hft:strategies.deployed.mm.mode = "real": expected one of paper, live'),
    ({"mm": {**MM, "state": "paused"}}, 'hft:strategies.deployed.mm.state = "paused": expected one of running, stopped'),
    ({"mm": {**MM, "maxPosition": 0}}, "hft:strategies.deployed.mm.maxPosition = 0: expected a number greater than 0"),
    ({"mm": {**MM, "maxPosition": True}}, "hft:strategies.deployed.mm.maxPosition = true"),
    ({"mm": {**MM, "symbol": "BTC USD"}}, 'hft:strategies.deployed.mm.symbol = "BTC USD": expected an instrument symbol'),
    ({"mm": {**MM, "name": "two\nlines"}}, "hft:strategies.deployed.mm.name"),
    ({"mm": {**MM, "exchange": "Kraken!"}}, 'hft:strategies.deployed.mm.exchange = "Kraken!"'),
    ({"mm": {**MM, "paper_trading": True}}, "hft:strategies.deployed.mm.paper_trading: unknown key"),
    ({"mm": {k: v for k, v in MM.items() if k != "mode"}}, "hft:strategies.deployed.mm.mode is missing"),
])
def test_bad_strategy_values_are_refused_naming_key_and_value(deployed, expect) -> None:
    problems = problems_of({"minPaperSeconds": 60, "deployed": deployed})
    assert any(p.startswith(expect) for p in problems), problems


def test_min_paper_seconds_is_a_bounded_number() -> None:
    assert problems_of({"minPaperSeconds": -1, "deployed": {}}) == [
        "hft:strategies.minPaperSeconds = -1: expected an integer from 0 to 7776000"]
    assert problems_of({"minPaperSeconds": 0, "deployed": {}}) == []


def test_exchange_and_id_are_cross_checked_with_the_service(tmp_path) -> None:
    from components.config import parse
    values = stack_values("prod")
    values.setdefault("service", {})["strategies"] = [   # production.json's inline list
        {"id": "mm_btc_usd", "symbol": "BTC-USD", "exchange": "coinbase", "max_position": 0.5}]
    cfg = parse(values)
    s = strategies({"minPaperSeconds": 60, "deployed": {"k": {**MM, "exchange": "kraken"},
                                                         "mm_btc_usd": MM}})
    assert s.problems(cfg.service) == [
        'hft:strategies.deployed.k.exchange = "kraken": expected one of hft:service.exchanges (binance, coinbase)',
        "hft:strategies.deployed.mm_btc_usd: expected an id not also in hft:service.strategies (the service would "
        'refuse its config: strategy id "mm_btc_usd" is defined twice); keep it in one place']


def test_the_rendered_file_keeps_numbers_and_names() -> None:
    s = strategies({"minPaperSeconds": 1, "deployed": {"a.b-c_1": {**ETH, "maxPosition": 1, "name": 'q"uote'}}})
    doc = json.loads(render_strategy_file(s.deployed["a.b-c_1"]))
    assert doc["id"] == "a.b-c_1" and doc["max_position"] == 1 and doc["name"] == 'q"uote'
