#!/usr/bin/env bash
# make clean-dev: resets this checkout's development stack. Deletes its
# instance's state on the servers (NATS streams and KV buckets spool_<id>_*,
# database spool_<id>, Redis keys spool:<id>:*; see scripts/dev-instance.sh),
# then .dev/ (instance id, secrets, logs). The next make up starts a fresh,
# independent stack. Run it with the same SPOOL_NATS_URL, SPOOL_DATABASE_URL
# (its server) and SPOOL_REDIS_URL as make up. State under an explicitly set
# SPOOL_STREAM_PREFIX, database name or SPOOL_REDIS_PREFIX is not named after
# the instance and is left alone (it says so). Refuses while this checkout's
# make up runs; keeps .dev/ when a deletion failed, so it can be run again.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/dev-instance.sh
source scripts/dev-instance.sh

# make up writes its pid to .dev/up.pid; a stale file (make up gone, pid reused) is ignored.
if [ -s .dev/up.pid ]; then
  pid=$(cat .dev/up.pid)
  if [[ $pid =~ ^[0-9]+$ ]] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(pwd -P)" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'scripts/up\.sh'; then
    echo "clean-dev: make up is running in this checkout (pid $pid): stop it first (Ctrl-C)" >&2
    exit 1
  fi
fi

dev_instance_load
if [ -z "$instance" ]; then
  echo "clean-dev: no $dev_instance_file: no instance state to delete"
else
  # The user's own names, shown before dev_env fills in the instance's.
  for var in SPOOL_STREAM_PREFIX SPOOL_DATABASE_URL SPOOL_REDIS_PREFIX; do
    [ -z "${!var:-}" ] || echo "clean-dev: $var is set: only the state named after instance $instance is deleted, not what $var names"
  done
  dev_env
  echo "clean-dev: deleting instance $instance"
  node scripts/drop-dev-state.mjs --nats "$SPOOL_NATS_URL" --stream-prefix "$instance_stream_prefix" \
    --postgres "$SPOOL_DATABASE_URL" --database "$instance_database" \
    --redis "$SPOOL_REDIS_URL" --redis-prefix "$instance_redis_prefix" ||
    { echo "clean-dev: instance $instance is not fully deleted; .dev/ kept (run make clean-dev again)" >&2; exit 1; }
fi
if [ -e .dev ]; then
  rm -rf .dev
  echo "clean-dev: removed .dev/"
fi
