#!/usr/bin/env bash
# Runbook 2.2: what can be read of the system requirements, before a host is changed.
# Changes nothing and installs nothing. Prints one line per check (✓ met, ⚠ informational or
# not installed yet, ✗ requirement not met) and a final line HFT_PREFLIGHT_REPORT=<JSON>.
# Exits 1 only when HFT_ENFORCE=1 and a requirement is not met.
#
# env:
#   HFT_MIN_CORES     e.g. 32 (required)
#   HFT_MIN_RAM_GB    e.g. 128 (required)
#   HFT_MIN_DISK_GB   size of the filesystem holding /, e.g. 2000 (required)
#   HFT_REQUIRED_OS   e.g. "Ubuntu 22.04" (informational: a mismatch is ⚠, never ✗)
#   HFT_ENFORCE       1 (prod): fail when below a requirement; 0 (lab): report only
#   HFT_MIN_BOOST     default 1.75 (checked where installed)
#   HFT_MIN_OPENSSL   default 3.0 (checked where installed)
# payload: lib.sh
# stdin: not read.
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_MIN_CORES HFT_MIN_RAM_GB HFT_MIN_DISK_GB
enforce=${HFT_ENFORCE:-0}
checks="" unmet=0
report() {  # report STATUS(pass|warn|fail) CHECK DETAIL
  local sym
  case $1 in pass) sym="✓" ;; warn) sym="⚠" ;; *) sym="✗"; unmet=$((unmet + 1)) ;; esac
  echo "$sym $2: $3"
  checks+="${checks:+,}{\"check\":$(json_str "$2"),\"status\":\"$1\",\"detail\":$(json_str "$3")}"
}

os="unknown"
if [ -r /etc/os-release ]; then os=$(. /etc/os-release && echo "${NAME:-?} ${VERSION_ID:-?}" | sed 's/ GNU\/Linux//'); fi
pretty=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-$os}")
if [ -z "${HFT_REQUIRED_OS:-}" ]; then report pass "OS" "$pretty"
elif [[ "$os" == "$HFT_REQUIRED_OS"* ]]; then report pass "OS" "$pretty"
else report warn "OS" "$pretty (runbook: $HFT_REQUIRED_OS)"; fi

cores=$(nproc --all)
if [ "$cores" -ge "$HFT_MIN_CORES" ]; then report pass "CPU cores" "$cores (min $HFT_MIN_CORES)"
else report fail "CPU cores" "$cores, below $HFT_MIN_CORES"; fi

ram_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
ram_gb=$(( (ram_kb + 524288) / 1048576 ))
# a "128 GB" server shows a little less than 128 GiB of MemTotal: allow 5 %
if [ $((ram_kb * 100)) -ge $((HFT_MIN_RAM_GB * 1048576 * 95)) ]; then report pass "RAM" "${ram_gb} GiB (min $HFT_MIN_RAM_GB)"
else report fail "RAM" "${ram_gb} GiB, below $HFT_MIN_RAM_GB"; fi

disk_gb=$(df -P -BG / | awk 'NR == 2 {sub("G", "", $2); print $2}')
disk_free=$(df -P -BG / | awk 'NR == 2 {sub("G", "", $4); print $4}')
if [ "$disk_gb" -ge "$HFT_MIN_DISK_GB" ]; then report pass "Disk /" "${disk_gb} GiB, ${disk_free} GiB free (min $HFT_MIN_DISK_GB)"
else report fail "Disk /" "${disk_gb} GiB, below $HFT_MIN_DISK_GB (${disk_free} GiB free)"; fi

# installed library versions (dpkg-query); absent ones are installed later by baseline.sh
pkgver() { { dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$@" 2>/dev/null || true; } | awk '$1 == "installed" {print $2; exit}'; }
libcheck() {  # libcheck NAME MIN PKG...
  local name=$1 min=$2 v
  shift 2
  v=$(pkgver "$@")
  if [ -z "$v" ]; then report warn "$name" "not installed ($*)"
  elif [ -z "$min" ] || dpkg --compare-versions "$v" ge "$min"; then report pass "$name" "$v${min:+ (min $min)}"
  else report fail "$name" "$v, below $min"; fi
}
libcheck "Boost" "${HFT_MIN_BOOST:-1.75}" libboost-dev libboost-all-dev
libcheck "OpenSSL" "${HFT_MIN_OPENSSL:-3.0}" libssl3 openssl libssl-dev
libcheck "libpq" "" libpq5 libpq-dev

if [ "$unmet" -eq 0 ]; then status=PASS; elif is_true "$enforce"; then status=FAIL; else status=WARN; fi
echo "HFT_PREFLIGHT_REPORT={\"host\":$(json_str "$(hostname)"),\"os\":$(json_str "$pretty"),\"cores\":$cores,\"ram_gb\":$ram_gb,\"disk_gb\":$disk_gb,\"enforce\":$(is_true "$enforce" && echo true || echo false),\"unmet\":$unmet,\"checks\":[${checks}],\"status\":\"$status\"}"
if [ "$status" = FAIL ]; then
  die "$unmet requirement(s) of runbook 2.2 not met (HFT_ENFORCE=1)"
fi
