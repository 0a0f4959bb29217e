#!/usr/bin/env bash
# Runbook 2.2 and 3.1, before any host is changed: everything the deploy will need that can be
# seen from this host, all reported at once, each finding naming the config key that changes it.
# Changes nothing: apt's package lists are fetched into this step's private directory (never
# /var/lib/apt/lists), installs are only simulated (apt-get -s), the release repository is only
# asked for its refs.
#
# Two kinds of finding:
#   unmet  a requirement of runbook 2.2/3.1 (cores, RAM, the sizes of / and the data mount,
#          library versions): fatal only with HFT_ENFORCE=1 (prod), a warning otherwise;
#   fail   a later step would fail for certain (an unsupported OS, a package no configured apt
#          source provides, an unreachable release repository, a release tag it lacks): always fatal.
# Prints one line per check (✓ met, ⚠ informational or not enforced, ✗ fatal) and a last line
# HFT_PREFLIGHT_REPORT=<JSON> (every finding with its key); exits 1 listing every fatal finding.
#
# env:
#   HFT_MIN_CORES      e.g. 32 (required)
#   HFT_MIN_RAM_GB     e.g. 128 (required)
#   HFT_MIN_ROOT_GB    size of the filesystem holding / in GB, e.g. 100 (required)
#   HFT_MIN_DATA_GB    size of the data filesystem in GB, e.g. 1800 (required)
#   HFT_DATA_MOUNT     the data filesystem's mount point, default /data
#   HFT_SUPPORTED_OS   supported ID:VERSION_ID of /etc/os-release, e.g. "debian:12 ubuntu:22.04" (required)
#   HFT_REQUIRED_OS    e.g. "Ubuntu 22.04" (informational: a mismatch is ⚠, never fatal)
#   HFT_MIN_BOOST      e.g. 1.74: checked against the installed version, or the one apt would
#                      install (what the baseline will install)
#   HFT_MIN_OPENSSL    e.g. 3.0, likewise
#   HFT_LIB_BOOST      the package of baseline.packages that brings Boost, e.g. libboost-all-dev
#   HFT_LIB_OPENSSL    likewise OpenSSL, e.g. libssl-dev
#   HFT_LIB_PQ         likewise libpq, e.g. libpq-dev
#   HFT_REPOSITORY     git URL of the release repository (empty: no release on this host)
#   HFT_RELEASE_TAGS   "release.blue.version=v1.0.0 ...": tags that must exist in it
#   HFT_ENFORCE        1 (prod): unmet requirements are fatal; 0 (lab): reported only
# payload: lib.sh, optional packages.list: lines "FAMILY CONFIG-KEY PACKAGE" (FAMILY: debian,
#          ubuntu or any; %PG% in PACKAGE is the major version of the PostgreSQL apt would install);
#          optional repositories.list: lines "FAMILY CONFIG-KEY URL", apt repositories a later step
#          adds (suite: this host's codename, component main), read here into the private lists only
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_MIN_CORES HFT_MIN_RAM_GB HFT_MIN_ROOT_GB HFT_MIN_DATA_GB HFT_SUPPORTED_OS
enforce=0
is_true "${HFT_ENFORCE:-0}" && enforce=1
checks="" fatal=() unmet=0 failed=0
report() {  # report STATUS(pass|warn|unmet|fail) CHECK DETAIL [KEY]
  local status=$1 sym line
  case $status in
    pass) sym="✓" ;;
    warn) sym="⚠" ;;
    unmet) unmet=$((unmet + 1)); if [ "$enforce" = 1 ]; then sym="✗"; else sym="⚠"; fi ;;
    *) failed=$((failed + 1)); sym="✗" ;;
  esac
  line="$2: $3${4:+ [key: $4]}"
  echo "$sym $line"
  if [ "$status" = fail ] || { [ "$status" = unmet ] && [ "$enforce" = 1 ]; }; then fatal+=("$line"); fi
  checks+="${checks:+,}{\"check\":$(json_str "$2"),\"status\":\"$status\",\"detail\":$(json_str "$3"),\"key\":$(json_str "${4:-}")}"
}

