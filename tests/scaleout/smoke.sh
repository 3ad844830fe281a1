#!/usr/bin/env bash
# Smoke test of the scale-out test components (issue 16): scripts/s3-cluster (Ceph: a monitor,
# three OSDs, two radosgw endpoints) and scripts/pg (PostgreSQL), both started in a temp dir.
# Objects are put, listed, read back and deleted through both S3 endpoints with s3cmd (a client
# we did not write); an OSD is killed mid-way (as a crash) and reads and writes go on on the two
# left; one endpoint is stopped and the other still serves; the OSD and the endpoint come back;
# psql connects with FERRY_PG_URL and writes a table. Then everything is stopped and no process
# of the temp dir may be left. Prints the time of each step.
#
#   bash tests/scaleout/smoke.sh
#
# Env: FERRY_SCALEOUT_S3_PORT_BASE (default 39500), FERRY_SCALEOUT_PG_PORT (default 39010):
#      away from the scripts' defaults, so a cluster started by hand does not collide;
#      FERRY_SCALEOUT_KEEP=1 keeps the temp dir (logs) after a success.
# Needs (scripts/setup): ceph-mon ceph-osd radosgw ceph-common, postgresql, s3cmd, jq, curl.
# Runs as root (the scripts refuse otherwise). Prints "scaleout smoke: ok" last.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
S3_BASE=${FERRY_SCALEOUT_S3_PORT_BASE:-39500}
PG_PORT=${FERRY_SCALEOUT_PG_PORT:-39010}
WORK=$(mktemp -d /tmp/ferry-scaleout.XXXXXX)
# PostgreSQL runs as the postgres user, which must be able to enter $WORK/pg.
chmod 0711 "$WORK"
S3DIR=$WORK/s3
PGDIR=$WORK/pg
T_ALL=$(date +%s.%N)

