#!/usr/bin/env bash
# Runbook 3.4 step 1: the application's role, database and extensions.
# The password never reaches argv, the environment, a file or the server's statement log:
# python3 turns it into a SCRAM-SHA-256 verifier (as psql's \password does) and only the
# verifier is sent; a role whose stored verifier already matches the password is left alone.
# A role whose password differs is changed only when the operator asked for a rotation (a new
# HFT_DB_PASSWORD_ROTATION label; the applied one is kept as the role's comment). Otherwise the
# step fails and changes nothing: the state that generated the live password was lost, or
# another stack manages this database, and rotating silently would cut every running service
# off its database.
#
# env:
#   HFT_DB_NAME                  database (required)
#   HFT_DB_USER                  role, LOGIN, owner of the database (required)
#   HFT_DB_EXTENSIONS            space-separated extensions to create in the database (may be empty)
#   HFT_DB_EXTENSIONS_OPTIONAL   1: an extension that is not available is skipped; 0: error
#   HFT_DB_PASSWORD_ROTATION     label of the password the operator asked for, e.g. initial (required)
# payload: lib.sh
# stdin: the role's password (one line)
set -euo pipefail
source "$HFT_PAYLOAD/lib.sh"

require_env HFT_DB_NAME HFT_DB_USER HFT_DB_PASSWORD_ROTATION
read_secret password
command -v psql >/dev/null || die "psql not installed (run postgres.sh first)"
install_packages python3

# stdin: password, stored verifier -> "unchanged" or a new verifier (nothing else printed)
scram_py='
import base64, hashlib, hmac, os, sys
pw = sys.stdin.readline().rstrip("\n").encode()
stored = sys.stdin.readline().strip()
user = sys.argv[1].encode()
def keys(salt, it):
    s = hashlib.pbkdf2_hmac("sha256", pw, salt, it)
    ck = hmac.new(s, b"Client Key", "sha256").digest()
    return hashlib.sha256(ck).digest(), hmac.new(s, b"Server Key", "sha256").digest()
try:
    if stored.startswith("SCRAM-SHA-256$"):
        it_salt, ks = stored[len("SCRAM-SHA-256$"):].split("$")
        it, salt = it_salt.split(":")
        sk, svk = ks.split(":")
        if keys(base64.b64decode(salt), int(it)) == (base64.b64decode(sk), base64.b64decode(svk)):
            print("unchanged"); sys.exit(0)
    elif stored.startswith("md5"):
        if stored == "md5" + hashlib.md5(pw + user).hexdigest():
            print("unchanged"); sys.exit(0)
except Exception:
    pass
salt = os.urandom(16)
sk, svk = keys(salt, 4096)
b = lambda x: base64.b64encode(x).decode()
print("SCRAM-SHA-256$4096:%s$%s:%s" % (b(salt), b(sk), b(svk)))
'

q() { pg_run -v db="$HFT_DB_NAME" -v role="$HFT_DB_USER" "$@"; }

exists=$(echo "SELECT 1 FROM pg_roles WHERE rolname = :'role';" | q)
label="hft-deploy password rotation: $HFT_DB_PASSWORD_ROTATION"
applied=""
[ -z "$exists" ] || applied=$(echo "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = :'role';" | q)
stored=""
if [ -n "$exists" ]; then
  stored=$(echo "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = :'role';" | q)
fi
verifier=$(printf '%s\n%s\n' "$password" "$stored" | python3 -I -c "$scram_py" "$HFT_DB_USER")
unset password stored
[ -n "$verifier" ] || die "could not compute the password verifier"
if [ -z "$exists" ]; then
  { printf '\\set pw %s\n' "'$verifier'"
    echo "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'pw') \\gexec"; } | q >/dev/null
  changed "role $HFT_DB_USER created"
elif [ "$verifier" != unchanged ] && { [ "$applied" = "$label" ] || [ -z "$applied" ]; }; then
  unset verifier
  die "role $HFT_DB_USER exists with another password than the one in this stack's state, and no rotation was asked for (rotation '$HFT_DB_PASSWORD_ROTATION' is the one applied). Nothing was changed: the services keep their password. If the state was lost, put the live password back in it: read DB_PASSWORD from an app host's /opt/hft_system/.env (as root) and \`pulumi config set --secret hft:dbPassword < file\`. To rotate on purpose, set hft:database.passwordRotation to a new label"
elif [ "$verifier" != unchanged ]; then
  { printf '\\set pw %s\n' "'$verifier'"
    echo "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', :'pw') \\gexec"; } | q >/dev/null
  changed "role $HFT_DB_USER password updated"
else
  login=$(echo "SELECT rolcanlogin FROM pg_roles WHERE rolname = :'role';" | q)
  if [ "$login" != t ]; then
    echo "SELECT format('ALTER ROLE %I LOGIN', :'role') \\gexec" | q >/dev/null
    changed "role $HFT_DB_USER can log in"
  else
    ok "role $HFT_DB_USER, password unchanged"
  fi
fi
unset verifier
if [ "$applied" != "$label" ]; then
  echo "SELECT format('COMMENT ON ROLE %I IS %L', :'role', :'label') \\gexec" | q -v label="$label" >/dev/null
  changed "role $HFT_DB_USER: $label"
fi

owner=$(echo "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db';" | q)
if [ -z "$owner" ]; then
  echo "SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \\gexec" | q >/dev/null
  changed "database $HFT_DB_NAME created (owner $HFT_DB_USER)"
elif [ "$owner" != "$HFT_DB_USER" ]; then
  echo "SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \\gexec" | q >/dev/null
  changed "database $HFT_DB_NAME owner $owner -> $HFT_DB_USER"
else
  ok "database $HFT_DB_NAME (owner $HFT_DB_USER)"
fi

for ext in ${HFT_DB_EXTENSIONS:-}; do
  have=$(echo "SELECT extversion FROM pg_extension WHERE extname = :'ext';" | q -v ext="$ext" -d "$HFT_DB_NAME")
  if [ -n "$have" ]; then
    ok "extension $ext $have"
    continue
  fi
  avail=$(echo "SELECT 1 FROM pg_available_extensions WHERE name = :'ext';" | q -v ext="$ext" -d "$HFT_DB_NAME")
  if [ -z "$avail" ]; then
    if is_true "${HFT_DB_EXTENSIONS_OPTIONAL:-0}"; then
      skipped "extension $ext not installed"
      continue
    fi
    die "extension $ext is not available on this server (install its package, e.g. postgres.sh's TimescaleDB option)"
  fi
  echo "SELECT format('CREATE EXTENSION IF NOT EXISTS %I', :'ext') \\gexec" | q -v ext="$ext" -d "$HFT_DB_NAME" >/dev/null \
    || die "CREATE EXTENSION $ext failed"
  changed "extension $ext created in $HFT_DB_NAME"
done

if [ "$HFT_CHANGES" -eq 0 ]; then ok "database: no changes"; else echo "changed: database: $HFT_CHANGES change(s)"; fi
