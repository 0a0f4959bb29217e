#!/usr/bin/env bash
# Serve the reference workload's releases to the lab hosts, as the company's git server
# serves hft_system to real ones (runbook 3.5 step 2): a bare repository with the release
# tags, published from workload/, behind `git daemon` on the lab bridge address only.
#
#   tools/serve-releases.sh start   publish (idempotent) and serve on 198.18.0.1:9418
#   tools/serve-releases.sh stop    stop the daemon this script started (by its PID file)
#   tools/serve-releases.sh url     print the URL lab stacks clone from
#   tools/serve-releases.sh running exit 0 when the daemon is serving
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${HFT_CACHE:-$HOME/.cache/hft-deploy}
base="$cache/releases"
pidfile="$base/git-daemon.pid"
listen=198.18.0.1
port=9418

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
  start)
    mkdir -p "$base"
    "$here/workload/publish-repo.sh" "$base/hft_system.git"
    if running; then
      echo "releases: git daemon already serving git://$listen/hft_system.git (pid $(cat "$pidfile"))"
      exit 0
    fi
    ip -4 addr show dev hftlab0 2>/dev/null | grep -q "inet $listen/" || {
      echo "releases: the lab bridge hftlab0 with $listen is not up; run \`python3 -m lab up\` first" >&2
      exit 1
    }
    git daemon --reuseaddr --detach --pid-file="$pidfile" --base-path="$base" --export-all \
      --listen="$listen" --port="$port" "$base"
    for _ in $(seq 50); do running && break; sleep 0.1; done
    running || { echo "releases: git daemon did not start" >&2; exit 1; }
    echo "releases: serving git://$listen/hft_system.git (pid $(cat "$pidfile"))"
    ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; echo "releases: stopped"; fi
    rm -f "$pidfile"
    ;;
  url) echo "git://$listen/hft_system.git" ;;
  running) running ;;
  *) echo "usage: $0 start|stop|url|running" >&2; exit 2 ;;
esac