say() { printf '== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# timed WHAT COMMAND...: runs COMMAND and prints how long it took.
timed() {
  local what=$1 t0 rc=0
  shift
  t0=$(date +%s.%N)
  "$@" || rc=$?
  printf 'time: %-44s %6.1fs\n' "$what" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
  return $rc
}
# Processes whose command line names the temp dir (the Ceph daemons name their ceph.conf there,
# the PostgreSQL processes its data dir or, in their titles, its cluster_name).
leftovers() {
  local p args
  for p in /proc/[0-9]*; do
    mapfile -d '' args 2>/dev/null <"$p/cmdline" || continue
    [[ "${args[*]}" == *"$WORK/"* ]] && echo "${p#/proc/} ${args[*]}"
  done
  return 0
}
cleanup() {
  local rc=$?
  "$ROOT/scripts/s3-cluster" stop "$S3DIR" >/dev/null 2>&1 || true
  "$ROOT/scripts/pg" stop "$PGDIR" >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then
    echo "FAIL: logs kept in $WORK/s3/log and $WORK/pg/log" >&2
  elif [ "${FERRY_SCALEOUT_KEEP:-0}" = 1 ]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# s3 I ARGS...: s3cmd through endpoint I (S3CMD_CONFIG from DIR/env holds the key pair).
s3() {
  local hp=${ENDPOINTS[$1]#http://}
  shift
  s3cmd --host="$hp" --host-bucket="$hp" "$@"
}
# put_get WHAT PUT_I GET_I NAME: a random 3 MiB object written through one endpoint reads back
# identical through the other (3 MiB: s3cmd sends it in one PUT, radosgw stripes it in RADOS).
put_get() {
  head -c 3145728 /dev/urandom >"$WORK/$4"
  timed "$1" s3 "$2" -q put "$WORK/$4" "s3://$FERRY_S3_BUCKET/$4"
  s3 "$3" -q --force get "s3://$FERRY_S3_BUCKET/$4" "$WORK/$4.back"
  cmp "$WORK/$4" "$WORK/$4.back" || fail "$4 read through endpoint $3 differs from what was written"
}
get_same() { # WHAT I NAME: an object written earlier reads back identical through endpoint I
  timed "$1" s3 "$2" -q --force get "s3://$FERRY_S3_BUCKET/$3" "$WORK/$3.back"
  cmp "$WORK/$3" "$WORK/$3.back" || fail "$3 read through endpoint $2 differs from what was written"
}
listing() { # I: the object names in the bucket as endpoint I lists them, sorted
  s3 "$1" ls "s3://$FERRY_S3_BUCKET/" | awk '{ sub(".*/", "", $4); print $4 }' | sort | tr '\n' ' '
}
expect_listing() { # I EXPECTED
  local got
  got=$(listing "$1")
  [ "$got" = "$2" ] || fail "endpoint $1 lists '$got', expected '$2'"
}

say "starting the S3 cluster (base port $S3_BASE) and PostgreSQL (port $PG_PORT) in $WORK"
timed "PostgreSQL start (in parallel)" "$ROOT/scripts/pg" start "$PGDIR" --port "$PG_PORT" >"$WORK/pg-start.log" 2>&1 &
pg_start=$!
timed "S3 cluster start (mkfs, 6 daemons, user, bucket)" "$ROOT/scripts/s3-cluster" start "$S3DIR" --port-base "$S3_BASE"
wait "$pg_start" || { cat "$WORK/pg-start.log" >&2; fail "scripts/pg start"; }
grep '^time:' "$WORK/pg-start.log"
for f in "$S3DIR/env" "$S3DIR/credentials" "$PGDIR/env"; do
  [ "$(stat -c %a "$f")" = 600 ] || fail "$f has mode $(stat -c %a "$f"), not 600"
done
# shellcheck source=/dev/null
. "$S3DIR/env"
# shellcheck source=/dev/null
. "$PGDIR/env"
for v in FERRY_S3_ENDPOINTS FERRY_S3_BUCKET FERRY_S3_REGION FERRY_S3_CREDENTIALS AWS_ACCESS_KEY_ID \
  AWS_SECRET_ACCESS_KEY FERRY_PG_URL FERRY_PG_CA; do
  [ -n "${!v:-}" ] || fail "$v is not set by the env files"
done
grep -q "^aws_secret_access_key = $AWS_SECRET_ACCESS_KEY$" "$FERRY_S3_CREDENTIALS" ||
  fail "$FERRY_S3_CREDENTIALS does not hold the key pair"
IFS=, read -r -a ENDPOINTS <<<"$FERRY_S3_ENDPOINTS"
[ ${#ENDPOINTS[@]} -ge 2 ] || fail "FERRY_S3_ENDPOINTS names ${#ENDPOINTS[@]} endpoint(s), expected 2 or more"
say "endpoints ${ENDPOINTS[*]}, bucket $FERRY_S3_BUCKET"

say "put, list, get and delete across both endpoints"
put_get "put a (endpoint 0)" 0 1 a
put_get "put b (endpoint 1)" 1 0 b
expect_listing 1 "a b "
timed "delete a (endpoint 1)" s3 1 -q del "s3://$FERRY_S3_BUCKET/a"
expect_listing 0 "b "
# An unsigned request and one signed with a wrong secret are refused: the bucket is the user's.
code=$(curl -s -o /dev/null -w '%{http_code}' "${ENDPOINTS[0]}/$FERRY_S3_BUCKET/b")
[ "$code" = 403 ] || fail "an anonymous GET answered $code, expected 403"
s3 0 --secret_key=wrong-secret -q ls "s3://$FERRY_S3_BUCKET/" >/dev/null 2>&1 &&
  fail "a request signed with a wrong secret was accepted"

say "one storage node down (osd.1 killed): reads and writes go on"
timed "kill osd.1 until marked down" "$ROOT/scripts/s3-cluster" stop-node "$S3DIR" 1 --kill
get_same "get b with osd.1 down (endpoint 0)" 0 b
put_get "put c with osd.1 down (endpoint 1)" 1 0 c
put_get "put d with osd.1 down (endpoint 0)" 0 1 d
timed "delete d with osd.1 down" s3 1 -q del "s3://$FERRY_S3_BUCKET/d"
expect_listing 1 "b c "
timed "restart osd.1 until up" "$ROOT/scripts/s3-cluster" start-node "$S3DIR" 1
get_same "get c after osd.1 is back (endpoint 1)" 1 c

say "a gracefully stopped node, then one endpoint down: the other serves"
timed "stop osd.2 until marked down" "$ROOT/scripts/s3-cluster" stop-node "$S3DIR" 2
put_get "put e with osd.2 down (endpoint 1)" 1 0 e
timed "restart osd.2 until up" "$ROOT/scripts/s3-cluster" start-node "$S3DIR" 2
timed "stop endpoint 0" "$ROOT/scripts/s3-cluster" stop-gateway "$S3DIR" 0
s3 0 -q ls "s3://$FERRY_S3_BUCKET/" >/dev/null 2>&1 && fail "endpoint 0 still answers after stop-gateway"
put_get "put f with endpoint 0 down (endpoint 1)" 1 1 f
get_same "get c with endpoint 0 down (endpoint 1)" 1 c
timed "restart endpoint 0" "$ROOT/scripts/s3-cluster" start-gateway "$S3DIR" 0
expect_listing 0 "b c e f "
"$ROOT/scripts/s3-cluster" status "$S3DIR" || fail "s3-cluster status: not every daemon runs"

say "PostgreSQL: psql as ferry over TCP with FERRY_PG_URL"
timed "psql create, insert" psql -X -q -v ON_ERROR_STOP=1 "$FERRY_PG_URL" <<'EOF'
CREATE TABLE smoke (id int PRIMARY KEY, what text);
INSERT INTO smoke VALUES (1, 'scale-out');
EOF
[ "$(psql -X -At "$FERRY_PG_URL" -c 'SELECT what FROM smoke WHERE id = 1')" = scale-out ] ||
  fail "psql did not read back the row"
[ "$(psql -X -At "$FERRY_PG_URL" -c 'SELECT current_user')" = ferry ] || fail "not connected as ferry"
say "PostgreSQL: TLS verified against FERRY_PG_CA; without TLS refused"
[ "$(PGSSLMODE=verify-full PGSSLROOTCERT=$FERRY_PG_CA psql -X -At "$FERRY_PG_URL" \
  -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')" = t ] ||
  fail "no TLS connection verified against $FERRY_PG_CA"
if PGSSLMODE=disable psql -X -At "$FERRY_PG_URL" -c 'SELECT 1' >"$WORK/plain.log" 2>&1; then
  fail "a connection without TLS was accepted"
fi
grep -q "no encryption" "$WORK/plain.log" || fail "plain connection: $(cat "$WORK/plain.log")"

say "stop everything"
timed "S3 cluster stop" "$ROOT/scripts/s3-cluster" stop "$S3DIR"
timed "PostgreSQL stop" "$ROOT/scripts/pg" stop "$PGDIR"
left=$(leftovers)
[ -z "$left" ] || fail "processes left behind: $left"
printf 'time: %-44s %6.1fs\n' "total" "$(awk -v a="$T_ALL" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')"
echo "scaleout smoke: ok"
