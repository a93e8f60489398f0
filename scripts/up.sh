#!/usr/bin/env bash
# make up: run the Spool stack on this machine, against the NATS (JetStream),
# PostgreSQL and Redis it finds on loopback (or at SPOOL_NATS_URL,
# SPOOL_DATABASE_URL, SPOOL_REDIS_URL). Development mode: gRPC binds to
# loopback only, secrets are generated once into .dev/secrets/.
#
# The stack's state belongs to this checkout's .dev/, like its secrets: a
# random instance id, generated once into .dev/instance, names its NATS
# streams and KV bucket (prefix spool_<id>), its database (spool_<id>) and its
# Redis keys (spool:<id>:…), unless SPOOL_STREAM_PREFIX, SPOOL_DATABASE_URL or
# SPOOL_REDIS_PREFIX are set (scripts/dev-instance.sh). Another clone, or a
# deleted .dev/, gets a fresh, independent stack on the same servers;
# make clean-dev (scripts/clean-dev.sh) deletes this one's state and .dev/.
#
# It prints "make up: ready: …" once every service answers SERVING to a gRPC
# health check. If a service exits (while starting or later) it names it, shows
# its last log lines, stops the others and exits 1. SIGINT (Ctrl-C) or SIGTERM,
# at any moment, stops every service gracefully; the exit status is then 0 when
# each of them stopped cleanly (run through make, make itself then reports the
# signal: 130 for SIGINT, 143 for SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."

logs=.dev/logs
timeout_s=${SPOOL_UP_TIMEOUT_SECONDS:-120}
# name|gRPC port|metrics port|short name (in its Redis prefix), in start order:
# file-ingest and generation-stream verify tokens against the signing keys auth
# publishes at start, so auth comes first; generation-stream reads the FILES
# stream file-ingest creates (SPOOL_FILES_ENABLED below), so file-ingest is next.
services=("auth|50061|9461|auth" "file-ingest|50063|9463|files" "generation-stream|50062|9462|gen")
names=()
pids=()
stopping=
probe= # the running health check, if any

# The last lines a service wrote, to say why it stopped.
last_lines() {
  sleep 0.3 # let tee write what the service wrote last
  echo "---- last lines of $logs/$1.log ----" >&2
  tail -n 20 "$logs/$1.log" >&2 || true
  echo "----" >&2
}

# The exit status of a service (our child), in REPLY. A signal handled meanwhile
# interrupts `wait` with 128+n while the service still runs: then wait again.
wait_for() {
  local s again
  while :; do
    s=0
    wait "$1" 2>/dev/null || s=$?
    [ "$s" -le 128 ] || ! kill -0 "$1" 2>/dev/null || continue
    if [ "$s" -gt 128 ]; then
      # Interrupted just as it exited (its status is still there), or killed by a signal (127: nothing left).
      again=0
      wait "$1" 2>/dev/null || again=$?
      [ "$again" -eq 127 ] || s=$again
    fi
    REPLY=$s
    return 0
  done
}

# Stops every service still running with one SIGTERM each and waits for them.
# Returns 1 if any stopped badly.
stop_all() {
  local i status failed=0
  [ -z "$probe" ] || kill "$probe" 2>/dev/null || true
  for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for i in "${!pids[@]}"; do
    wait_for "${pids[$i]}"
    status=$REPLY
    # 143: killed by our SIGTERM before it had installed its handlers, so while
    # it was still loading and had nothing to stop.
    if [ "$status" -ne 0 ] && [ "$status" -ne 143 ]; then
      echo "make up: ${names[$i]} exited with status $status while stopping" >&2
      last_lines "${names[$i]}"
      failed=1
    fi
  done
  pids=()
  return "$failed"
}

# Ctrl-C or SIGTERM, whenever it comes. A second one while stopping is passed
# on: the kit then exits at once without waiting for in-flight work.
on_signal() {
  local j # not i: bash scopes are dynamic and this may run inside stop_all's loop
  if [ -n "$stopping" ]; then
    echo "make up: $1 again: the services exit without waiting" >&2
    for j in "${!pids[@]}"; do kill -TERM "${pids[$j]}" 2>/dev/null || true; done
    return 0
  fi
  stopping=1
  trap - EXIT
  echo "make up: $1 received, stopping${names[*]:+ ${names[*]}}" >&2
  if stop_all; then
    echo "make up: stopped cleanly" >&2
    exit 0
  fi
  exit 1
}

