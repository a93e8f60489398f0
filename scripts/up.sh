#!/usr/bin/env bash
# make up: run the Spool stack on this machine, against the NATS (JetStream),
# PostgreSQL and Redis it finds on loopback (or at SPOOL_NATS_URL,
# SPOOL_DATABASE_URL, SPOOL_REDIS_URL). Development mode: gRPC binds to
# loopback only, secrets are generated once into .dev/secrets/.
set -euo pipefail
cd "$(dirname "$0")/.."

export SPOOL_NATS_URL=${SPOOL_NATS_URL:-nats://127.0.0.1:4222}
export SPOOL_DATABASE_URL=${SPOOL_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/spool}
export SPOOL_REDIS_URL=${SPOOL_REDIS_URL:-redis://127.0.0.1:6379}

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

secrets=.dev/secrets
mkdir -p "$secrets"
chmod 700 .dev "$secrets"
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

export SPOOL_ENV=${SPOOL_ENV:-development}
export SPOOL_GRPC_HOST=127.0.0.1
export SPOOL_MASTER_KEYS_FILE=$secrets/master-keys
export SPOOL_TOKEN_SECRET_FILE=$secrets/token-secret
export SPOOL_BOOTSTRAP_ADMIN_PASSWORD_FILE=$secrets/bootstrap-admin-password
export SPOOL_BOOTSTRAP_ADMIN_EMAIL=${SPOOL_BOOTSTRAP_ADMIN_EMAIL:-admin@spool.local}

# exec: the background job is node itself, so signals reach it.
run() { exec node --conditions=@spool/source node_modules/tsx/dist/cli.mjs "$@"; }
pids=()
stop() { trap - INT TERM EXIT; kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
# Ctrl-C reaches the services themselves (same process group): just wait for their graceful stop.
trap 'trap - INT TERM EXIT; wait || true' INT
trap stop TERM EXIT

run services/auth/src/main.ts &
pids+=($!)
# generation-stream verifies tokens against the keys auth publishes at start.
for _ in $(seq 1 120); do reachable 127.0.0.1 50061 && break; sleep 0.5; done
SPOOL_GRPC_PORT=50062 SPOOL_METRICS_PORT=9462 run services/generation-stream/src/main.ts &
pids+=($!)
for _ in $(seq 1 120); do reachable 127.0.0.1 50062 && break; sleep 0.5; done

cat <<MSG
auth on 127.0.0.1:50061, generation-stream on 127.0.0.1:50062 (Ctrl-C stops both).
From another terminal:
  bin/spool login --email $SPOOL_BOOTSTRAP_ADMIN_EMAIL --password-file $secrets/bootstrap-admin-password
  bin/spool generate --access-token <accessToken> --prompt "hello"
MSG
# When either service exits, stop the other.
wait -n "${pids[@]}"
