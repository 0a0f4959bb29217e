# shellcheck shell=bash
# Shared helpers for the hft-deploy remote scripts. Copied to "$HFT_PAYLOAD/lib.sh" next to
# each script and sourced by it; defines functions only, changes nothing by itself.
#
#   ok/changed/skipped/warn/die  one short line per step ("ok: ...", "changed: ...", ...);
#                                die prints "error: ..." on stderr and exits 1
#   require_env NAME...          die unless every NAME is set and non-empty
#   install_packages PKG...      apt-get install only the missing ones (update at most once)
#   install_file SRC DEST MODE OWNER[:GROUP]
#                                replace DEST only when content, mode or owner differ;
#                                sets FILE_CHANGED=1 (changed) or 0 (ok). A DEST that is a
#                                symlink is replaced (atomic rename), never written through;
#                                a symlink among DEST's directories is refused.
#   ensure_dir PATH MODE OWNER[:GROUP]
#                                a real directory, never through a symlink: a symlink at PATH
#                                owned by another user (planted) is replaced by a directory, one
#                                owned by root is refused; its parent must be root's and not
#                                writable by others (so nothing can be swapped in between)
#   no_symlink_in PATH           die when PATH or one of its existing ancestors is a symlink
#   root_lock_file PATH          PATH as a root-owned regular file, created without following a
#                                link (for locks in the world-writable /run/lock)
#   replace_block FILE BLOCKFILE top|bottom LABEL
#                                keep BLOCKFILE's lines between "# BEGIN hft-deploy" and
#                                "# END hft-deploy" in FILE; sets FILE_CHANGED
#   os_family                    debian or ubuntu (ID= of /etc/os-release); empty on any other OS
#   by_family NAME               $NAME when set, else ${NAME}_DEBIAN or ${NAME}_UBUNTU for this
#                                host's family (per-family config values are chosen here)
#   json_str STRING              STRING as a JSON string literal (quotes included)
#   read_secret VAR              one line of stdin into VAR (never printed)
#   write_pgpass VAR HOST PORT DB USER PASSWORD
#                                a mode-600 libpq passfile in $HFT_PAYLOAD (removed with it);
#                                its path into VAR

HFT_CHANGES=0
FILE_CHANGED=0
_HFT_APT_UPDATED=0

ok() { printf 'ok: %s\n' "$*"; }
changed() { printf 'changed: %s\n' "$*"; HFT_CHANGES=$((HFT_CHANGES + 1)); }
skipped() { printf 'skipped: %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_env() {
  local n
  for n in "$@"; do
    [ -n "${!n:-}" ] || die "environment variable $n is required"
  done
}

require_payload() {
  [ -n "${HFT_PAYLOAD:-}" ] && [ -d "$HFT_PAYLOAD" ] || die "HFT_PAYLOAD is not a directory"
  local f
  for f in "$@"; do
    [ -e "$HFT_PAYLOAD/$f" ] || die "payload $f missing from \$HFT_PAYLOAD"
  done
}

os_family() {
  local id
  id=$( (. /etc/os-release && printf '%s' "${ID:-}") 2>/dev/null || true)
  case $id in debian|ubuntu) printf '%s' "$id" ;; *) printf '' ;; esac
}

by_family() {
  local name=$1 fam var
  if [ -n "${!name:-}" ]; then printf '%s' "${!name}"; return 0; fi
  fam=$(os_family)
  [ -n "$fam" ] || die "unsupported OS ($( (. /etc/os-release && printf '%s' "${PRETTY_NAME:-}") 2>/dev/null || echo unknown)): no ${name}_<FAMILY> for it (known families: debian, ubuntu)"
  var=${name}_${fam^^}
  [ -n "${!var:-}" ] || die "no $var: this host's OS family is $fam and the config has no value for it"
  printf '%s' "${!var}"
}

# is_true VALUE: 1/true/yes/on
is_true() { case "${1:-0}" in 1|true|yes|on|True|TRUE) return 0 ;; *) return 1 ;; esac; }