# Gives up: stops what was started and exits 1.
give_up() {
  stopping=1
  trap - EXIT
  stop_all || true
  exit 1
}

# A service that exited (and was waited for): say which and why, stop the rest.
died() {
  local name=$1 status=$2 i
  stopping=1 # this run has failed whatever comes next
  for i in "${!names[@]}"; do [ "${names[$i]}" != "$name" ] || unset "pids[$i]"; done
  echo "make up: $name exited with status $status" >&2
  last_lines "$name"
  give_up
}

trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM
# Any other way out (a failed step under set -e) stops what was started.
trap 'stop_all || true' EXIT

# shellcheck source=scripts/dev-instance.sh
source scripts/dev-instance.sh
dev_instance_load create
dev_env

# host:port of a URL, default port when none is given.
hostport() { node -e 'const u=new URL(process.argv[1]); console.log(`${u.hostname.replace(/^\[|\]$/g,"")} ${u.port||process.argv[2]}`)' "$1" "$2"; }
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

missing=()
for spec in "NATS with JetStream|$SPOOL_NATS_URL|4222|SPOOL_NATS_URL" \
            "PostgreSQL|$SPOOL_DATABASE_URL|5432|SPOOL_DATABASE_URL" \
            "Redis|$SPOOL_REDIS_URL|6379|SPOOL_REDIS_URL"; do
  IFS='|' read -r name url port var <<<"$spec"
  read -r h p < <(hostport "$url" "$port")
  reachable "$h" "$p" || missing+=("  $name: nothing listens on $h:$p (start it, or set $var)")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make up: missing dependencies:" >&2
  printf '%s\n' "${missing[@]}" >&2
  exit 1
fi

# Something already on a service's port (often a make up still running) would
# answer the health checks below for a service that in fact failed to bind.
for spec in "${services[@]}"; do
  IFS='|' read -r name grpc metrics _ <<<"$spec"
  for port in "$grpc" "$metrics"; do
    if reachable 127.0.0.1 "$port"; then
      echo "make up: 127.0.0.1:$port ($name) is already in use: is another make up running?" >&2
      exit 1
    fi
  done
done

secrets=.dev/secrets
mkdir -p "$secrets" "$logs"
chmod 700 .dev "$secrets"
# make clean-dev refuses to delete the state while this runs.
echo $$ >.dev/up.pid
gen() { [ -s "$secrets/$1" ] || { (umask 077; node -e "$2" > "$secrets/$1"); echo "generated $secrets/$1"; }; }
gen master-keys "console.log('dev1:' + require('crypto').randomBytes(32).toString('base64'))"
gen token-secret "console.log(require('crypto').randomBytes(32).toString('base64'))"
gen bootstrap-admin-password "console.log(require('crypto').randomBytes(18).toString('base64url'))"

# The projections' database, created once.
(cd packages/kit && node --input-type=module -e '
  import postgres from "postgres";
  const target = new URL(process.env.SPOOL_DATABASE_URL);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) { console.error(`make up: unusual database name ${name}; create it yourself`); process.exit(1); }
  const admin = new URL(target); admin.pathname = "/postgres";
  const sql = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  const [exists] = await sql`SELECT 1 FROM pg_database WHERE datname = ${name}`;
  if (!exists) { await sql.unsafe(`CREATE DATABASE ${name}`); console.log(`created database ${name}`); }
  await sql.end();
') 2>&1 || { echo "make up: cannot reach or prepare PostgreSQL at $SPOOL_DATABASE_URL" >&2; exit 1; }

