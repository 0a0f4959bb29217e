"""Every kernel-level step of runbook 3.2 through `pulumi up` on a host with a kernel of its own.

A scratch lab stack (a private project copy, real Pulumi CLI, file backend in a temp dir) with
two hosts in a lab home of the test's own:
- hft-dr-01, a container, carries every placement (app:blue, db, monitoring): the topology
  needs them, and building hft_system under TCG on the VM's one vCPU would take most of the
  VM tier's time for nothing kernel-level;
- hft-rt-01, the QEMU VM (kind vm), carries no placement: it gets the whole per-host layer
  (preflight, identity, baseline, RT kernel, node exporter), each kernel step for real.

First `up`: limits (a login of hft_user: ulimits, SCHED_FIFO 99, mlock), every sysctl value
read back from /proc/sys, huge pages allocated, a service disabled and stopped, the governor
"skipped: no cpufreq on this host", the RT kernel installed, rebooted into by `pulumi up`
(`hft-rt-01-rt-kernel-reboot`, listed by the preview), waited for and verified. Then a second
`up` that changes nothing and opens no SSH session on either host; a sysctl edit that runs
only the sysctl steps and what validates them, and no reboot; the runbook's own sysctl file
refused by the real kernel (script level); a host that does not come back from the reboot
(stopped) failing `up` within the configured wait, naming it; `destroy`.

The VM's 2 GiB cannot hold the runbook's 4096 huge pages (8 GiB): the stack asks for 256.

    venv/bin/python -m pytest tests/test_vm_stack.py
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from components.remote import script_command
from tests.lab_stack import RecordingPulumi, leaked, preview_ops, project_copy
from tests.pulumi_cli import REPO
from tests.runbook_values import RUNBOOK_SYSCTL
from tests.release_repo import served_release_repository
from tests.vm_lab import VM, Lab, apt_cache, lab_home

CT = "hft-dr-01"
HOSTS = (CT, VM)
HUGEPAGES = 256
DUMMY = "hft-lab-dummy"   # a unit the stack disables on the VM (none of the runbook's is installed there)
WAIT_UNIT = "command:local:Command::" + VM + "-rt-kernel-reboot-wait"
pytestmark = pytest.mark.timeout(3600)
TIMES: dict[str, object] = {}


class LabPulumi(RecordingPulumi):
    """The Pulumi CLI, with the program reading this test's lab home's inventory."""
    lab_env: dict[str, str]

    def env(self) -> dict[str, str]:
        return {**super().env(), "HFT_LAB_HOME": self.lab_env["HFT_LAB_HOME"],
                "HFT_LAB_IMAGE_CACHE": self.lab_env["HFT_LAB_IMAGE_CACHE"]}


def stack_file(project: Path, repo_url: str) -> None:
    path = project / "Pulumi.lab.yaml"
    doc = yaml.safe_load(path.read_text())
    cfg = doc["config"]
    cfg["hft:hosts"] = {CT: {}, VM: {}}
    cfg["hft:placements"] = {"app:blue": CT, "db": CT, "monitoring": CT}
    cfg["hft:release"] = {"live": "blue", "blue": {"version": "v1.0.0"}}
    cfg["hft:strategies"]["deployed"] = {}
    cfg["hft:service"]["repository"] = repo_url
    cfg["hft:baseline"] = {
        "aptUpgrade": {"enabled": False},
        # Build tools are the app host's (the release step installs them there): none on the VM,
        # where dpkg under TCG would add minutes and nothing kernel-level.
        "packages": [],
        "sysctl": {"vm.nr_hugepages": str(HUGEPAGES)},
        "disabledServices": ["bluetooth", "cups", "snapd", "unattended-upgrades", DUMMY],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    t_module = time.monotonic()
    with lab_home("hft-vm-stack-", HOSTS, apt_cache()) as lab, ExitStack() as later:
        t0 = time.monotonic()
        up = lab.run("up", *HOSTS)
        TIMES["lab up (both hosts)"] = round(time.monotonic() - t0, 1)
        # served only now: its daemon binds to the bridge's address, which `lab up` creates (on a
        # fresh machine this process may start before any other has brought the bridge up)
        repo_url = later.enter_context(served_release_repository("hft-vm-repo-"))
        TIMES["boot to SSH"] = lab.boot_times(up)
        TIMES["accel"] = lab.inventory()["hosts"][VM]["accel"]
        # A unit for the stack to disable: enabled and running before the first up.
        lab.out(f"printf '[Unit]\\nDescription=lab dummy\\n[Service]\\nExecStart=/bin/sleep infinity\\n"
                f"[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/{DUMMY}.service"
                f" && systemctl daemon-reload && systemctl enable --now {DUMMY}")
        project = project_copy(tmp_path_factory.mktemp("project"))
        stack_file(project, repo_url)
        cli = LabPulumi(project, "lab", tmp_path_factory.mktemp("state"),
                        passphrase=(REPO / "tools" / "lab-passphrase.txt").read_text().strip())
        cli.transcript, cli.lab_env = [], lab.env
        cli.init()
        try:
            yield cli, lab
        finally:
            t0 = time.monotonic()
            cli.run("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
            TIMES["destroy (fixture)"] = round(time.monotonic() - t0, 1)
    TIMES["module"] = round(time.monotonic() - t_module, 1)
    print("\nvm stack times (s):", json.dumps(TIMES))


def sysctl_want(cli: RecordingPulumi) -> dict[str, str]:
    """The stack's sysctl values: the runbook defaults under the stack's own."""
    from components.config import RUNBOOK_DEFAULTS
    want = dict(yaml.safe_load(RUNBOOK_DEFAULTS.read_text())["baseline"]["sysctl"])
    stack = yaml.safe_load((cli.project_dir / "Pulumi.lab.yaml").read_text())["config"]["hft:baseline"]
    want.update(stack["sysctl"])
    return {k: " ".join(str(v).split()) for k, v in want.items()}


def read_back(lab: Lab, keys: list[str]) -> dict[str, str]:
    """Each key's value from /proc/sys itself (not from `sysctl`), whitespace normalised."""
    cmd = "; ".join(f"echo \"$(cat /proc/sys/{k.replace('.', '/')})\"" for k in keys)
    return {k: " ".join(v.split()) for k, v in zip(keys, lab.out(cmd).splitlines())}


