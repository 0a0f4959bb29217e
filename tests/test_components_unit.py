"""The resource graph under Pulumi mocks: what each stack registers, from the components' own
recorded inputs (their steps' env and files), without any host."""
from __future__ import annotations

import pulumi
import pytest

from tests.test_config import LAB_INVENTORY, stack_values


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"mock-{args.name}-0123456789abcdef"
        if args.typ == "command:remote:Command":
            outputs["stdout"] = ('HFT_SYSCTL_REPORT={"status": "skipped: container host", "hugepages": "skipped"}\n'
                                 'HFT_VALIDATION_REPORT={"status": "SUCCESS", "passed": [], "failed": []}')
            outputs["stderr"] = ""
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def run_stack(stack: str, tmp_path, values: dict | None = None):
    from components.config import parse
    from components.stack import build

    key = tmp_path / "id_ed25519"
    # Mocks never dial: any text stands in for the key file the lab inventory names.
    key.write_text("mock-ssh-key-file-contents\n")
    inventory = {"hosts": {n: {**h, "private_key": str(key)} for n, h in LAB_INVENTORY["hosts"].items()}}
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="hft-deploy", stack=stack, preview=False)
    cfg = parse(values or stack_values(stack), inventory=inventory if stack == "lab" else None)
    keys = {n: "k" for n in cfg.exchange_secret_names}
    deployment = build(cfg, pulumi.Output.secret(keys), pulumi.Output.secret("mock-key"))

    seen = {}

    @pulumi.runtime.test
    def resolved():
        return pulumi.Output.all(deployment.outputs["kernel_steps"], deployment.outputs["validation"]).apply(
            lambda x: seen.update(kernel_steps=x[0], validation=x[1]))

    resolved()
    mocks.kernel_steps, mocks.validation = seen.get("kernel_steps"), seen.get("validation")
    return mocks, deployment


SECRET_SIG = "4dabf18193072939515e22adb298388d"