pkg_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# apt_get ARGS...: apt-get, one at a time. dpkg's own lock has a timeout option but the lists
# and archives locks do not, so two steps of one host (or an operator) would otherwise make the
# second fail at once with "Could not get lock /var/lib/apt/lists/lock". The lock file sits in
# the archives directory so that hosts sharing one (the lab's bind-mounted package cache) take
# turns there too ("Could not get lock /var/cache/apt/archives/lock. It is held by process 0").
apt_get() {
  root_lock_file /var/cache/apt/archives/hft-deploy.lock
  flock -w 900 /var/cache/apt/archives/hft-deploy.lock apt-get "$@"
}

apt_update_once() {
  [ "$_HFT_APT_UPDATED" = 1 ] && return 0
  local log
  log=$(mktemp)
  if ! apt_get -q -o DPkg::Lock::Timeout=300 update >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    die "apt-get update failed"
  fi
  rm -f "$log"
  _HFT_APT_UPDATED=1
}

# apt_sources_changed: the next apt_update_once updates again (a step added an apt source)
apt_sources_changed() { _HFT_APT_UPDATED=0; }

# pkg_installable PKG: apt knows a candidate for PKG (after an update)
pkg_installable() {
  local cand
  cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

install_packages() {
  local missing=() p log
  for p in "$@"; do
    [ -n "$p" ] || continue
    pkg_installed "$p" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    [ $# -gt 0 ] && ok "packages present: $*"
    return 0
  fi
  apt_update_once
  for p in "${missing[@]}"; do
    pkg_installable "$p" || die "package $p is not installable from the configured apt sources"
  done
  log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt_get -q -y --no-install-recommends \
      -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef \
      -o Dpkg::Options::=--force-confold install "${missing[@]}" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    die "apt-get install ${missing[*]} failed"
  fi
  rm -f "$log"
  changed "installed ${missing[*]}"
}

_owner_of() { stat -c '%U:%G' "$1"; }
_mode_of() { stat -c '%a' "$1"; }
_norm_owner() { case "$1" in *:*) printf '%s' "$1" ;; *) printf '%s:%s' "$1" "$(id -gn "$1")" ;; esac; }

no_symlink_in() {
  local cur="" part parts=()
  IFS=/ read -r -a parts <<<"${1#/}"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    cur+="/$part"
    if [ -L "$cur" ]; then
      die "refusing $1: $cur is a symlink (to $(readlink "$cur")); hft-deploy does not follow symlinks"
    fi
    [ -e "$cur" ] || return 0
  done
}

root_lock_file() {
  local f=$1
  if [ -L "$f" ] || { [ -e "$f" ] && { [ ! -f "$f" ] || [ "$(stat -c %u "$f")" != 0 ]; }; }; then
    rm -rf -- "$f"
  fi
  [ -e "$f" ] || (set -C; : >"$f") 2>/dev/null || die "cannot create $f"
  [ -f "$f" ] && [ ! -L "$f" ] && [ "$(stat -c %u "$f")" = 0 ] || die "$f is not a root-owned file"
}

install_file() {
  local src=$1 dest=$2 mode=$3 owner dir was=""
  owner=$(_norm_owner "$4")
  FILE_CHANGED=0
  [ -f "$src" ] || die "install_file: $src is not a file"
  dir=$(dirname "$dest")
  no_symlink_in "$dir"
  if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$src" "$dest"; then
    if [ "$(_owner_of "$dest")" != "$owner" ]; then
      chown -h "$owner" "$dest"; FILE_CHANGED=1
    fi
    if [ "$(_mode_of "$dest")" != "${mode#0}" ]; then
      chmod "$mode" "$dest"; FILE_CHANGED=1
    fi
    if [ "$FILE_CHANGED" = 1 ]; then changed "$dest mode/owner set to $mode $owner"; else ok "$dest"; fi
    return 0
  fi
  if [ -L "$dest" ]; then
    was=" (was a symlink to $(readlink "$dest"): replaced, not followed)"
  elif [ -d "$dest" ]; then
    die "install_file: $dest is a directory"
  fi
  mkdir -p -- "$dir"
  local tmp
  tmp=$(mktemp "$dir/.hft-deploy.XXXXXX")
  cat "$src" >"$tmp"
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  mv -fT "$tmp" "$dest"
  FILE_CHANGED=1
  changed "$dest$was"
}