# ---- OS and family (per-family values of the config are chosen by this)
os_id="" os_ver="" pretty="unknown"
if [ -r /etc/os-release ]; then
  os_id=$( (. /etc/os-release && printf '%s' "${ID:-}") )
  os_ver=$( (. /etc/os-release && printf '%s' "${VERSION_ID:-}") )
  pretty=$( (. /etc/os-release && printf '%s' "${PRETTY_NAME:-${NAME:-?} ${VERSION_ID:-?}}") )
fi
family=""
supported=$(sed 's/:/ /g' <<<"$HFT_SUPPORTED_OS")
if [[ " $HFT_SUPPORTED_OS " == *" $os_id:$os_ver "* ]] && [ -n "$os_id" ]; then
  family=$os_id
  report pass "OS" "$pretty (family $family)"
else
  report fail "OS" "$pretty (ID=$os_id VERSION_ID=$os_ver) is not supported: expected one of $supported" \
    "preflight.supportedOs"
fi
if [ -n "${HFT_REQUIRED_OS:-}" ]; then
  os_name="$( (. /etc/os-release && printf '%s %s' "${NAME:-?}" "${VERSION_ID:-?}") 2>/dev/null | sed 's/ GNU\/Linux//')"
  if [[ "$os_name" == "$HFT_REQUIRED_OS"* ]]; then report pass "Runbook OS" "$HFT_REQUIRED_OS"
  else report warn "Runbook OS" "$pretty, the runbook names $HFT_REQUIRED_OS" "preflight.requiredOs"; fi
fi

# ---- hardware (runbook 2.2) and disks (runbook 3.1: / is 100 GB, the rest of the NVMe on /data)
cores=$(nproc --all)
if [ "$cores" -ge "$HFT_MIN_CORES" ]; then report pass "CPU cores" "$cores (min $HFT_MIN_CORES)"
else report unmet "CPU cores" "$cores, below $HFT_MIN_CORES" "preflight.minCores"; fi

ram_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
ram_gb=$(( (ram_kb + 524288) / 1048576 ))
# a "128 GB" server shows a little less than 128 GiB of MemTotal: allow 5 %
if [ $((ram_kb * 100)) -ge $((HFT_MIN_RAM_GB * 1048576 * 95)) ]; then report pass "RAM" "${ram_gb} GiB (min $HFT_MIN_RAM_GB)"
else report unmet "RAM" "${ram_gb} GiB, below $HFT_MIN_RAM_GB" "preflight.minRamGb"; fi

# sizes in GB (10^9, as disks are sold); a filesystem is a little smaller than its partition: allow 5 %
fs_gb() { df -P -B 1000000000 "$1" | awk 'NR == 2 {print $2 " " $4}'; }
disk_check() {  # disk_check MOUNT MIN KEY
  local size free
  read -r size free < <(fs_gb "$1")
  if [ $((size * 100)) -ge $(($2 * 95)) ]; then report pass "Disk $1" "${size} GB, ${free} GB free (min $2)"
  else report unmet "Disk $1" "${size} GB, below $2 (${free} GB free)" "$3"; fi
}
disk_check / "$HFT_MIN_ROOT_GB" "preflight.minRootGb"
root_gb=$(fs_gb / | cut -d' ' -f1)
data=${HFT_DATA_MOUNT:-/data}
data_gb=null
if mountpoint -q "$data" 2>/dev/null; then
  disk_check "$data" "$HFT_MIN_DATA_GB" "preflight.minDataGb"
  data_gb=$(fs_gb "$data" | cut -d' ' -f1)
elif [ -e "$data" ]; then
  report unmet "Disk $data" "not a mount point of its own (runbook 3.1: the rest of the NVMe, min $HFT_MIN_DATA_GB GB)" "preflight.dataMount"
else
  report unmet "Disk $data" "missing (runbook 3.1: the rest of the NVMe on its own mount point, min $HFT_MIN_DATA_GB GB)" "preflight.dataMount"
fi

# ---- packages: every list a step of this host will install, against the host's apt sources
apt_dir=$HFT_PAYLOAD/apt
apt_opts=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root
          -o Debug::NoLocking=1)
