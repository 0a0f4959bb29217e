"""The resource graph under Pulumi mocks: what each stack would register, without any host."""
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
            outputs["result"] = "mock-password-0123456789abcdef"
        if args.typ == "command:remote:Command":
            outputs["stdout"] = 'HFT_VALIDATION_REPORT={"status": "SUCCESS", "passed": [], "failed": []}'
            outputs["stderr"] = ""
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def run_stack(stack: str, tmp_path) -> Mocks:
    from components.config import parse
    from components.stack import build

    key = tmp_path / "id_ed25519"
    # Mocks never dial: any text stands in for the key file the lab inventory names.
    key.write_text("mock-ssh-key-file-contents\n")
    inventory = {"hosts": {n: {**h, "private_key": str(key)} for n, h in LAB_INVENTORY["hosts"].items()}}
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="hft-deploy", stack=stack, preview=False)
    cfg = parse(stack_values(stack), inventory=lambda: inventory)
    keys = {n: "k" for n in cfg.exchange_secret_names}
    outputs = build(cfg, pulumi.Output.secret(keys), pulumi.Output.secret("mock-key"))

    @pulumi.runtime.test
    def resolved():
        return pulumi.Output.all(outputs["kernel_steps"], outputs["validation"]).apply(lambda x: x)

    result = resolved()
    mocks.kernel_steps, mocks.validation = (result if result else (None, None))
    return mocks


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


def test_lab_graph_skips_kernel_steps_and_pins_host_keys(tmp_path) -> None:
    mocks = run_stack("lab", tmp_path)
    cmds = commands(mocks)
    assert not any("rt-kernel" in name for name in cmds), "no RT kernel command on a container host"
    for name, inputs in cmds.items():
        assert inputs["connection"]["hostKey"] == "ssh-ed25519 AAAA", name
    assert "HFT_APPLY_NETWORK=0" in cmds["hft-prod-01-identity"]["create"]
    baseline = cmds["hft-prod-01-baseline-baseline"]["create"]
    assert "HFT_APPLY_SYSCTL=0" in baseline and "vm.nr_hugepages=4096" in baseline
    assert "hft_user hard memlock unlimited" in baseline


def test_prod_graph_applies_kernel_steps_and_keeps_secrets_off_command_lines(tmp_path) -> None:
    mocks = run_stack("prod", tmp_path)
    cmds = commands(mocks)
    assert "hft-prod-01-rt-kernel-install" in cmds and "hft-prod-01-rt-kernel-verify" in cmds
    assert "HFT_APPLY_SYSCTL=1" in cmds["hft-prod-01-baseline-baseline"]["create"]
    identity = cmds["hft-prod-01-identity"]["create"]
    assert "HFT_APPLY_NETWORK=1" in identity and "- 10.0.0.10/24" in identity and "via: 10.0.0.1" in identity
    service = cmds["hft-service-service"]
    assert "mock-password" not in service["create"] and "mock-password" in service["stdin"]
    unit = service["create"]
    for line in ("Restart=on-failure", "RestartSec=10", "LimitMEMLOCK=infinity", "NoNewPrivileges=true",
                 "PrivateTmp=true", "EnvironmentFile=/opt/hft_system/.env", "Wants=postgresql.service",
                 "ExecStart=/opt/hft_system/bin/hft_system --config=/opt/hft_system/config/production.json"):
        assert line in unit, line
    for name, inputs in cmds.items():
        assert "mock-password" not in inputs["create"], name
        assert "mock-key" not in inputs["create"], name
