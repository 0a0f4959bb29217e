"""Benchmark: hft-deploy's blue-green cutover and rollback against the runbook's manual cutover.

Why: runbook 4.1 promises "Downtime: < 5 seconds (during cutover)" and 5.1 "Rollback Time:
< 10 minutes". This measures, on two lab hosts of its own and the real CLI, over CYCLES
cutovers to green and rollbacks to blue under simulated order flow (the strategy trades live):
- the trading gap of each switch: last order of the old epoch to the first order of the new
  one, from the database (the cutover's own report);
- the rollback time: `pulumi up` of `hft:release.live` back to blue, wall clock;
and, in the same run, the runbook's own sequence as the baseline (graceful shutdown of blue,
"wait for clean shutdown (30 seconds)", then PUT role primary and trading on green), whose gap
is measured the same way. Prints median, p95 and max, and each as a ratio of the runbook's
targets and of the baseline. Bounded: CYCLES (default 20) switches each way, then destroy.

Run from the repository root, as root: ``venv/bin/python bench/cutover_bench.py [CYCLES]``
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import lab_stack  # noqa: E402
from tests.lab_stack import lab, lab_cli  # noqa: E402

BLUE, GREEN = "hft-dr-01", "hft-asia-east-01"      # hosts no test and no `make lab` uses
TARGET_GAP_MS, TARGET_ROLLBACK_S = 5000, 600         # runbook 4.1 and 5.1


def on(host: str, command: str) -> str:
    return lab("ssh", host, command).stdout


def sql(query: str) -> str:
    return on(BLUE, f"cd /tmp && runuser -u postgres -- psql -X -A -t -q -d hft_db <<'SQL'\n{query}\nSQL").strip()


def address(host: str) -> str:
    return json.loads(lab("inventory").stdout)["hosts"][host]["address"]


def api_put(host: str, body: dict) -> None:
    """The runbook's `curl -X PUT .../api/v1/config`, with the token the service reads."""
    on(host, "key=HFT_API_TOKEN; t=$(sed -n \"s/^$key=\\\"\\(.*\\)\\\"$/\\1/p\" /opt/hft_system/.env); "
             "printf 'Authorization: Bearer %s\\n' \"$t\" | curl -sSf -X PUT -H @- "
             f"--data '{json.dumps(body)}' http://{address(host)}:8080/api/v1/config")


def last_epoch() -> int:
    return int(sql("SELECT max(epoch) FROM trading_lease"))


def gap_ms(old: int, new: int) -> float:
    """Last order of epoch ``old`` to the first of ``new``, waiting (bounded) for the first."""
    for _ in range(60):
        value = sql(f"SELECT round(extract(epoch FROM (SELECT min(created_at) FROM orders WHERE epoch = {new}) "
                    f"- (SELECT max(created_at) FROM orders WHERE epoch = {old})) * 1000)")
        if value:
            return float(value)
        time.sleep(0.5)
    raise SystemExit(f"no order of epoch {new} within 30 s")


def summary(name: str, values: list[float], target: float, baseline: float | None, unit: str) -> str:
    values = sorted(values)
    p95 = values[max(0, int(round(0.95 * len(values))) - 1)]
    med = statistics.median(values)
    line = (f"{name}: n={len(values)} median {med:.0f} {unit}, p95 {p95:.0f} {unit}, max {values[-1]:.0f} {unit}; "
            f"median/target {med / target:.4f}, max/target {values[-1] / target:.4f}")
    if baseline:
        line += f"; median/runbook-baseline {med / baseline:.4f}"
    return line


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    lab_stack.LAB_HOSTS.clear()
    lab_stack.LAB_HOSTS.update({"hft-prod-01": BLUE, "hft-prod-02": GREEN})
    releases = str(ROOT / "tools" / "serve-releases.sh")
    lab("up", BLUE, GREEN, timeout=1800)
    subprocess.run([releases, "start"], check=True)
    work = Path(tempfile.mkdtemp(prefix="hft-cutover-bench-"))
    (work / "project").mkdir()
    cli = lab_cli(lab_stack.project_copy(work / "project"), work / "state")
    try:
        cli.init()
        t0 = time.monotonic()
        cli.run("config", "set", "--path", "hft:strategies.minPaperSeconds", "0")
        cli.run("config", "set", "--path", "hft:release.green.version", "v1.1.0")
        cli.run("up", "--yes", "--skip-preview", timeout=3600)
        cli.run("config", "set", "--path", "hft:strategies.deployed.mm_btc_usd.mode", "live")
        cli.run("up", "--yes", "--skip-preview", timeout=3600)
        print(f"deployed blue and green in {time.monotonic() - t0:.0f} s", flush=True)

        gaps, rollbacks = [], []
        for i in range(cycles):
            for color in ("green", "blue"):
                cli.run("config", "set", "--path", "hft:release.live", color)
                t = time.monotonic()
                up = cli.run("up", "--yes", "--skip-preview", timeout=1800)
                took = time.monotonic() - t
                report = cli.outputs()["cutover"]
                if not (report["status"] == "SUCCESS" and report["to"] == color):
                    Path("/tmp/cutover-bench-failed-up.txt").write_text(up.stdout + up.stderr)
                    raise SystemExit(f"cycle {i + 1} to {color}: {report} (the up's output: /tmp/cutover-bench-failed-up.txt)")
                gaps.append(float(report["trading_gap_ms"]) if report["trading_gap_ms"] is not None
                            else gap_ms(report["previous_epoch"], report["epoch"]))
                if color == "blue":
                    rollbacks.append(took)
            print(f"cycle {i + 1}/{cycles}: gaps {gaps[-2]:.0f} / {gaps[-1]:.0f} ms, rollback {rollbacks[-1]:.1f} s",
                  flush=True)

        # The runbook's own cutover (4.1 step 7), blue -> green, as the baseline.
        before = last_epoch()
        on(BLUE, "systemctl stop hft_system")           # ./scripts/graceful_shutdown.sh
        time.sleep(30)                                  # "Wait for clean shutdown (30 seconds)"
        api_put(GREEN, {"role": "primary"})
        api_put(GREEN, {"trading_enabled": True})
        baseline = gap_ms(before, last_epoch())
        on(BLUE, "systemctl start hft_system")
        print(f"runbook baseline: trading gap {baseline:.0f} ms")
        print(summary("trading gap", gaps, TARGET_GAP_MS, baseline, "ms"))
        print(summary("rollback (pulumi up, live back to blue)", rollbacks, TARGET_ROLLBACK_S, None, "s"))
    finally:
        cli.run("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
        lab("destroy", BLUE, GREEN, check=False)


if __name__ == "__main__":
    main()
