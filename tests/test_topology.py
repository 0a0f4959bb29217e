"""Topology: placements, co-location and addresses, from config alone (no Pulumi, no host)."""
from __future__ import annotations

import pytest

from components.reader import ConfigError
from components.topology import (LOOPBACK, AppPlacement, ColorRelease, HostRef, ReleaseSettings, TopologyError,
                                 build, check_one_primary)

A, B, C = HostRef("hft-prod-01", "10.0.0.10"), HostRef("hft-prod-02", "10.0.0.11"), HostRef("hft-db-01", "10.0.0.12")
V1, V2 = ColorRelease("v1.0.0"), ColorRelease("v1.1.0")


def prod(placements=None, release=None, hosts=(A, B)):
    placements = placements or {"app:blue": A.name, "app:green": B.name, "db": A.name, "monitoring": A.name}
    return build(hosts, placements, release or ReleaseSettings("blue", V1, V2, None), True, 8080)


def problems(**kw) -> list[str]:
    with pytest.raises(TopologyError) as err:
        prod(**kw)
    return err.value.problems


def test_the_live_color_is_the_only_primary_and_the_only_one_trading() -> None:
    topo = prod()
    roles = {a.color: (a.role, a.trading_enabled, a.version) for a in topo.apps}
    assert roles == {"blue": ("primary", True, "v1.0.0"), "green": ("standby", False, "v1.1.0")}
    assert topo.primary.host == A


def test_co_located_parts_reach_each_other_on_loopback() -> None:
    topo = prod()
    assert topo.address(A, topo.db) == LOOPBACK
    assert topo.address(B, topo.db) == A.address


def test_the_database_listens_and_admits_exactly_the_app_hosts() -> None:
    topo = prod()
    assert topo.db_listen() == ["localhost", A.address]
    assert topo.db_clients() == ["127.0.0.1/32", f"{B.address}/32"]


def test_a_single_host_stack_listens_on_loopback_only() -> None:
    topo = build((A,), {"app:blue": A.name, "db": A.name, "monitoring": A.name},
                 ReleaseSettings("blue", V1, None, None), False, 8080)
    assert topo.db_listen() == ["localhost"] and topo.db_clients() == ["127.0.0.1/32"]


def test_the_api_binds_to_loopback_only_where_nothing_on_another_host_needs_it() -> None:
    single = build((A,), {"app:blue": A.name, "db": A.name, "monitoring": A.name},
                   ReleaseSettings("blue", V1, None, None), False, 8080)
    assert single.apps[0].api_bind == LOOPBACK and single.scrape_target(single.apps[0]) == "127.0.0.1:8080"
    topo = prod()   # the cutover on one color's host fences the other: both listen on their address
    bind = {a.color: a.api_bind for a in topo.apps}
    assert bind == {"blue": A.address, "green": B.address}
    assert [topo.scrape_target(a) for a in topo.apps] == ["10.0.0.10:8080", "10.0.0.11:8080"]
    assert topo.api_url_from(B, topo.apps[0]) == "http://10.0.0.10:8080"
    assert topo.node_targets(9100) == ["127.0.0.1:9100", "10.0.0.11:9100"]
    assert topo.prometheus_url(B) == "http://10.0.0.10:9090"


def test_a_host_may_carry_several_placements_and_the_db_its_own_host() -> None:
    topo = prod(placements={"app:blue": A.name, "app:green": B.name, "db": C.name, "monitoring": B.name},
                hosts=(A, B, C))
    assert topo.db == C and topo.monitoring == B
    assert topo.db_clients() == [f"{A.address}/32", f"{B.address}/32"]
    assert topo.db_listen() == ["localhost", C.address]


def test_a_placement_on_an_undeclared_host_is_refused_naming_both() -> None:
    found = problems(placements={"app:blue": A.name, "app:green": "hft-prod-09", "db": A.name, "monitoring": A.name})
    assert any('hft:placements.app:green = "hft-prod-09": expected a host declared in hft:hosts' in p for p in found)


def test_a_live_color_without_a_placement_is_refused() -> None:
    found = problems(placements={"app:blue": A.name, "db": A.name, "monitoring": A.name},
                     release=ReleaseSettings("green", V1, None, None))
    assert any('hft:release.live = "green": expected a color with an app placement (app:blue)' in p for p in found)


def test_a_placed_color_without_a_release_and_a_release_without_a_placement_are_refused() -> None:
    found = problems(placements={"app:blue": A.name, "db": A.name, "monitoring": A.name},
                     release=ReleaseSettings("blue", None, V2, None))
    assert "hft:release.blue is missing: expected {version: vX.Y.Z} for placement app:blue" in found
    assert any(p.startswith("hft:release.green = (set): expected a placement app:green") for p in found)


def test_missing_db_and_monitoring_placements_are_named() -> None:
    found = problems(placements={"app:blue": A.name, "app:green": B.name})
    assert "hft:placements.db is missing: expected the name of the host it runs on" in found
    assert "hft:placements.monitoring is missing: expected the name of the host it runs on" in found


def test_two_primaries_are_refused_naming_both() -> None:
    apps = [AppPlacement("app:blue", "blue", A, "v1.0.0", "primary", True, LOOPBACK, ""),
            AppPlacement("app:green", "green", B, "v1.0.0", "primary", True, B.address, "")]
    with pytest.raises(ConfigError) as err:
        check_one_primary(apps)
    assert "found app:blue, app:green" in str(err.value)