def plain(value):
    """Mock inputs keep secrets wrapped as {sig: ..., value: ...}; unwrap them for assertions."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    return value


def commands(mocks: Mocks) -> dict[str, dict]:
    return {r.name: plain(r.inputs) for r in mocks.resources if r.typ == "command:remote:Command"}


def test_lab_is_the_prod_shape_on_two_container_hosts(tmp_path) -> None:
    _, d = run_stack("lab", tmp_path)
    assert set(d.fleet.servers) == {"hft-prod-01", "hft-prod-02"}
    blue, green = d.services["blue"].step, d.services["green"].step
    assert '"role": "primary"' in blue.files["production.json"] and '"trading_enabled": true' in blue.files["production.json"]
    assert '"role": "standby"' in green.files["production.json"] and '"trading_enabled": false' in green.files["production.json"]
    assert '"host": "198.18.0.13"' in green.files["production.json"]      # green reaches the db over the lab net
    assert '"host": "127.0.0.1"' in blue.files["production.json"]         # blue is co-located with it


def test_one_service_and_validation_per_app_placement(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    assert set(d.services) == set(d.validations) == {"blue", "green"}
    assert d.validations["green"].step.env["HFT_PROMETHEUS"] == "http://10.0.0.10:9090"
    assert d.validations["blue"].step.env["HFT_API"] == "http://10.0.0.10:8080"
    assert d.validations["green"].step.env["HFT_API"] == "http://10.0.0.11:8080"


def test_postgres_listens_and_admits_exactly_the_app_hosts(tmp_path) -> None:
    _, d = run_stack("prod", tmp_path)
    files = d.postgres.step.files
    assert "listen_addresses = 'localhost,10.0.0.10'" in files["postgresql.conf"]
    assert files["pg_hba.block"] == ("host hft_db hft_user 127.0.0.1/32 scram-sha-256\n"
                                     "host hft_db hft_user 10.0.0.11/32 scram-sha-256\n")


def test_prometheus_scrapes_every_app_placement_and_every_host(tmp_path) -> None:
    import yaml
    _, d = run_stack("prod", tmp_path)
    doc = yaml.safe_load(d.monitoring.step.files["prometheus.yml"])
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    apps = {c["labels"]["color"]: c["targets"] for c in jobs["hft_system"]["static_configs"]}
    assert apps == {"blue": ["10.0.0.10:8080"], "green": ["10.0.0.11:8080"]}
    assert jobs["node_exporter"]["static_configs"][0]["targets"] == ["127.0.0.1:9100", "10.0.0.11:9100"]
    assert set(d.fleet.exporters) == {"hft-prod-01", "hft-prod-02"}


def test_baseline_is_one_step_per_runbook_concern(tmp_path) -> None:
    _, d = run_stack("prod", tmp_path)
    steps = d.fleet.baselines["hft-prod-01"].steps
    assert set(steps) == {f"hft-prod-01-{c}" for c in ("apt-upgrade", "limits", "sysctl", "cpu-governor",
                                                       "services", "packages")}
    assert steps["hft-prod-01-sysctl"].env == {"HFT_APPLY_SYSCTL": "1", "HFT_KERNEL_SKIP_REASON": "disabled in config"}
    assert "vm.nr_hugepages=4096" in steps["hft-prod-01-sysctl"].files["sysctl.conf"]
    assert "hft_user hard memlock unlimited" in steps["hft-prod-01-limits"].files["limits.conf"]
    assert steps["hft-prod-01-apt-upgrade"].env == {"HFT_APT_UPGRADE": "1", "HFT_APT_UPGRADE_REQUESTED": "initial"}


def test_a_sysctl_edit_changes_only_the_sysctl_step(tmp_path) -> None:
    _, before = run_stack("prod", tmp_path)
    values = stack_values("prod")
    values["baseline"] = {"sysctl": {"vm.swappiness": "10"}}
    _, after = run_stack("prod", tmp_path, values)
    fp_before, fp_after = (d.fleet.baselines["hft-prod-01"].fingerprints for d in (before, after))
    assert {k for k in fp_before if fp_before[k] != fp_after[k]} == {"hft-prod-01-sysctl"}


def test_lab_container_hosts_skip_kernel_steps_and_pin_host_keys(tmp_path) -> None:
    mocks, d = run_stack("lab", tmp_path)
    cmds = commands(mocks)
    assert not any("rt-kernel" in name for name in cmds), "no RT kernel command on a container host"
    for name, inputs in cmds.items():
        assert inputs["connection"]["hostKey"] == LAB_INVENTORY["hosts"]["hft-prod-01"]["host_key"], name
    assert d.fleet.servers["hft-prod-01"].identity_step.env["HFT_APPLY_NETWORK"] == "0"
    assert d.fleet.baselines["hft-prod-01"].steps["hft-prod-01-sysctl"].env["HFT_APPLY_SYSCTL"] == "0"
    assert mocks.kernel_steps["hft-prod-01"]["realtime_kernel"] == "skipped: container host"
    assert mocks.kernel_steps["hft-prod-01"]["sysctl_apply"] == "skipped: container host"   # what the host said


def test_prod_applies_kernel_steps_and_the_network(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    cmds = commands(mocks)
    assert {f"hft-prod-01-rt-kernel-{s}" for s in ("install", "reboot", "verify")} <= set(cmds)
    identity = d.fleet.servers["hft-prod-01"].identity_step
    assert identity.env["HFT_APPLY_NETWORK"] == "1" and "- 10.0.0.10/24" in identity.files["netplan.yaml"]


def test_secrets_stay_off_command_text_and_reach_the_host_on_stdin_only(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    cmds = commands(mocks)
    release = cmds["app-blue-release"]
    assert "mock-hft_db-password" in release["stdin"] and "mock-api-token" in release["stdin"]
    for name, inputs in cmds.items():
        for secret in ("mock-hft_db-password", "mock-api-token", "mock-key"):
            assert secret not in inputs["create"], (name, secret)


def test_the_unit_carries_every_runbook_field(tmp_path) -> None:
    _, d = run_stack("prod", tmp_path)
    unit = d.services["blue"].step.files["hft_system.service"].splitlines()
    for line in ("Restart=on-failure", "RestartSec=10", "LimitMEMLOCK=infinity", "NoNewPrivileges=true",
                 "PrivateTmp=true", "EnvironmentFile=/opt/hft_system/.env", "Wants=postgresql.service",
                 "ExecStart=/opt/hft_system/bin/hft_system --config=/opt/hft_system/config/production.json"):
        assert line in unit, line


def test_moving_a_placement_replaces_its_release_step_deleting_first(tmp_path) -> None:
    mocks, _ = run_stack("prod", tmp_path)
    (green,) = [r for r in mocks.resources if r.name == "app-green-release"]
    assert plain(green.inputs)["triggers"] == ["hft-prod-02"]


def test_the_cutover_runs_on_the_live_colors_host_and_fences_the_others(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    step = d.cutover.step
    assert step.env["HFT_TO_COLOR"] == "blue" and step.env["HFT_TO_API"] == "http://10.0.0.10:8080"
    assert step.env["HFT_OTHERS"] == "green=http://10.0.0.11:8080"
    assert step.env["HFT_WATCH_SECONDS"] == "1800"       # runbook 4.1 step 8: 30 minutes
    (switch,) = [r for r in mocks.resources if r.name == "live-switch"]
    assert plain(switch.inputs)["connection"]["host"] == "10.0.0.10"
    assert "mock-api-token" in plain(switch.inputs)["stdin"]


def test_setting_live_back_is_the_same_switch_the_other_way(tmp_path) -> None:
    values = stack_values("prod")
    values["release"]["live"] = "green"
    mocks, d = run_stack("prod", tmp_path, values)
    assert d.cutover.step.env["HFT_TO_COLOR"] == "green"
    assert d.cutover.step.env["HFT_OTHERS"] == "blue=http://10.0.0.10:8080"
    (switch,) = [r for r in mocks.resources if r.name == "live-switch"]
    assert plain(switch.inputs)["connection"]["host"] == "10.0.0.11"


def test_the_cutover_never_short_circuits(tmp_path) -> None:
    """blue -> green -> blue: the last switch has the text of the first, on the same host, but
    what is live changed in between; an "already applied" replay would skip the promotion."""
    _, d = run_stack("prod", tmp_path)
    assert d.cutover.step.mode == "always"
    assert "_hft_mode=always" in d.cutover.step._text()


def _recorded_graph(monkeypatch, tmp_path, stack: str):
    """Each remote step's name -> the names of the resources it waits for (its depends_on)."""
    from components import remote
    deps: dict[str, list] = {}
    made: dict[int, str] = {}
    original = remote.Step.create

    def create(self, conn, parent, depends_on=(), **kw):
        command = original(self, conn, parent, depends_on=depends_on, **kw)
        made[id(command)] = self.name
        deps[self.name] = list(depends_on)
        return command
    monkeypatch.setattr(remote.Step, "create", create)
    mocks, d = run_stack(stack, tmp_path)
    graph = {name: {made.get(id(r), getattr(r, "_name", "?")) for r in rs} for name, rs in deps.items()}
    # the RT kernel's local wait (not a Step) waits for the reboot step (its depends_on)
    for name in list(graph):
        for n in graph[name]:
            if n.endswith("-rt-kernel-reboot-wait"):
                graph[name] = (graph[name] - {n}) | {n.removesuffix("-wait")}
    return graph, d