ensure_dir() {
  local path=${1%/} mode=$2 owner parent
  owner=$(_norm_owner "$3")
  case "$path" in /?*) ;; *) die "ensure_dir: $1 is not an absolute path" ;; esac
  case "/$path/" in */../*|*/./*) die "ensure_dir: $1 is not a normalised path" ;; esac
  parent=$(dirname "$path")
  no_symlink_in "$parent"
  [ -d "$parent" ] || ensure_dir "$parent" 755 root:root
  if [ "$(stat -c %u "$parent")" != 0 ] || { [ -n "$(find "$parent" -maxdepth 0 -perm -o+w ! -perm -1000)" ]; }; then
    die "refusing to manage $path: its parent $parent is not root's or is writable by others"
  fi
  if [ -L "$path" ]; then
    local target link_owner
    target=$(readlink "$path")
    link_owner=$(stat -c %U "$path")
    if [ "$link_owner" = root ]; then
      die "$path is a symlink (to $target): hft-deploy does not follow symlinks; make it a directory (or a bind mount)"
    fi
    rm -f -- "$path"
    changed "$path was a symlink to $target (owned by $link_owner): replaced by a directory, not followed"
  elif [ -e "$path" ] && [ ! -d "$path" ]; then
    die "$path exists and is not a directory"
  fi
  if [ -d "$path" ] && [ "$(_mode_of "$path")" = "${mode#0}" ] && [ "$(_owner_of "$path")" = "$owner" ]; then
    ok "directory $path"
    return 0
  fi
  [ -d "$path" ] || mkdir -m 700 -- "$path"
  chown -h "$owner" -- "$path"
  chmod "$mode" -- "$path"
  changed "directory $path ($mode $owner)"
}

BLOCK_BEGIN="# BEGIN hft-deploy"
BLOCK_END="# END hft-deploy"

replace_block() {
  local file=$1 block=$2 where=$3 new
  [ -f "$block" ] || die "replace_block: $block is not a file"
  new=$(mktemp)
  {
    if [ "$where" = top ]; then
      printf '%s\n' "$BLOCK_BEGIN"; cat "$block"; printf '%s\n' "$BLOCK_END"
    fi
    if [ -f "$file" ]; then
      awk -v b="$BLOCK_BEGIN" -v e="$BLOCK_END" '$0 == b {skip = 1; next} $0 == e {skip = 0; next} !skip' "$file"
    fi
    if [ "$where" != top ]; then
      printf '%s\n' "$BLOCK_BEGIN"; cat "$block"; printf '%s\n' "$BLOCK_END"
    fi
  } >"$new"
  local mode=644 owner=root:root
  if [ -f "$file" ]; then mode=$(_mode_of "$file"); owner=$(_owner_of "$file"); fi
  local before=$HFT_CHANGES
  install_file "$new" "$file" "$mode" "$owner" >/dev/null
  HFT_CHANGES=$before
  rm -f "$new"
  if [ "$FILE_CHANGED" = 1 ]; then changed "$file: hft-deploy block"; else ok "$file: hft-deploy block"; fi
}

json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  s=$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')
  printf '"%s"' "$s"
}

# json_list ITEM...: ["a","b"]
json_list() {
  local out="" x
  for x in "$@"; do out+="${out:+,}$(json_str "$x")"; done
  printf '[%s]' "$out"
}

read_secret() {
  local __v=""
  IFS= read -r __v || [ -n "$__v" ] || die "expected the secret on stdin (one line), got nothing"
  [ -n "$__v" ] || die "expected the secret on stdin (one line), got an empty line"
  printf -v "$1" '%s' "$__v"
}

# wait_http URL TIMEOUT [GREP]: until curl answers 2xx (and the body matches GREP)
wait_http() {
  local url=$1 timeout=$2 pattern=${3:-} start body
  start=$SECONDS
  while :; do
    if body=$(curl -fsS --max-time 3 "$url" 2>/dev/null); then
      if [ -z "$pattern" ] || grep -q -- "$pattern" <<<"$body"; then return 0; fi
    fi
    [ $((SECONDS - start)) -ge "$timeout" ] && return 1
    sleep 1
  done
}

# pg_run SQL-ON-STDIN: psql as postgres over the local socket, stop on error, quiet. From /
# (a subshell): postgres cannot enter root's working directory, and psql warns about that
# on every call made from there.
pg_run() {
  (cd / && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 "$@")
}

write_pgpass() {
  local __file __fields=() __f
  __file=$(umask 077 && mktemp "$HFT_PAYLOAD/pgpass.XXXXXX")
  for __f in "${@:2}"; do
    __f=${__f//\\/\\\\}
    __fields+=("${__f//:/\\:}")
  done
  (IFS=:; printf '%s\n' "${__fields[*]}") >"$__file"
  chmod 600 "$__file"
  printf -v "$1" '%s' "$__file"
}

# api_auth_header ENVFILE OUT: the service's API token (HFT_API_TOKEN in its .env, systemd
# EnvironmentFile quoting) as an "Authorization: Bearer" header in the 600 file OUT; read by
# root on the host, so the token never travels in a step's command text or stdin.
api_auth_header() {
  local envfile=$1 out=$2 token key="HFT_API"_TOKEN
  [ -f "$envfile" ] && [ ! -L "$envfile" ] || die "$envfile is missing or not a regular file (is the service deployed?)"
  token=$(sed -n -e "s/^$key=\"\\(.*\\)\"\$/\\1/p" -e "s/^$key=\\([^\"].*\\)\$/\\1/p" "$envfile" | tail -n 1)
  token=${token//\\\"/\"}
  token=${token//\\\\/\\}
  [ -n "$token" ] || die "no $key in $envfile: the API is read-only without it"
  (umask 077 && printf 'Authorization: Bearer %s\n' "$token" >"$out")
}

# The service's API from a script on its host. Callers set `home` (the service's home, with
# its .env), `where` (what the messages name) and HFT_API (its base URL).
#   read_token            the token into a 600 header file ($auth)
#   api METHOD PATH [BODY] API_CODE (000 when it does not answer) and API_BODY; writes carry
#                         the token and a JSON body ({} when none: a POST without one is a 400)
#   api_fail WHAT         die with the answer's error
read_token() {
  auth=$HFT_PAYLOAD/auth.header
  ( api_auth_header "$home/.env" "$auth" ) 2>&1 | sed "s|^error: |error: $where: |" >&2
  [ -s "$auth" ] || exit 1
}
api() {
  local args=(-sS --max-time 30 -X "$1" -o "$HFT_PAYLOAD/api.out" -w '%{http_code}')
  [ "$1" = GET ] || args+=(-H @"$auth" -H 'Content-Type: application/json' --data "${3:-{\}}")
  rm -f "$HFT_PAYLOAD/api.out"
  API_CODE=$(curl "${args[@]}" "$HFT_API/api/v1$2" 2>"$HFT_PAYLOAD/api.err") || API_CODE=000
  API_BODY=$(cat "$HFT_PAYLOAD/api.out" 2>/dev/null || true)
}
api_fail() {
  local why
  why=$(jq -r '.error // empty' <<<"$API_BODY" 2>/dev/null || true)
  [ -n "$why" ] || why=$(head -c 300 <<<"$API_BODY$(cat "$HFT_PAYLOAD/api.err" 2>/dev/null)")
  die "$where: $1 answered HTTP $API_CODE: $why"
}
