# Sourced by scripts/up.sh and scripts/clean-dev.sh (bash, from the checkout's
# root): this checkout's development instance.
#
# The state of `make up` (NATS streams and KV buckets, the PostgreSQL database,
# Redis keys) lives on servers that every checkout on the machine may share,
# while its secrets live in this checkout's .dev/. So the state belongs to
# .dev/ too: a random id in .dev/instance, generated on first start, names it.
# A second clone, or a deleted .dev/, then gets a fresh and independent stack
# instead of finding a signing key ring sealed with another master key.
#
# Instance <id> uses:
#   NATS     streams, subjects and KV buckets prefixed spool_<id> (SPOOL_STREAM_PREFIX)
#   Postgres database spool_<id> (in SPOOL_DATABASE_URL)
#   Redis    keys under spool:<id>: (each service's SPOOL_REDIS_PREFIX: spool:<id>:auth:, spool:<id>:gen:, spool:<id>:files:)
# A variable the user sets explicitly wins; then that state is not named after
# the instance, and scripts/clean-dev.sh leaves it alone.

dev_instance_file=.dev/instance

# The instance id in $instance: read from .dev/instance, or, with "create",
# generated there when absent. Without "create" and without the file, empty.
dev_instance_load() {
  instance=
  if [ ! -e "$dev_instance_file" ]; then
    [ "${1:-}" = create ] || return 0
    mkdir -p .dev
    chmod 700 .dev
    (umask 077 && od -An -N4 -tx1 /dev/urandom | tr -d ' \n' >"$dev_instance_file" && echo >>"$dev_instance_file")
    echo "generated $dev_instance_file"
  fi
  instance=$(tr -d '[:space:]' <"$dev_instance_file")
  # It becomes part of stream, subject, database and key names.
  if ! [[ $instance =~ ^[a-z0-9]{1,16}$ ]]; then
    echo "$dev_instance_file: expected 1-16 lowercase letters or digits, found '${instance:0:40}'" >&2
    echo "(fix it, or remove .dev/ to start a fresh instance)" >&2
    return 1
  fi
}

# The names instance $1 gives its state.
dev_instance_names() {
  instance_stream_prefix=spool_$1
  instance_database=spool_$1
  instance_redis_prefix=spool:$1:
}

# The servers (loopback unless set), and the names of instance $instance's
# state unless set explicitly. The Redis prefix is per service: see
# dev_redis_prefix.
dev_env() {
  export SPOOL_NATS_URL=${SPOOL_NATS_URL:-nats://127.0.0.1:4222}
  export SPOOL_REDIS_URL=${SPOOL_REDIS_URL:-redis://127.0.0.1:6379}
  dev_instance_names "$instance"
  export SPOOL_DATABASE_URL=${SPOOL_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$instance_database}
  export SPOOL_STREAM_PREFIX=${SPOOL_STREAM_PREFIX:-$instance_stream_prefix}
}

# SPOOL_REDIS_PREFIX for service $1 (its short name: auth, gen, files): the user's
# when set (then shared by every service, as without make up), else the
# instance's.
dev_redis_prefix() {
  echo "${SPOOL_REDIS_PREFIX:-$instance_redis_prefix$1:}"
}
