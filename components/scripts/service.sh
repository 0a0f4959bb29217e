#!/usr/bin/env bash
# Runbook 3.5, 3.6 and 7.1: application user, directories, release build + install, config,
# .env, systemd unit, (re)start, health.
#
# Least privilege (DESIGN.md section 8): root never executes, sources or follows anything the
# service user can write. Layout:
#   $HFT_HOME, bin/, releases/, scripts/   root:root 755 (bin/hft_system: a root-owned symlink
#                                          to releases/<tag>/bin/hft_system)
#   releases/<tag>/                        root:root, read-only to the service; complete only
#                                          with .hft-release-complete (written last, then the
#                                          dir is renamed into place); anything else is
#                                          removed and rebuilt
#   config/, config/strategies/            root:<service group> 750, files 640
#   .env                                   root:root 600 (systemd reads EnvironmentFile as
#                                          root; the service needs no access to the file)
#   $HFT_LOG_DIR                           the service user's: the only path it can write
# The release is built by a separate unprivileged user in a fresh scratch dir of its own;
# root installs the result from a tar stream that user produces (root never walks the
# build tree), refusing anything but regular files and directories. The service's binary
# is only ever run as the service user (--validate-config included).
# A host in the old layout (everything owned by the service user) is converted: planted
# symlinks are replaced, not followed; every path under $HFT_HOME is made root's; releases
# built by the service user are rebuilt.
# The new config is validated by the NEW binary (--validate-config, next to the live config so
# relative paths resolve the same) before anything the running service uses is touched; on
# failure the running service, its binary, config, .env and unit stay as they were.
# Restarts only when something the service runs with changed (binary, .env, unit, or a config
# key the workload applies only at start: `hft_system --restart-keys`); any other config change
# is hot-reloaded (runbook 7.1 step 3). A change of role or trading_enabled alone is written to
# the file and applied by the cutover through the API, never by a restart. A primary that holds
# the trading lease is not restarted unless HFT_ALLOW_PRIMARY_RESTART=1: cut over first.
# A release that does not become healthy is rolled back to the previous one (binary, config,
# .env, unit), which is started again, and the step fails saying so (DESIGN section 8).
# A release whose tag now names another commit than the one it was built from is rebuilt.
# Last line: HFT_SERVICE_REPORT=<JSON>, what the running service reports (version, role, pid).
#
# env:
#   HFT_USER            application user, e.g. hft_user (required)
#   HFT_HOME            e.g. /opt/hft_system (required)
#   HFT_LOG_DIR         e.g. /var/log/hft_system, outside HFT_HOME (required)
#   HFT_LOG_DIR_MODE    default 755
#   HFT_REPO            git URL of the hft_system repository (required)
#   HFT_VERSION         git tag to build, e.g. v1.0.0 (required)
#   HFT_BUILD_TYPE      CMake build type, default Release
#   HFT_BUILD_PACKAGES  build dependencies (space-separated Debian packages)
#   HFT_BUILD_USER      unprivileged user that builds releases, default hft_build (never HFT_USER)
#   HFT_BUILD_DIR       its workspace (git cache, scratch builds), default /var/lib/hft-build
#   HFT_UNIT_NAME       systemd unit name without .service, e.g. hft_system (required)
#   HFT_HEALTH_URL      e.g. http://127.0.0.1:8080/api/v1/health (required)
#   HFT_HEALTH_TIMEOUT  seconds to wait for health, default 60
#   HFT_ALLOW_PRIMARY_RESTART  1: a primary holding the lease may be restarted (a trading gap); default 0
# payload: lib.sh, production.json (-> $HFT_HOME/config/production.json),
#          hft_system.service (-> /etc/systemd/system/$HFT_UNIT_NAME.service, 644 root),
#          optional strategies/ (files -> $HFT_HOME/config/strategies/)
# stdin: the full content of the .env file (-> $HFT_HOME/.env; rewritten only when the
#        content differs; never printed)
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_USER HFT_HOME HFT_LOG_DIR HFT_REPO HFT_VERSION HFT_UNIT_NAME HFT_HEALTH_URL
require_payload production.json hft_system.service
user=$HFT_USER home=${HFT_HOME%/} unit=$HFT_UNIT_NAME tag=$HFT_VERSION
log_dir=${HFT_LOG_DIR%/}
log_mode=${HFT_LOG_DIR_MODE:-755}
build_type=${HFT_BUILD_TYPE:-Release}
health_timeout=${HFT_HEALTH_TIMEOUT:-60}
buser=${HFT_BUILD_USER:-hft_build}
bdir=${HFT_BUILD_DIR:-/var/lib/hft-build}
bdir=${bdir%/}
[[ "$tag" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "invalid HFT_VERSION: $tag"
[ "$buser" != "$user" ] || die "HFT_BUILD_USER must differ from HFT_USER: the service must not be able to change what the next release is built from"
case "$log_dir/" in "$home"/*) die "HFT_LOG_DIR ($log_dir) must be outside HFT_HOME ($home), which is root-owned" ;; esac
case "$bdir/" in "$home"/*) die "HFT_BUILD_DIR ($bdir) must be outside HFT_HOME ($home)" ;; esac
MARK=.hft-release-complete

# .env from stdin into a private staging file (the payload dir is 700)
umask 077
env_staged=$HFT_PAYLOAD/.env.staged
cat >"$env_staged"
[ -s "$env_staged" ] || die "expected the .env content on stdin, got nothing"
umask 022

# shellcheck disable=SC2086
install_packages ${HFT_BUILD_PACKAGES:-} git curl jq
api_base=${HFT_HEALTH_URL%/api/v1/health}

# 3.5 step 1: users (the service's, and the one that builds releases)
if id -u "$user" >/dev/null 2>&1; then
  ok "user $user"
else
  useradd -r -M -s /bin/bash -d "$home" "$user" 2>/dev/null || die "useradd $user failed"
  changed "user $user created (home $home)"
fi
[ "$(id -u "$user")" != 0 ] || die "HFT_USER must not be root"
group=$(id -gn "$user")
if id -u "$buser" >/dev/null 2>&1; then
  ok "build user $buser"
else
  useradd -r -M -U -s /usr/sbin/nologin -d "$bdir" "$buser" 2>/dev/null || die "useradd $buser failed"
  changed "build user $buser created"
fi
bgroup=$(id -gn "$buser")

# directories, top down: each parent is root's before its children are looked at
ensure_dir "$home" 755 root:root
for d in bin releases; do ensure_dir "$home/$d" 755 root:root; done
ensure_dir "$home/config" 750 "root:$group"
ensure_dir "$home/config/strategies" 750 "root:$group"
ensure_dir "$log_dir" "$log_mode" "$user:$group"   # 3.5 step 5

# the old layout's clone, writable by the service: builds now happen in $bdir
if [ -e "$home/src" ] || [ -L "$home/src" ]; then
  rm -rf -- "$home/src"
  changed "removed $home/src (old layout: a checkout the service user could write)"
fi
# Anything else under $HFT_HOME (releases aside: see below) that is not root's or that others
# can write becomes root's. chown -h first, for every path (no link is followed); once every
# directory is root's nothing can be swapped in, and then group/other write bits go.
sweep() { find "$home" -xdev -path "$home/releases" -prune -o "$@"; }
n=$(sweep \( ! -user root -o ! -type l -perm /022 \) -print | wc -l)
if [ "$n" -gt 0 ]; then
  for _ in 1 2 3; do
    sweep ! -user root -exec chown -h root:root {} + 2>/dev/null || true
    [ -z "$(sweep ! -user root -print -quit)" ] && break
  done
  [ -z "$(sweep ! -user root -print -quit)" ] || die "paths under $home keep changing owner; stop whatever writes there"
  sweep ! -type l -perm /022 -exec chmod go-w {} +
  changed "$n path(s) under $home were another user's or writable by others: now root's"
fi

# a release is complete only with its marker and only when every file is root's, read-only to
# others, and nothing in it is a link or a special file
release_complete() {
  local d=$1
  [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/$MARK" ] && [ ! -L "$d/$MARK" ] \
    && [ -f "$d/bin/hft_system" ] && [ ! -L "$d/bin/hft_system" ] && [ -x "$d/bin/hft_system" ] || return 1
  [ -z "$(find "$d" \( ! -user root -o -perm /022 -o \( ! -type f ! -type d \) \) -print -quit)" ]
}
rel_root=$home/releases
# leftovers of an install that was interrupted (root's own temp dirs)
for d in "$rel_root"/.incoming.* "$rel_root"/.trash.*; do
  [ -e "$d" ] || continue
  rm -rf -- "$d"
  changed "removed $d (left by an interrupted install)"
done

as_user() { runuser -u "$user" -- "$@"; }
as_build() { runuser -u "$buser" -- "$@"; }

# 3.5 steps 2-4: build as $buser in a fresh scratch dir, install atomically
build_release() {
  ensure_dir "$bdir" 700 "$buser:$bgroup"
  # scratch dirs of builds that were interrupted: removed by their owner, root does not walk them
  local stale
  stale=$(as_build find "$bdir" -mindepth 1 -maxdepth 1 -name 'work.*' -print | wc -l)
  if [ "$stale" -gt 0 ]; then
    as_build find "$bdir" -mindepth 1 -maxdepth 1 -name 'work.*' -exec rm -rf {} +
    changed "removed $stale scratch dir(s) of interrupted builds in $bdir"
  fi
  local src=$bdir/src
  if as_build test -d "$src/.git"; then
    [ "$(as_build git -C "$src" remote get-url origin)" = "$HFT_REPO" ] \
      || as_build git -C "$src" remote set-url origin "$HFT_REPO"
    as_build git -C "$src" fetch --quiet --tags --force origin 2>"$HFT_PAYLOAD/git.err" \
      || die "git fetch from $HFT_REPO failed: $(tail -n 3 "$HFT_PAYLOAD/git.err" | tr '\n' ' ')"
    ok "fetched $HFT_REPO"
  else
    as_build rm -rf "$src"
    as_build git clone --quiet --no-checkout "$HFT_REPO" "$src" 2>"$HFT_PAYLOAD/git.err" \
      || die "git clone $HFT_REPO failed: $(tail -n 3 "$HFT_PAYLOAD/git.err" | tr '\n' ' ')"
    changed "cloned $HFT_REPO to $src"
  fi
  local commit
  commit=$(as_build git -C "$src" rev-parse -q --verify "refs/tags/$tag^{commit}") \
    || die "tag $tag not found in $HFT_REPO"
  local work start blog=$HFT_PAYLOAD/build.log
  work=$(as_build mktemp -d "$bdir/work.XXXXXXXX")
  as_build mkdir "$work/source"
  as_build sh -c 'git -C "$1" archive --format=tar "$2" | tar -x -C "$3"' sh "$src" "$commit" "$work/source"
  start=$SECONDS
  # the binary is built for its final prefix and staged under DESTDIR in the scratch dir
  if ! as_build sh -c 'cmake -S "$1/source" -B "$1/build" -DCMAKE_BUILD_TYPE="$2" -DCMAKE_INSTALL_PREFIX="$3" \
        && cmake --build "$1/build" -- -j"$(nproc)" && DESTDIR="$1/install" cmake --install "$1/build"' \
        sh "$work" "$build_type" "$rel" >"$blog" 2>&1; then
    tail -n 40 "$blog" >&2
    as_build rm -rf "$work"
    die "build of $tag failed (last lines above)"
  fi
  local inc trash="" odd
  inc=$(mktemp -d "$rel_root/.incoming.$tag.XXXXXXXX")
  if ! as_build tar -C "$work/install$rel" -cf - . \
      | tar -C "$inc" -xf - --no-same-owner --no-same-permissions 2>"$HFT_PAYLOAD/tar.err"; then
    rm -rf -- "$inc"
    die "installing the build of $tag failed: $(tail -n 3 "$HFT_PAYLOAD/tar.err" | tr '\n' ' ')"
  fi
  odd=$(find "$inc" ! -type f ! -type d -print -quit)
  if [ -n "$odd" ]; then
    rm -rf -- "$inc"
    die "the build of $tag installed ${odd#"$inc"/}, which is not a regular file or directory: refused"
  fi
  chmod -R u+rwX,go+rX,go-w,ug-s "$inc"
  [ -f "$inc/bin/hft_system" ] && [ -x "$inc/bin/hft_system" ] \
    || { rm -rf -- "$inc"; die "the build of $tag did not produce bin/hft_system"; }
  install -m 644 "$blog" "$inc/build.log"
  printf 'tag=%s\ncommit=%s\nbuild_type=%s\nbuilt_by=%s\n' "$tag" "$commit" "$build_type" "$buser" >"$inc/$MARK"
  chmod 644 "$inc/$MARK"
  chmod 755 "$inc"
  if [ -e "$rel" ] || [ -L "$rel" ]; then
    trash=$(mktemp -d "$rel_root/.trash.XXXXXXXX")
    mv -T -- "$rel" "$trash/old"
    changed "replaced incomplete release dir $rel"
  fi
  mv -T -- "$inc" "$rel"   # the release is complete from here on
  [ -z "$trash" ] || rm -rf -- "$trash"
  as_build rm -rf "$work"
  changed "built $tag ($build_type, ${commit:0:12}) as $buser in $((SECONDS - start)) s, installed to $rel"
}

rel=$rel_root/$tag
newbin=$rel/bin/hft_system
built=0
# the commit the tag names now (annotated tags peeled); empty when the repository cannot be asked
tag_commit() {
  as_build git ls-remote "$HFT_REPO" "refs/tags/$tag" "refs/tags/$tag^{}" 2>/dev/null \
    | awk '{c[$2] = $1} END {t = "refs/tags/'"$tag"'"; print (c[t "^{}"] != "" ? c[t "^{}"] : c[t])}'
}
if release_complete "$rel"; then
  ensure_dir "$bdir" 700 "$buser:$bgroup" >/dev/null
  built_from=$(sed -n 's/^commit=//p' "$rel/$MARK")
  now=$(tag_commit || true)
  if [ -n "$now" ] && [ "$now" != "$built_from" ]; then
    warn "tag $tag moved from ${built_from:0:12} to ${now:0:12} since it was built: rebuilding"
    build_release
    built=1
  else
    ok "release $tag installed ($rel${built_from:+, ${built_from:0:12}})"
  fi
else
  build_release
  built=1
fi

# 7.1 step 2: validate the new config with the new binary, as the service user, before
# touching the service
cfgdir=$home/config
cfg=$cfgdir/production.json
rm -f -- "$cfgdir"/.production.json.??????   # left by an interrupted run
staged=$(mktemp "$cfgdir/.production.json.XXXXXX")
cat "$HFT_PAYLOAD/production.json" >"$staged"
chown "root:$group" "$staged"
chmod 640 "$staged"
if ! vout=$(as_user "$newbin" --validate-config --config="$staged" 2>&1); then
  rm -f "$staged"
  msg=$(printf '%s' "$vout" | tail -n 3 | tr '\n' ' ')
  msg=${msg//$staged/$cfg}
  die "config validation failed: $msg"
fi
ok "config valid for $tag: $(tail -n 1 <<<"$vout" | sed "s#$staged#$cfg#")"

# what runs now, kept to roll back to if the new release does not become healthy
prev=$HFT_PAYLOAD/previous
mkdir -p "$prev"
link=$home/bin/hft_system
prev_bin=$(readlink "$link" 2>/dev/null || true)
[ ! -f "$cfg" ] || cp -p "$cfg" "$prev/production.json"
[ ! -f "$home/.env" ] || cp -p "$home/.env" "$prev/.env"
[ ! -f "/etc/systemd/system/$unit.service" ] || cp -p "/etc/systemd/system/$unit.service" "$prev/unit"
holds_lease() { curl -fsS --max-time 3 "$api_base/api/v1/status" 2>/dev/null | jq -e '.lease.held_by_me == true' >/dev/null 2>&1; }

# what in the config changed: nothing, only what the cutover owns (role, trading_enabled),
# keys only a restart applies, or keys a hot reload applies
config_change=none
if [ -f "$cfg" ] && ! cmp -s "$staged" "$cfg"; then
  strip='del(.role, .trading_enabled)'
  if [ "$(jq -S "$strip" "$staged")" = "$(jq -S "$strip" "$cfg")" ]; then
    config_change=cutover
  else
    restart_keys=$(as_user "$newbin" --restart-keys 2>/dev/null || echo '["api","database","log_dir","exchanges","node_id","lease"]')
    differs=$(jq -n --argjson keys "$restart_keys" --slurpfile a "$staged" --slurpfile b "$cfg" \
      '[$keys[] | split(".")[0]] | unique | map(select($a[0][.] != $b[0][.])) | join(",")')
    differs=${differs//\"/}
    if [ -n "$differs" ]; then config_change="restart:$differs"; else config_change=reload; fi
  fi
elif [ ! -f "$cfg" ]; then
  config_change=new
fi

restart_why=()
# binary (runbook 1.3: $HFT_HOME/bin/hft_system), a root-owned symlink to the release
if [ -L "$link" ] && [ "$(readlink "$link")" = "$newbin" ] && [ "$(stat -c %u "$link")" = 0 ]; then
  ok "$link -> $newbin"
  if [ "$built" = 1 ]; then restart_why+=(binary); fi   # same path, rebuilt release
else
  was=""
  if [ -L "$link" ]; then was=" (was -> $(readlink "$link"))"; fi
  if [ -d "$link" ] && [ ! -L "$link" ]; then rm -rf -- "$link"; fi
  ln -sfn "$newbin" "$home/bin/.hft_system.new"
  mv -Tf "$home/bin/.hft_system.new" "$link"
  changed "$link -> $newbin$was"
  restart_why+=(binary)
fi
if [ -f "$cfg" ] && [ ! -L "$cfg" ] && cmp -s "$staged" "$cfg" \
    && [ "$(stat -c '%a %U %G' "$cfg")" = "640 root $group" ]; then
  rm -f "$staged"
  ok "$cfg"
else
  mv -fT "$staged" "$cfg"
  case $config_change in
    cutover) changed "$cfg (role/trading_enabled only: applied by the cutover through the API, no restart)" ;;
    reload) changed "$cfg (hot reload)" ;;
    restart:*) changed "$cfg (${config_change#restart:} change(s): restart needed)"; restart_why+=("config ${config_change#restart:}") ;;
    *) changed "$cfg"; restart_why+=(config) ;;
  esac
fi
if [ -d "$HFT_PAYLOAD/strategies" ]; then
  for f in "$HFT_PAYLOAD"/strategies/*; do
    [ -f "$f" ] || continue
    install_file "$f" "$cfgdir/strategies/$(basename "$f")" 640 "root:$group"
    if [ "$FILE_CHANGED" = 1 ]; then restart_why+=(strategies); fi
  done
fi
install_file "$env_staged" "$home/.env" 600 root:root
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

roll_back() {  # roll_back WHY: the previous binary, config, .env and unit, started again
  [ -n "$prev_bin" ] && [ -x "$prev_bin" ] || die "$1; no previous release to roll back to"
  ln -sfn "$prev_bin" "$home/bin/.hft_system.new" && mv -Tf "$home/bin/.hft_system.new" "$link"
  [ ! -f "$prev/production.json" ] || cp -p "$prev/production.json" "$cfg"
  [ ! -f "$prev/.env" ] || cp -p "$prev/.env" "$home/.env"
  if [ -f "$prev/unit" ]; then cp -p "$prev/unit" "/etc/systemd/system/$unit.service"; systemctl daemon-reload; fi
  systemctl restart "$unit" || true
  if wait_http "$HFT_HEALTH_URL" "$health_timeout" healthy; then
    die "$1; rolled back to the previous release (${prev_bin#"$rel_root"/}), which is running and healthy"
  fi
  die "$1; rolled back to the previous release (${prev_bin#"$rel_root"/}), which is not healthy either"
}

if ! systemctl is-active --quiet "$unit"; then
  systemctl restart "$unit" || true
  changed "$unit started"
elif [ ${#restart_why[@]} -gt 0 ]; then
  if holds_lease && ! is_true "${HFT_ALLOW_PRIMARY_RESTART:-0}"; then
    [ -z "$prev_bin" ] || { ln -sfn "$prev_bin" "$home/bin/.hft_system.new" && mv -Tf "$home/bin/.hft_system.new" "$link"; }
    [ ! -f "$prev/production.json" ] || cp -p "$prev/production.json" "$cfg"
    [ ! -f "$prev/.env" ] || cp -p "$prev/.env" "$home/.env"
    if [ -f "$prev/unit" ] && ! cmp -s "$prev/unit" "/etc/systemd/system/$unit.service"; then
      cp -p "$prev/unit" "/etc/systemd/system/$unit.service"; systemctl daemon-reload
    fi
    die "$unit on this host is the primary and holds the trading lease: a restart (${restart_why[*]} changed) would stop trading. Cut over to the standby first (hft:release.live), or set hft:service.allowPrimaryRestart; nothing was changed"
  fi
  systemctl restart "$unit" || true
  changed "$unit restarted (${restart_why[*]} changed)"
elif [ "$config_change" = reload ]; then
  # 7.1 step 3: hot reload with the API token the service itself reads from .env
  api_auth_header "$home/.env" "$HFT_PAYLOAD/auth.header"
  if ! out=$(curl -sS --max-time 10 -H @"$HFT_PAYLOAD/auth.header" -w '\n%{http_code}' "$api_base/api/v1/config/reload") \
      || [ "${out##*$'\n'}" != 200 ]; then
    die "hot reload of $cfg refused: $(head -n 1 <<<"$out" | cut -c1-300)"
  fi
  needs=$(curl -fsS --max-time 5 "$api_base/api/v1/config/status" | jq -r '.requires_restart')
  [ "$needs" = false ] || die "hot reload applied but the service says a restart is still required: $(curl -fsS --max-time 5 "$api_base/api/v1/config/status" | jq -c '.restart_required_keys')"
  changed "$unit hot-reloaded (runbook 7.1 step 3), same PID $(systemctl show -p MainPID --value "$unit")"
else
  ok "$unit running, unchanged"
fi

if wait_http "$HFT_HEALTH_URL" "$health_timeout" healthy; then
  ok "$unit healthy ($HFT_HEALTH_URL)"
else
  echo "--- last 30 journal lines of $unit ---" >&2
  journalctl -u "$unit" -n 30 --no-pager >&2 || true
  if [ -n "$prev_bin" ] && [ ${#restart_why[@]} -gt 0 ]; then
    roll_back "$unit ($tag) not healthy at $HFT_HEALTH_URL after $health_timeout s"
  fi
  die "$unit not healthy at $HFT_HEALTH_URL after $health_timeout s"
fi

# releases that are not complete (the old layout's, built by the service user) and no longer
# in use; complete older releases stay for rollback
current=$(readlink "$link")
for d in "$rel_root"/*; do
  [ -e "$d" ] || [ -L "$d" ] || continue
  [ "$d/bin/hft_system" = "$current" ] && continue
  if ! release_complete "$d"; then
    rm -rf -- "$d"
    changed "removed incomplete release $d"
  fi
done

if [ "$HFT_CHANGES" -eq 0 ]; then ok "service: no changes"; else echo "changed: service: $HFT_CHANGES change(s)"; fi
st=$(curl -fsS --max-time 5 "$api_base/api/v1/status" || echo '{}')
echo "HFT_SERVICE_REPORT=$(jq -c --arg commit "$(sed -n 's/^commit=//p' "$(dirname "$(dirname "$(readlink "$link")")")/$MARK")" \
  '{version: .version, role: .role, trading_enabled: .trading_enabled, pid: .pid, node_id: .node_id, commit: $commit}' <<<"$st")"
