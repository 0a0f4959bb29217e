#!/usr/bin/env bash
# Runbook 3.5, 3.6 and 7.1: application user, directories, release checkout + CMake build +
# install, config, .env, systemd unit, (re)start, health.
# The new config is validated by the NEW binary (--validate-config, next to the live config so
# relative paths resolve the same) before anything the running service uses is touched; on
# failure the running service, its binary, config, .env and unit stay as they were.
# Restarts only when something the service runs with changed (binary, config, .env, unit).
#
# env:
#   HFT_USER            application user (hft_user)
#   HFT_HOME            /opt/hft_system
#   HFT_LOG_DIR         /var/log/hft_system
#   HFT_LOG_DIR_MODE    755
#   HFT_REPO            git URL of the hft_system repository
#   HFT_VERSION         git tag to build, e.g. v1.0.0
#   HFT_BUILD_TYPE      CMake build type (Release)
#   HFT_BUILD_PACKAGES  build dependencies (space-separated Debian packages)
#   HFT_UNIT_NAME       systemd unit name without .service (hft_system)
#   HFT_HEALTH_URL      http://127.0.0.1:8080/api/v1/health
#   HFT_HEALTH_TIMEOUT  seconds to wait for health (60)
# payload: lib.sh, production.json (-> $HFT_HOME/config/production.json, 640 $HFT_USER),
#          hft_system.service (-> /etc/systemd/system/$HFT_UNIT_NAME.service, 644 root),
#          optional strategies/ (files -> $HFT_HOME/config/strategies/)
# stdin: the full content of the .env file (-> $HFT_HOME/.env, 600 $HFT_USER; rewritten only
#        when the content differs; never printed)
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_USER HFT_HOME HFT_LOG_DIR HFT_REPO HFT_VERSION HFT_UNIT_NAME HFT_HEALTH_URL
require_payload production.json hft_system.service
user=$HFT_USER home=$HFT_HOME unit=$HFT_UNIT_NAME tag=$HFT_VERSION
log_mode=${HFT_LOG_DIR_MODE:-755}
build_type=${HFT_BUILD_TYPE:-Release}
health_timeout=${HFT_HEALTH_TIMEOUT:-60}
[[ "$tag" =~ ^[A-Za-z0-9._-]+$ ]] || die "invalid HFT_VERSION: $tag"

# .env from stdin into a private staging file (the payload dir is 700)
umask 077
env_staged=$HFT_PAYLOAD/.env.staged
cat >"$env_staged"
[ -s "$env_staged" ] || die "expected the .env content on stdin, got nothing"
umask 022

# shellcheck disable=SC2086
install_packages ${HFT_BUILD_PACKAGES:-} git curl

# 3.5 step 1: user
if id -u "$user" >/dev/null 2>&1; then
  ok "user $user"
else
  useradd -r -s /bin/bash -d "$home" -m "$user" 2>/dev/null || die "useradd $user failed"
  changed "user $user created (home $home)"
fi
group=$(id -gn "$user")

# directories (3.5 step 5: log directory)
ensure_dir "$home" 755 "$user:$group"
for d in bin config config/strategies releases; do ensure_dir "$home/$d" 755 "$user:$group"; done
ensure_dir "$HFT_LOG_DIR" "$log_mode" "$user:$group"

as_user() { runuser -u "$user" -- "$@"; }

# 3.5 steps 2-4: source, build, install of the release (skipped when already built)
rel=$home/releases/$tag
newbin=$rel/bin/hft_system
src=$home/src
if [ -x "$newbin" ]; then
  ok "release $tag built ($newbin)"
