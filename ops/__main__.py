"""On-call commands (runbook 5.1), over the Automation API and SSH with pinned host keys.

    python -m ops killswitch -s prod --reason "Critical bug"     # 5.1 step 2 on the live color
    python -m ops rollback   -s prod --reason "Critical bug"     # 5.1 steps 2-6 in one go
    python -m ops reconcile  -s prod                             # 5.1 step 5 alone
    python -m ops backups    -s prod [--prune]                   # 5.2: backups with age and size
    python -m ops restore NAME -s prod                           # 5.2: stop, restore, verify, start

`rollback` switches the kill switch on the live color, records `hft:release.live` (the other
color, which still runs the previous version) and the reason in the stack file, runs
`pulumi up` (the cutover the other way: no build), reconciles the positions in the database
against the fills the exchanges executed, and prints the rollback notice, which is also the
stack's `cutover` output. Exit 0 when all of it succeeded, 1 with the reason otherwise.
`backups` and `restore`: see ops/db.py (restore refuses, before stopping anything, a backup
newer than the deployed code or one the releases cannot run on).
Run it with the environment of `make env` and the stack's passphrase, from the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ops import db, hosts
from pathlib import Path

from ops.stack import PROJECT, OpsStack

KILLSWITCH = r'''
set -euo pipefail
token=$(sed -n 's/^HFT_API_TOKEN="\(.*\)"$/\1/p' {home}/.env)
[ -n "$token" ] || {{ echo "no HFT_API_TOKEN in {home}/.env" >&2; exit 1; }}
printf 'Authorization: Bearer %s\n' "$token" | curl -sS --fail-with-body --max-time 10 -X POST -H @- \
  -H 'Content-Type: application/json' --data {body} {api}/api/v1/killswitch
'''

RECONCILE = r'''
set -euo pipefail
cd /tmp
log={log_dir}/reconciliation_$(date -u +%Y%m%d_%H%M%S).log
mkdir -p {log_dir}
runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d {db} -c "
  WITH executed AS (
    SELECT exchange, symbol, sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) AS quantity
    FROM fills WHERE NOT paper GROUP BY exchange, symbol)
  SELECT json_agg(json_build_object('exchange', coalesce(p.exchange, e.exchange),
                                    'symbol', coalesce(p.symbol, e.symbol),
                                    'database', coalesce(p.quantity, 0), 'exchange_view', coalesce(e.quantity, 0)))
  FROM positions p FULL JOIN executed e USING (exchange, symbol)
  WHERE coalesce(p.quantity, 0) <> coalesce(e.quantity, 0)" | tee "$log"
echo "log: $log" >&2
'''


def say(line: str) -> None:
    print(line, end="" if line.endswith("\n") else "\n", flush=True)


def killswitch(ops: OpsStack, reason: str) -> str:
    cfg = ops.config()
    live = cfg.topology.primary
    host = next(h for h in cfg.hosts if h.name == live.host.name)
    proc = hosts.run(host, KILLSWITCH.format(home=cfg.service.home, body=_q(json.dumps({"reason": reason})),
                                             api=live.api_url))
    if proc.returncode != 0:
        raise SystemExit(f"kill switch on {live.color} ({host.name}) failed: {proc.stderr.strip() or proc.stdout.strip()}")
    say(f"kill switch on {live.color} ({host.name}): {proc.stdout.strip()}")
    return live.color


def reconcile(ops: OpsStack) -> list[dict]:
    """Positions in the database against the fills the exchanges executed; the differences."""
    cfg = ops.config()
    db_host = next(h for h in cfg.hosts if h.name == cfg.topology.db.name)
    proc = hosts.run(db_host, RECONCILE.format(db=cfg.database.name, log_dir=cfg.service.log_dir))
    if proc.returncode != 0:
        raise SystemExit(f"reconciliation on {db_host.name} failed: {proc.stderr.strip()}")
    diffs = json.loads(proc.stdout.strip() or "null") or []
    where = proc.stderr.strip().removeprefix("log: ")
    if diffs:
        for d in diffs:
            say(f"position mismatch {d['exchange']} {d['symbol']}: database {d['database']}, "
                f"exchange {d['exchange_view']}")
    say(f"reconciliation: {len(diffs)} difference(s) ({db_host.name}:{where})")
    return diffs


def rollback(ops: OpsStack, reason: str) -> int:
    t0 = time.monotonic()
    cfg = ops.config()
    colors = [a.color for a in cfg.topology.apps]
    live = cfg.release.live
    others = [c for c in colors if c != live]
    if not others:
        raise SystemExit(f"no color to roll back to: the stack places only {live}")
    target = others[0]
    killswitch(ops, f"rollback: {reason}")
    ops.set("release.live", target)
    ops.set("release.reason", f"rollback from {live}: {reason}")
    say(f"hft:release.live = {target} recorded in the stack file; pulumi up")
    ops.up(say)
    report = ops.outputs().get("cutover", {})
    diffs = reconcile(ops)
    version = ops.outputs().get("colors", {}).get(target, {}).get("version", "?")
    notice = (f"ROLLBACK NOTICE: rolled back to {version} ({target}) due to {reason}; trading gap "
              f"{report.get('trading_gap_ms')} ms, epoch {report.get('epoch')}, {len(diffs)} position "
              f"difference(s), {time.monotonic() - t0:.1f} s")
    say(notice)
    return 1 if diffs or report.get("status") not in ("SUCCESS", "LIVE") else 0


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    for verb in ("killswitch", "rollback", "reconcile", "backups", "restore"):
        v = sub.add_parser(verb)
        if verb == "restore":
            v.add_argument("name", help="a backup file name in hft:database.backupDir (see `ops backups`)")
        if verb == "backups":
            v.add_argument("--prune", action="store_true",
                           help="delete the backups beyond hft:database.backupRetentionCount/Days first")
        v.add_argument("-s", "--stack", required=True)
        v.add_argument("--cwd", type=Path, default=PROJECT, help="the project directory (default: this repository)")
        if verb in ("killswitch", "rollback"):
            v.add_argument("--reason", required=True)
    args = p.parse_args(argv)
    ops = OpsStack.select(args.stack, args.cwd)
    if args.verb == "killswitch":
        killswitch(ops, args.reason)
        return 0
    if args.verb == "reconcile":
        return 1 if reconcile(ops) else 0
    if args.verb == "backups":
        db.backups(ops.config(), args.prune)
        return 0
    if args.verb == "restore":
        db.restore(ops.config(), args.name)
        return 0
    return rollback(ops, args.reason)


if __name__ == "__main__":
    sys.exit(main())