def wait_stdout(cli: RecordingPulumi) -> str:
    for r in cli.export()["deployment"]["resources"]:
        if r["urn"].endswith("::" + VM + "-rt-kernel-reboot-wait"):
            return r.get("outputs", {}).get("stdout", "")
    raise AssertionError("no reboot-wait resource in state")


def test_preview_names_the_host_it_will_reboot(stack) -> None:
    cli, _ = stack
    ops = preview_ops(cli)
    reboots = {name: op for name, op in ops.items() if "reboot" in name}
    assert reboots == {f"{VM}-rt-kernel-reboot": "create", WAIT_UNIT: "create"}, reboots
    assert not any(name.startswith(f"{CT}-rt-kernel") for name in ops), "no RT kernel step on a container"
    text = cli.run("preview").stdout
    assert re.search(rf"^\s*\+ .*\b{VM}-rt-kernel-reboot\s+create\b", text, re.M), text


def test_first_up_applies_every_kernel_step_and_reboots_into_the_rt_kernel(stack) -> None:
    cli, lab = stack
    before = {"release": lab.out("uname -r"), "boot_id": lab.out("cat /proc/sys/kernel/random/boot_id"),
              "qemu": lab.qemu_pid()}
    assert "-rt" not in before["release"]
    t0 = time.monotonic()
    up = cli.run("up", "--yes", "--skip-preview", timeout=3600)
    TIMES["first up"] = round(time.monotonic() - t0, 1)
    assert "Traceback" not in up.stdout + up.stderr
    m = re.search(r"answers SSH again (\d+) s after the reboot into (\S+)", wait_stdout(cli))
    assert m, wait_stdout(cli)
    TIMES["RT reboot, down to SSH again (through up)"] = int(m.group(1))
    release = lab.out("uname -r")
    assert release == m.group(2) and release.endswith("-rt-amd64"), (release, m.group(2))
    assert lab.out("cat /sys/kernel/realtime") == "1" and "PREEMPT_RT" in lab.out("uname -v")
    assert lab.out("cat /proc/sys/kernel/random/boot_id") != before["boot_id"], "did not reboot"
    assert lab.qemu_pid() == before["qemu"], "the guest rebooted inside the same QEMU process"
    outputs = cli.outputs()
    steps = outputs["kernel_steps"]
    assert steps[VM] == {"sysctl_apply": "applied", "hugepages": str(HUGEPAGES),
                         "cpu_governor": "skipped: no cpufreq on this host",
                         "realtime_kernel": f"ok: kernel {release} matches -rt, /sys/kernel/realtime = 1 "
                                            "(PREEMPT_RT)"}, steps[VM]
    assert steps[CT]["realtime_kernel"] == "skipped: container host"
    assert steps[CT]["sysctl_apply"] == "skipped: container host"
    assert outputs["validation"]["blue"]["status"] == "SUCCESS", outputs["validation"]