else
  if [ -d "$src/.git" ]; then
    [ "$(as_user git -C "$src" remote get-url origin)" = "$HFT_REPO" ] \
      || as_user git -C "$src" remote set-url origin "$HFT_REPO"
    as_user git -C "$src" fetch --quiet --tags --force origin 2>"$HFT_PAYLOAD/git.err" \
      || die "git fetch from $HFT_REPO failed: $(tail -n 3 "$HFT_PAYLOAD/git.err" | tr '\n' ' ')"
    ok "fetched $HFT_REPO"
  else
    rm -rf "$src"
    as_user git clone --quiet --no-checkout "$HFT_REPO" "$src" 2>"$HFT_PAYLOAD/git.err" \
      || die "git clone $HFT_REPO failed: $(tail -n 3 "$HFT_PAYLOAD/git.err" | tr '\n' ' ')"
    changed "cloned $HFT_REPO to $src"
  fi
  as_user git -C "$src" rev-parse -q --verify "refs/tags/$tag^{commit}" >/dev/null \
    || die "tag $tag not found in $HFT_REPO"
  as_user mkdir -p "$rel/source" "$rel/build"
  find "$rel/source" -mindepth 1 -delete
  as_user sh -c 'git -C "$1" archive --format=tar "$2" | tar -x -C "$3"' sh "$src" "$tag" "$rel/source"
  blog=$rel/build.log
  start=$SECONDS
  if ! as_user sh -c 'cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE="$3" -DCMAKE_INSTALL_PREFIX="$4" \
        && cmake --build "$2" -- -j"$(nproc)" && cmake --install "$2"' \
        sh "$rel/source" "$rel/build" "$build_type" "$rel" >"$blog" 2>&1; then
    tail -n 40 "$blog" >&2
    die "build of $tag failed (log: $blog)"
  fi
  [ -x "$newbin" ] || die "build of $tag did not produce $newbin"
  changed "built $tag ($build_type) in $((SECONDS - start)) s, installed to $rel"
fi

# 7.1 step 2: validate the new config with the new binary before touching the service
cfg=$home/config/production.json
staged=$home/config/.production.json.new
install -m 640 -o "$user" -g "$group" "$HFT_PAYLOAD/production.json" "$staged"
if ! vout=$(as_user "$newbin" --validate-config --config="$staged" 2>&1); then
  rm -f "$staged"
  msg=$(printf '%s' "$vout" | tail -n 3 | tr '\n' ' ')
  msg=${msg//$staged/$cfg}
  die "config validation failed: $msg"
fi
ok "config valid for $tag: $(tail -n 1 <<<"$vout" | sed "s#$staged#$cfg#")"

restart_why=()
# binary (runbook 1.3: $HFT_HOME/bin/hft_system), a symlink to the release
if [ "$(readlink "$home/bin/hft_system" 2>/dev/null || true)" = "$newbin" ]; then
  ok "$home/bin/hft_system -> $newbin"
else
  ln -sfn "$newbin" "$home/bin/hft_system.new"
  mv -Tf "$home/bin/hft_system.new" "$home/bin/hft_system"
  chown -h "$user:$group" "$home/bin/hft_system"
  changed "$home/bin/hft_system -> $newbin"
  restart_why+=(binary)
fi
if [ -f "$cfg" ] && cmp -s "$staged" "$cfg" && [ "$(stat -c '%a %U' "$cfg")" = "640 $user" ]; then
  rm -f "$staged"
  ok "$cfg"
else
  mv -f "$staged" "$cfg"
  changed "$cfg"
  restart_why+=(config)
fi
if [ -d "$HFT_PAYLOAD/strategies" ]; then
  for f in "$HFT_PAYLOAD"/strategies/*; do
    [ -f "$f" ] || continue
    install_file "$f" "$home/config/strategies/$(basename "$f")" 640 "$user:$group"
    if [ "$FILE_CHANGED" = 1 ]; then restart_why+=(strategies); fi
  done
fi
install_file "$env_staged" "$home/.env" 600 "$user:$group"
if [ "$FILE_CHANGED" = 1 ]; then restart_why+=(.env); fi
rm -f "$env_staged"
unit_file=/etc/systemd/system/$unit.service
install_file "$HFT_PAYLOAD/hft_system.service" "$unit_file" 644 root:root
if [ "$FILE_CHANGED" = 1 ]; then
  systemctl daemon-reload
  changed "systemd daemon-reload"
  restart_why+=(unit)
fi
if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
  ok "$unit enabled"
else
  systemctl enable --quiet "$unit" || die "systemctl enable $unit failed"
  changed "$unit enabled"
fi

if ! systemctl is-active --quiet "$unit"; then
  systemctl restart "$unit" || true
  changed "$unit started"
elif [ ${#restart_why[@]} -gt 0 ]; then
  systemctl restart "$unit" || true
  changed "$unit restarted (${restart_why[*]} changed)"
else
  ok "$unit running, unchanged"
fi

if wait_http "$HFT_HEALTH_URL" "$health_timeout" healthy; then
  ok "$unit healthy ($HFT_HEALTH_URL)"
else
  echo "--- last 30 journal lines of $unit ---" >&2
  journalctl -u "$unit" -n 30 --no-pager >&2 || true
  die "$unit not healthy at $HFT_HEALTH_URL after $health_timeout s"
fi

if [ "$HFT_CHANGES" -eq 0 ]; then ok "service: no changes"; else echo "changed: service: $HFT_CHANGES change(s)"; fi