database=${SPOOL_DATABASE_URL##*/}
database=${database%%\?*}
echo "make up: instance $instance ($dev_instance_file): NATS prefix $SPOOL_STREAM_PREFIX, database $database," \
  "Redis prefixes $(dev_redis_prefix auth) $(dev_redis_prefix gen) $(dev_redis_prefix files)"

export SPOOL_ENV=${SPOOL_ENV:-development}
export SPOOL_GRPC_HOST=127.0.0.1
export SPOOL_MASTER_KEYS_FILE=$secrets/master-keys
export SPOOL_TOKEN_SECRET_FILE=$secrets/token-secret
export SPOOL_BOOTSTRAP_ADMIN_PASSWORD_FILE=$secrets/bootstrap-admin-password
export SPOOL_BOOTSTRAP_ADMIN_EMAIL=${SPOOL_BOOTSTRAP_ADMIN_EMAIL:-admin@spool.local}
# file-ingest: blobs and scratch space in this checkout's .dev/ (make clean-dev removes them);
# the development scanner ("none") passes every file as clean: production requires clamd.
export SPOOL_BLOB_DIR=${SPOOL_BLOB_DIR:-$PWD/.dev/blobs}
export SPOOL_WORK_DIR=${SPOOL_WORK_DIR:-$PWD/.dev/file-work}
# generation-stream checks StartGeneration's file ids against the FILES events file-ingest writes.
export SPOOL_FILES_ENABLED=${SPOOL_FILES_ENABLED:-true}

# Each service runs in its own session (setsid), so a Ctrl-C on the terminal
# reaches this script only and each service gets exactly one SIGTERM, from
# stop_all. Its output goes to the terminal and to .dev/logs/<name>.log; tee
# ignores the signals so that it writes the service's output to the end.
# TypeScript runs through tsx's loader inside this node, which carries the
# @spool/source condition: workspace packages resolve to their sources, and a
# fresh clone has no build output (tsx's CLI would start a child node without
# the condition, which then looks for packages/*/dist).
start() {
  local name=$1 grpc=$2 metrics=$3 short=$4
  : >"$logs/$name.log"
  SPOOL_GRPC_PORT=$grpc SPOOL_METRICS_PORT=$metrics SPOOL_REDIS_PREFIX=$(dev_redis_prefix "$short") \
    setsid node --conditions=@spool/source --import tsx "services/$name/src/main.ts" </dev/null \
    > >(trap '' INT TERM; exec tee -a "$logs/$name.log") 2>&1 &
  pids+=($!)
  names+=("$name")
}

# Waits until the service answers SERVING to a gRPC health check. Every wait is
# on a background job, so a signal is handled at once, even during start-up.
wait_serving() {
  local name=$1 grpc=$2 pid=$3 deadline=$((SECONDS + timeout_s)) status last
  while :; do
    node scripts/grpc-health.mjs "127.0.0.1:$grpc" >"$logs/.health" 2>&1 &
    probe=$!
    if wait "$probe"; then
      # SERVING, and from our process (the port was free before it started).
      kill -0 "$pid" 2>/dev/null && return 0
    fi
    probe=
    last=$(cat "$logs/.health" 2>/dev/null || true)
    if ! kill -0 "$pid" 2>/dev/null; then
      wait_for "$pid"
      died "$name" "$REPLY"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "make up: $name is not SERVING on 127.0.0.1:$grpc after ${timeout_s}s (health: ${last:-no answer})" >&2
      last_lines "$name"
      give_up
    fi
    sleep 0.5 &
    wait $! || true
  done
}

for spec in "${services[@]}"; do
  IFS='|' read -r name grpc metrics short <<<"$spec"
  start "$name" "$grpc" "$metrics" "$short"
  wait_serving "$name" "$grpc" "${pids[-1]}"
done

cat <<MSG
make up: ready: instance $instance: auth on 127.0.0.1:50061, file-ingest on 127.0.0.1:50063, generation-stream on 127.0.0.1:50062 (logs in $logs/; Ctrl-C stops them all)
From another terminal, the quick start in README.md, starting with:
  bin/spool login --email $SPOOL_BOOTSTRAP_ADMIN_EMAIL --password-file $secrets/bootstrap-admin-password
MSG

# Until a signal, or until a service exits on its own (which stops the others).
status=0
exited=
wait -n -p exited "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
  [ "${pids[$i]}" != "$exited" ] || died "${names[$i]}" "$status"
done
echo "make up: a service exited with status $status" >&2
give_up
