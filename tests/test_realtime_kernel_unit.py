"""The RT kernel's install, reboot, wait and verify (runbook 3.2 step 2) without a host: the
resources under Pulumi mocks, and the wait script itself, run as the local command runs it
(`bash -s`, its text on stdin), against loopback ports that are closed, or answer like sshd.

The same path on a real kernel, through `pulumi up`, is tests/test_vm_stack.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

from components.remote import read_script
from tests.test_components_unit import plain, run_stack
from tests.test_config import stack_values

HOST = "hft-prod-01"
PATTERNS = {"HFT_RT_PATTERN_DEBIAN": "-rt", "HFT_RT_PATTERN_UBUNTU": "-realtime"}   # per OS family


def locals_(mocks) -> dict[str, dict]:
    return {r.name: plain(r.inputs) for r in mocks.resources if r.typ == "command:local:Command"}


def test_the_reboot_is_a_resource_of_its_own_named_for_preview(tmp_path) -> None:
    mocks, d = run_stack("prod", tmp_path)
    kernel = d.fleet.kernels[HOST]
    assert set(kernel.steps) == {f"{HOST}-rt-kernel-{s}" for s in ("install", "reboot", "verify")}
    assert kernel.steps[f"{HOST}-rt-kernel-reboot"].script == "realtime_kernel_reboot.sh"
    # hft-prod-01 carries the live color: a reboot there is refused while hft_system runs.
    assert kernel.steps[f"{HOST}-rt-kernel-reboot"].env == {**PATTERNS, "HFT_RT_REBOOT_GUARD": "hft_system"}
    assert d.fleet.kernels["hft-prod-02"].steps["hft-prod-02-rt-kernel-reboot"].env == PATTERNS
    # The install script no longer reboots: only the step named "reboot" does.
    assert "reboot" not in read_script("realtime_kernel.sh").split("set -euo pipefail", 1)[1]
    wait = locals_(mocks)[f"{HOST}-rt-kernel-reboot-wait"]
    assert wait["create"] == "bash -s" and wait["stdin"] == read_script("realtime_kernel_await.sh")
    assert wait["environment"] == {"HFT_HOST_NAME": HOST, "HFT_ADDRESS": "10.0.0.10", "HFT_PORT": "22",
                                   "HFT_WAIT_SECONDS": "600", "HFT_REBOOT": "0", "HFT_RT_KERNEL": ""}
    # No other local command anywhere: the old fixed `sleep 30` is gone.
    assert set(locals_(mocks)) == {f"{h}-rt-kernel-reboot-wait" for h in d.fleet.servers}


def test_the_reboot_reruns_with_the_install_and_only_then(tmp_path) -> None:
    _, before = run_stack("prod", tmp_path)
    values = stack_values("prod")
    values["realtimeKernel"] = {"rebootWaitSeconds": 45}
    mocks, waited = run_stack("prod", tmp_path, values)
    fp = {n: s.fingerprint for n, s in before.fleet.kernels[HOST].steps.items()}
    assert fp == {n: s.fingerprint for n, s in waited.fleet.kernels[HOST].steps.items()}, \
        "a new wait changes no remote step"
    assert locals_(mocks)[f"{HOST}-rt-kernel-reboot-wait"]["environment"]["HFT_WAIT_SECONDS"] == "45"
    values["realtimeKernel"] = {"packages": {"debian": ["linux-image-rt-amd64"]}}
    _, fewer = run_stack("prod", tmp_path, values)
    changed = {n for n, s in fewer.fleet.kernels[HOST].steps.items() if s.fingerprint != fp[n]}
    assert changed == {f"{HOST}-rt-kernel-install", f"{HOST}-rt-kernel-reboot"}


def test_the_reboot_waits_for_the_hosts_other_steps(tmp_path) -> None:
    """Nothing of the same `up` may be running on a host when it goes down."""
    _, d = run_stack("prod", tmp_path)
    kernel = d.fleet.kernels[HOST]
    others = d.fleet.baselines[HOST].after_all
    assert len(others) == 6 and all(any(r is o for r in kernel.reboot_after) for o in others)


# ------------------------------------------------------------------ the wait script, for real

def await_reboot(env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "-s"], input=read_script("realtime_kernel_await.sh"), capture_output=True,
                          text=True, timeout=timeout,
                          env={"PATH": os.environ["PATH"], **env})
    return proc, time.monotonic() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(port: int, wait: int, reboot: str = "1") -> dict[str, str]:
    return {"HFT_HOST_NAME": HOST, "HFT_ADDRESS": "127.0.0.1", "HFT_PORT": str(port),
            "HFT_WAIT_SECONDS": str(wait), "HFT_REBOOT": reboot, "HFT_RT_KERNEL": "6.1.0-56-rt-amd64"}


def test_wait_without_a_reboot_returns_at_once() -> None:
    proc, took = await_reboot(base_env(free_port(), 600, reboot="0"))
    assert proc.returncode == 0 and proc.stdout == f"ok: {HOST} was not rebooted: nothing to wait for\n"
    assert took < 5


def test_a_host_that_does_not_come_back_fails_within_the_wait_saying_what_to_check() -> None:
    proc, took = await_reboot(base_env(free_port(), 4))
    assert proc.returncode == 1
    msg = proc.stderr
    assert msg.startswith(f"error: {HOST} did not come back from the RT-kernel reboot after 4 s"), msg
    for hint in ("console", "GRUB default entry", "6.1.0-56-rt-amd64", "hft:realtimeKernel.packages",
                 "hft:realtimeKernel.rebootWaitSeconds"):
        assert hint in msg, hint
    assert "Traceback" not in proc.stdout + msg
    assert 4 <= took < 4 + 15, took


class FakeSshd:
    """A loopback listener that sends an SSH banner to each connection, like sshd before login."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    def close(self) -> None:
        self.sock.close()


def test_a_host_that_goes_down_and_comes_back_is_waited_for() -> None:
    port = free_port()
    sshd = FakeSshd(port)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(zip(("proc", "took"), await_reboot(base_env(port, 60)))))
    t.start()
    time.sleep(3)        # answering: the host has not gone down yet
    sshd.close()         # the reboot
    time.sleep(4)
    sshd = FakeSshd(port)  # back
    try:
        t.join(60)
    finally:
        sshd.close()
    proc = result["proc"]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"ok: {HOST} went down for the RT-kernel reboot after "), lines
    assert lines[1].startswith(f"ok: {HOST} answers SSH again ") and lines[1].endswith(
        "after the reboot into 6.1.0-56-rt-amd64"), lines
    assert 7 <= result["took"] < 20, result["took"]


def test_allow_primary_restart_lifts_the_reboot_guard(tmp_path) -> None:
    values = stack_values("prod")
    values["service"] = {**values.get("service", {}), "allowPrimaryRestart": True}
    _, d = run_stack("prod", tmp_path, values)
    assert d.fleet.kernels[HOST].steps[f"{HOST}-rt-kernel-reboot"].env == PATTERNS