def test_sysctl_and_hugepages_in_effect_after_the_reboot(stack) -> None:
    """Applied before the reboot (it waits for the host's other steps), in effect after it."""
    cli, lab = stack
    want = sysctl_want(cli)
    assert "net.ipv4.tcp_nodelay" not in want
    assert read_back(lab, list(want)) == want
    assert lab.out("awk '/^HugePages_Total:/ {print $2}' /proc/meminfo") == str(HUGEPAGES)


def test_limits_as_a_login_of_the_service_user_sees_them(stack) -> None:
    _, lab = stack
    lab.out("id hft_user >/dev/null 2>&1 || useradd -m -s /bin/bash hft_user")
    got = lab.out("su - hft_user -c 'ulimit -Sn; ulimit -Hn; ulimit -Sl; ulimit -Hl; ulimit -Sr; ulimit -Hr'")
    assert got.split() == ["65536", "65536", "unlimited", "unlimited", "99", "99"], got
    # What they are for: a real-time FIFO thread and a large mlock, unprivileged.
    assert lab.out("su - hft_user -c 'chrt -f 99 sh -c \"chrt -p \\$\\$\"'").endswith(
        "current scheduling priority: 99"), "SCHED_FIFO 99 refused to hft_user"
    mlock = ("import ctypes, mmap; m = mmap.mmap(-1, 256 << 20); buf = (ctypes.c_char * len(m)).from_buffer(m); "
             "print(ctypes.CDLL(None, use_errno=True).mlock(buf, len(m)))")
    assert lab.out(f"su - hft_user -c \"python3 -c '{mlock}'\"") == "0", "hft_user cannot mlock 256 MiB"


def test_services_disabled_and_the_governor(stack) -> None:
    _, lab = stack
    assert lab.ssh(f"systemctl is-enabled {DUMMY}; systemctl is-active {DUMMY}").stdout.split() == \
        ["disabled", "inactive"]
    assert lab.out("cat /etc/default/cpufrequtils") == 'GOVERNOR="performance"'
    assert lab.out("test -e /sys/devices/system/cpu/cpu0/cpufreq || echo none") == "none"