@pytest.mark.parametrize("stack", ["lab", "prod"])
def test_nothing_runs_on_any_host_before_every_hosts_preflight(monkeypatch, tmp_path, stack) -> None:
    graph, d = _recorded_graph(monkeypatch, tmp_path, stack)
    preflights = {f"{h}-preflight" for h in d.fleet.servers}
    assert len(preflights) == 2 and preflights <= set(graph)

    def ancestors(name: str, seen: set) -> set:
        for n in graph.get(name, ()):
            if n not in seen:
                seen.add(n)
                ancestors(n, seen)
        return seen
    for p in preflights:
        assert graph[p] == set(), f"{p} waits for something: it must be first"
    others = set(graph) - preflights
    assert len(others) > 20
    for name in sorted(others):
        missing = preflights - ancestors(name, set())
        assert not missing, f"{name} can run before {sorted(missing)}"


def test_each_hosts_preflight_checks_what_its_own_steps_will_install(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    steps = {n: p.preflight_step for n, p in d.fleet.preflights.items()}
    lines = {n: s.files["packages.list"].splitlines() for n, s in steps.items()}
    db_host, other = lines["hft-prod-01"], lines["hft-prod-02"]
    for host in (db_host, other):
        assert "any baseline.packages libboost-all-dev" in host
        assert "debian realtimeKernel.packages.debian linux-image-rt-amd64" in host
        assert "ubuntu realtimeKernel.packages.ubuntu linux-realtime" in host
        assert "any monitoring.nodeExporterPackage prometheus-node-exporter" in host
        assert "any service.buildPackages git" in host and "any baseline.cpuGovernor cpufrequtils" in host
    # the database and monitoring are placed on hft-prod-01 only
    assert "any postgres.timescaledb timescaledb-2-postgresql-%PG%" in db_host
    assert "any monitoring.grafana grafana" in db_host and "any monitoring.packages prometheus" in db_host
    assert not [ln for ln in other if " postgres." in ln or " monitoring.packages " in ln or "grafana" in ln]
    # the TimescaleDB repository postgres.sh will add, per OS family, checked by the db host's preflight
    assert steps["hft-prod-01"].files["repositories.list"].splitlines() == [
        "debian postgres.timescaledbRepository.debian https://packagecloud.io/timescale/timescaledb/debian/",
        "ubuntu postgres.timescaledbRepository.ubuntu https://packagecloud.io/timescale/timescaledb/ubuntu/"]
    assert "repositories.list" not in steps["hft-prod-02"].files
    pg = d.postgres.step.env
    assert pg["HFT_TIMESCALEDB"] == "1" and pg["HFT_TIMESCALEDB_KEY_URL"].endswith("/gpgkey")
    assert pg["HFT_TIMESCALEDB_REPO_UBUNTU"] == "https://packagecloud.io/timescale/timescaledb/ubuntu/"
    assert "shared_preload_libraries = 'timescaledb'" in d.postgres.step.files["postgresql.conf"].splitlines()
    env = {n: s.env for n, s in steps.items()}
    assert env["hft-prod-01"]["HFT_RELEASE_TAGS"] == "release.blue.version=v1.0.0"
    assert env["hft-prod-02"]["HFT_RELEASE_TAGS"] == "release.green.version=v1.0.0"
    assert env["hft-prod-01"]["HFT_REPOSITORY"].startswith("ssh://")
    assert env["hft-prod-01"]["HFT_SUPPORTED_OS"] == "debian:12 ubuntu:22.04"
    assert (env["hft-prod-01"]["HFT_MIN_ROOT_GB"], env["hft-prod-01"]["HFT_MIN_DATA_GB"]) == ("100", "1800")
    assert env["hft-prod-01"]["HFT_LIB_BOOST"] == "libboost-all-dev" and env["hft-prod-01"]["HFT_ENFORCE"] == "1"


def test_lab_preflight_leaves_out_what_containers_skip(tmp_path) -> None:
    mocks, d = run_stack("lab", tmp_path)
    lines = d.fleet.preflights["hft-prod-01"].preflight_step.files["packages.list"]
    assert "realtimeKernel" not in lines and "cpufrequtils" not in lines          # container hosts
    assert "timescaledb" not in lines and "grafana" not in lines                   # off in the lab
    assert "any postgres.packages postgresql" in lines.splitlines()
    assert "repositories.list" not in d.fleet.preflights["hft-prod-01"].preflight_step.files
    assert not [k for k in d.postgres.step.env if k.startswith("HFT_TIMESCALEDB_")]