apt_ready=0
if [ -f "$HFT_PAYLOAD/packages.list" ] && [ -n "$family" ]; then
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  # the host's sources, and the repositories later steps add (not yet configured here): these are
  # only read into the private lists, never installed from, so their signature is not asked for
  codename=$( (. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}") )
  cat /etc/apt/sources.list >"$apt_dir/sources.list" 2>/dev/null || true
  declare -A repo_key=()
  if [ -f "$HFT_PAYLOAD/repositories.list" ]; then
    while read -r fam key url; do
      [ -n "${url:-}" ] && [ "$fam" = "$family" ] || continue
      repo_key[$url]=$key
      if grep -rqsF -- " $url " /etc/apt/sources.list.d/; then continue; fi   # added by an earlier run
      printf 'deb [trusted=yes] %s %s main\n' "$url" "$codename" >>"$apt_dir/sources.list"
    done <"$HFT_PAYLOAD/repositories.list"
  fi
  apt_opts+=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list")
  # seeded with the host's own lists (copies): an index that did not change is not downloaded again
  find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -exec cp -p -t "$apt_dir/lists/" {} + 2>/dev/null || true
  out=$(apt-get -q "${apt_opts[@]}" update 2>&1) || true
  unfetched=$(grep -E '^(Err:[0-9]+|[WE]: Failed to fetch) ' <<<"$out" | sed -E 's/^(Err:[0-9]+|[WE]: Failed to fetch) //' \
                | awk '{print $1}' | sort -u || true)
  for url in "${!repo_key[@]}"; do
    if grep -qF -- "${url%/}" <<<"$unfetched"; then
      why=$(grep -F -- "${url%/}" <<<"$out" | grep -vE '^(Err|Ign|Get|Hit):' | tail -n 1 | sed -E 's/^[WE]: //')
      report fail "Repository $url" "cannot be read from this host (${why:-not reachable})" "${repo_key[$url]}"
    else
      report pass "Repository $url" "readable ($codename main)"
    fi
  done
  others=$(for u in $unfetched; do
             known=0; for r in "${!repo_key[@]}"; do [[ "$u" == "${r%/}"* ]] && known=1; done
             [ "$known" = 1 ] || echo "$u"; done | paste -sd' ' - || true)
  if [ -n "$others" ]; then
    report fail "apt sources" "apt-get update cannot read $others" "(this host's apt sources)"
  fi
  if ls "$apt_dir/lists/"*_Packages >/dev/null 2>&1; then apt_ready=1
  else report fail "apt sources" "apt-get update read no package list: $(grep -E '^(E|W):' <<<"$out" | head -n 2 | tr '\n' ' ')" "(this host's apt sources)"; fi
fi
cand() { { apt-cache "${apt_opts[@]}" policy "$1" 2>/dev/null || true; } | awk '/Candidate:/ {print $2; exit}'; }
inst() { { dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$1" 2>/dev/null || true; } | awk '$1 == "installed" {print $2; exit}'; }
# the version a package is at once the steps ran: installed, or what apt would install
will_have() { local v; v=$(inst "$1"); [ -n "$v" ] || { [ "$apt_ready" = 1 ] && v=$(cand "$1"); }; [ "$v" = "(none)" ] && v=""; printf '%s' "$v"; }

hint() {  # what to do about a package the host cannot install, by the key that asks for it
  case $1 in
    *postgres.timescaledb*) printf '%s' "; postgres.timescaledbRepository.$family must provide it (runbook 3.3 step 3), or set postgres.timescaledb false and remove timescaledb from database.extensions" ;;
    *monitoring.grafana*) printf '%s' "; add the Grafana apt repository (runbook 3.3 step 4: packages.grafana.com/oss/deb), or set monitoring.grafana false" ;;
    *realtimeKernel.packages.ubuntu*) printf '%s' "; Ubuntu's real-time kernel comes with Ubuntu Pro (\`pro enable realtime-kernel\`), or set realtimeKernel.enabled false" ;;
    *realtimeKernel*) printf '%s' "; set realtimeKernel.packages.$family to this OS's RT kernel, or realtimeKernel.enabled false" ;;
  esac
}
if [ "$apt_ready" = 1 ]; then
  # PostgreSQL's major version: installed, else the one a package of the list names, else apt's candidate
  pg=$( { find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null || true; } | sort -nr | head -n 1)
  [ -n "$pg" ] || pg=$(awk '$3 ~ /^postgresql-[0-9]+$/ {sub("postgresql-", "", $3); print $3; exit}' "$HFT_PAYLOAD/packages.list")
  [ -n "$pg" ] || { v=$(cand postgresql); pg=${v%%+*}; pg=${pg%%.*}; }
  declare -A keys_of=()
  order=()
  while read -r fam key pkg; do
    [ -n "${pkg:-}" ] || continue
    case $fam in any|"$family") ;; *) continue ;; esac
    pkg=${pkg//%PG%/$pg}
    if [ -z "${keys_of[$pkg]:-}" ]; then order+=("$pkg"); keys_of[$pkg]=$key
    elif [[ ",${keys_of[$pkg]}," != *",$key,"* ]]; then keys_of[$pkg]+=",$key"; fi
  done <"$HFT_PAYLOAD/packages.list"
  # every candidate at once: "PKG VERSION" (no line for a package apt does not know)
  declare -A cand_of=()
  while read -r p v; do cand_of[$p]=$v; done < <(
    { apt-cache "${apt_opts[@]}" policy "${order[@]}" 2>/dev/null || true; } \
      | awk '/^[^ ].*:$/ {p = substr($0, 1, length($0) - 1)} /^  Candidate:/ {print p, $2}')
  present=0 missing=() bad=0
  for pkg in "${order[@]}"; do
    if [ -n "$(inst "$pkg")" ]; then present=$((present + 1)); continue; fi
    c=${cand_of[$pkg]:-}
    if [ -z "$c" ] || [ "$c" = "(none)" ]; then
      report fail "Package $pkg" "not installable from this host's apt sources ($pretty)$(hint "${keys_of[$pkg]}")" \
        "${keys_of[$pkg]}"
      bad=$((bad + 1))
    else
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if ! sim=$(apt-get -s -q "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" 2>&1); then
      involved=$(for p in "${missing[@]}"; do printf '%s\n' "${keys_of[$p]//,/$'\n'}"; done | sort -u | paste -sd, -)
      report fail "Packages" "apt-get install would fail: $(grep -E '^(E:| [a-z0-9.+-]+ :)' <<<"$sim" | head -n 4 | tr '\n' ' ')" "$involved"
      bad=$((bad + 1))
    fi
  fi
  [ "$bad" -gt 0 ] || report pass "Packages" "${#order[@]} needed: $present installed, ${#missing[@]} installable (apt-get -s)"
fi

# ---- libraries (runbook 2.2) at the version the host will have once the baseline ran
libcheck() {  # libcheck NAME PKG MIN KEY
  local name=$1 pkg=$2 min=$3 v how="installed"
  [ -n "$pkg" ] || { report warn "$name" "no package of baseline.packages brings it" "baseline.packages"; return 0; }
  v=$(inst "$pkg")
  if [ -z "$v" ]; then v=$(will_have "$pkg"); how="apt will install"; fi
  if [ -z "$v" ]; then report warn "$name" "$pkg: version not known (not installed; apt lists not read)" "baseline.packages"
  elif [ -z "$min" ] || dpkg --compare-versions "$v" ge "$min"; then report pass "$name" "$pkg $v, $how${min:+ (min $min)}"
  else report unmet "$name" "$pkg $v ($how), below $min" "$4"; fi
}
libcheck "Boost" "${HFT_LIB_BOOST:-}" "${HFT_MIN_BOOST:-}" "preflight.minBoost, baseline.packages"
libcheck "OpenSSL" "${HFT_LIB_OPENSSL:-}" "${HFT_MIN_OPENSSL:-}" "preflight.minOpenssl, baseline.packages"
libcheck "libpq" "${HFT_LIB_PQ:-}" "" "baseline.packages"

# ---- the release repository, asked from this host (as the build will)
# refs of a git:// repository without git installed: the git protocol's ref advertisement
git_proto_refs() {  # HOST PORT PATH
  local req="git-upload-pack $3"
  exec 3<>"/dev/tcp/$1/$2" || return 1
  printf '%04x%s\0host=%s\0' $((4 + ${#req} + 1 + 5 + ${#1} + 1)) "$req" "$1" >&3
  printf '0000' >&3
  timeout 20 cat <&3 | tr '\0' '\n'
  exec 3<&-
}
repo_refs() {  # URL -> "sha ref" lines (or TCP); how it asked in $HFT_PAYLOAD/git.how
  local url=$1 rest hostport host port path
  if command -v git >/dev/null; then
    asked "git ls-remote"
    GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=10" \
      timeout 60 git ls-remote "$url" 2>"$HFT_PAYLOAD/git.err"
    return
  fi
  case $url in
    git://*) rest=${url#git://}; hostport=${rest%%/*}; path=/${rest#*/}; host=${hostport%%:*}
             port=9418; [ "$hostport" = "$host" ] || port=${hostport#*:}
             asked "the git protocol (git is installed later)"
             git_proto_refs "$host" "$port" "$path" 2>"$HFT_PAYLOAD/git.err" \
               | grep -oE '^[0-9a-f]{4}[0-9a-f]{40} [^ ]+' | cut -c5- | sed 's/ /\t/'
             return "${PIPESTATUS[0]}" ;;
    https://*) if command -v curl >/dev/null; then
                 asked "smart HTTP (git is installed later)"
                 curl -fsS --max-time 30 "${url%/}/info/refs?service=git-upload-pack" 2>"$HFT_PAYLOAD/git.err" \
                   | tr '\0' '\n' | grep -oE '^[0-9a-f]{4}[0-9a-f]{40} [^ ]+' | cut -c5- | sed 's/ /\t/'
                 return "${PIPESTATUS[0]}"
               fi
               rest=${url#https://}; port=443 ;;
    ssh://*) rest=${url#ssh://}; rest=${rest#*@}; port=22 ;;
    *) rest=${url#*@}; rest=${rest%%:*}; port=22 ;;
  esac
  hostport=${rest%%/*}; host=${hostport%%:*}; [ "$hostport" = "$host" ] || port=${hostport#*:}
  asked "a TCP connection to $host:$port only (git is installed later; tags not checked)"
  timeout 10 bash -c 'exec 3<>"/dev/tcp/$1/$2"' sh "$host" "$port" 2>"$HFT_PAYLOAD/git.err" && echo "TCP"
}
asked() { printf '%s' "$*" >"$HFT_PAYLOAD/git.how"; }
if [ -n "${HFT_REPOSITORY:-}" ]; then
  asked git
  refs=$(repo_refs "$HFT_REPOSITORY") || refs=""
  asked=$(cat "$HFT_PAYLOAD/git.how")
  if [ -n "$refs" ]; then
    if [ "$refs" = TCP ]; then
      report warn "Repository" "$HFT_REPOSITORY reachable: $asked" "service.repository"
    else
      report pass "Repository" "$HFT_REPOSITORY answers ($(wc -l <<<"$refs") refs, by $asked)"
      for kv in ${HFT_RELEASE_TAGS:-}; do
        key=${kv%%=*} tag=${kv#*=}
        if grep -qE "[[:space:]]refs/tags/${tag//./\\.}(\^\{\})?$" <<<"$refs"; then
          report pass "Release tag $tag" "in $HFT_REPOSITORY"
        else
          report fail "Release tag $tag" "no tag $tag in $HFT_REPOSITORY" "$key"
        fi
      done
    fi
  else
    why=$(tail -n 1 "$HFT_PAYLOAD/git.err" 2>/dev/null | sed 's/^.*: //')
    report fail "Repository" "$HFT_REPOSITORY not reachable from this host by $asked${why:+: $why}" "service.repository"
  fi
fi

if [ ${#fatal[@]} -gt 0 ]; then status=FAIL; elif [ "$unmet" -gt 0 ]; then status=WARN; else status=PASS; fi
echo "HFT_PREFLIGHT_REPORT={\"host\":$(json_str "$(hostname)"),\"os\":$(json_str "$pretty"),\"family\":$(json_str "$family"),\"cores\":$cores,\"ram_gb\":$ram_gb,\"root_gb\":${root_gb:-null},\"data_gb\":$data_gb,\"enforce\":$([ "$enforce" = 1 ] && echo true || echo false),\"unmet\":$unmet,\"failed\":$failed,\"checks\":[${checks}],\"status\":\"$status\"}"
if [ "$status" = FAIL ]; then
  msg="preflight found ${#fatal[@]} problem(s) on $(hostname); nothing was changed on any host:"
  for f in "${fatal[@]}"; do msg+=$'\n'"  - $f"; done
  die "$msg"
fi