def test_second_up_changes_nothing_and_opens_no_ssh_session(stack) -> None:
    cli, lab = stack
    before = {h: lab.logins(h) for h in HOSTS}
    t0 = time.monotonic()
    cli.run("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=1800)
    TIMES["second up"] = round(time.monotonic() - t0, 1)
    assert {h: lab.logins(h) for h in HOSTS} == {h: n + 1 for h, n in before.items()}, \
        "an SSH session was opened on a lab host"


def test_a_sysctl_edit_reapplies_only_sysctl_and_does_not_reboot(stack) -> None:
    cli, lab = stack
    boot_id = lab.out("cat /proc/sys/kernel/random/boot_id")
    cli.run("config", "set", "--path", 'hft:baseline.sysctl["vm.swappiness"]', "10")
    changed = {name: op for name, op in preview_ops(cli).items() if op not in ("same", "read")}
    assert set(changed) == {f"{CT}-sysctl", f"{VM}-sysctl", "app-blue-validate"}, changed
    assert set(changed.values()) == {"update"}, changed
    t0 = time.monotonic()
    up = cli.run("up", "--yes", "--skip-preview", timeout=1800)
    TIMES["sysctl edit up"] = round(time.monotonic() - t0, 1)
    assert "rebooting" not in up.stdout
    assert read_back(lab, ["vm.swappiness"]) == {"vm.swappiness": "10"}
    assert "vm.swappiness=10" in lab.out("cat /etc/sysctl.d/90-hft.conf")
    assert lab.out("cat /proc/sys/kernel/random/boot_id") == boot_id
    assert cli.outputs()["kernel_steps"][VM]["sysctl_apply"] == "applied"


def test_the_runbooks_sysctl_file_is_refused_by_the_kernel(stack) -> None:
    """Script level, on the same VM: the runbook's block as written fails on net.ipv4.tcp_nodelay
    (not a Linux sysctl), and sysctl.sh names it and the host and applies nothing."""
    _, lab = stack
    assert lab.ssh("test -e /proc/sys/net/ipv4/tcp_nodelay").returncode == 1
    runbook = RUNBOOK_SYSCTL.replace("vm.nr_hugepages=4096", f"vm.nr_hugepages={HUGEPAGES}")
    direct = lab.ssh("cat > /tmp/runbook-sysctl.conf && sysctl -p /tmp/runbook-sysctl.conf", stdin=runbook)
    assert direct.returncode != 0
    assert "cannot stat /proc/sys/net/ipv4/tcp_nodelay" in direct.stderr, direct.stderr
    lab.out("sysctl -qw vm.swappiness=60; rm /tmp/runbook-sysctl.conf")
    text = script_command("sysctl.sh", {"HFT_APPLY_SYSCTL": "1"}, {"sysctl.conf": runbook}, step="lab-runbook-sysctl")
    res = lab.ssh(text, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert (f"sysctl keys this kernel does not have on {VM}: net.ipv4.tcp_nodelay (nothing applied"
            in res.stderr), res.stderr
    assert read_back(lab, ["vm.swappiness"]) == {"vm.swappiness": "60"}


def test_a_reboot_is_refused_while_the_guarded_service_runs(stack) -> None:
    """Script level, on the same VM: the reboot step on the trading primary's host (its service
    given as the guard) fails instead of rebooting while that unit is active."""
    _, lab = stack
    boot_id = lab.out("cat /proc/sys/kernel/random/boot_id")
    generic = lab.out("ls /boot | sed -n 's/^vmlinuz-\\(.*-amd64\\)$/\\1/p' | grep -v -- -rt-")
    env = {"HFT_RT_PATTERN": "^" + generic.replace(".", "\\.") + "$", "HFT_RT_REBOOT_GUARD": "ssh"}
    res = lab.ssh(script_command("realtime_kernel_reboot.sh", env, step="lab-guarded-reboot"), timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"not rebooting into {generic}" in res.stderr and "carries the trading primary" in res.stderr, res.stderr
    time.sleep(10)  # a reboot would have started 5 s after the step
    assert lab.out("cat /proc/sys/kernel/random/boot_id") == boot_id


def test_a_host_that_does_not_come_back_fails_the_up_naming_it(stack) -> None:
    """The wait, re-run (`--replace`) against the VM stopped: the update fails within the
    configured wait with the host's name and what to check, and no Python traceback."""
    cli, lab = stack
    path = cli.project_dir / "Pulumi.lab.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"]["hft:realtimeKernel"] = {"rebootWaitSeconds": 30}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    lab.run("stop", VM)
    urn = next(r["urn"] for r in cli.export()["deployment"]["resources"]
               if r["urn"].endswith("::" + VM + "-rt-kernel-reboot-wait"))
    t0 = time.monotonic()
    proc = cli.run("up", "--yes", "--skip-preview", "--replace", urn, check=False, timeout=600)
    took = time.monotonic() - t0
    TIMES["up against a host that does not come back (wait 30 s)"] = round(took, 1)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"error: {VM} did not come back from the RT-kernel reboot after 30 s" in out, out[-3000:]
    for hint in ("console", "GRUB default entry", "hft:realtimeKernel.packages",
                 "hft:realtimeKernel.rebootWaitSeconds"):
        assert hint in out, hint
    assert "Traceback" not in out, out[-3000:]
    assert took < 30 + 120, took


def test_destroy_and_no_secret_in_state(stack) -> None:
    cli, lab = stack
    dotenv = lab.out("cat /opt/hft_system/.env", CT)
    secrets = {k: v.strip('"') for k, v in (line.split("=", 1) for line in dotenv.splitlines() if "=" in line)}
    assert leaked(json.dumps(cli.export()), secrets) == []
    t0 = time.monotonic()
    cli.run("destroy", "--yes", "--skip-preview", timeout=1800)
    TIMES["destroy"] = round(time.monotonic() - t0, 1)
    assert lab.out("test -e /opt/hft_system/.env || echo gone", CT) == "gone"
    assert [r for r in cli.export()["deployment"].get("resources") or []
            if r["type"] not in ("pulumi:pulumi:Stack", "pulumi:providers:command", "pulumi:providers:random")] == []
