// node scripts/drop-dev-state.mjs --nats URL --stream-prefix P --postgres URL --database NAME --redis URL --redis-prefix R
//
// Deletes one development instance's state (scripts/dev-instance.sh names it):
// the NATS streams P_<NAME> whose subjects are all under P., the KV buckets and
// object stores P_<NAME> (streams KV_P_<NAME>, OBJ_P_<NAME>), where <NAME> is
// upper case as every Spool stream's; the database NAME (on the server of the
// --postgres URL); the Redis keys under R. Nothing else: other instances and
// the test suites' prefixes share these servers. The database goes first: when
// it is still in use (the instance's services still running) PostgreSQL refuses,
// and then nothing else is deleted either.
//
// Prints what it deleted; exits 1 if any part failed (the others are still
// attempted), 2 on bad arguments. Plain JavaScript: runs on a fresh clone
// without a build; used by scripts/clean-dev.sh (make clean-dev).
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

// The clients are dependencies of the kit, not of the workspace root.
const require = createRequire(new URL("../packages/kit/package.json", import.meta.url));

const usage =
  "usage: node scripts/drop-dev-state.mjs --nats URL --stream-prefix P --postgres URL --database NAME --redis URL --redis-prefix R\n";
let args;
try {
  const names = ["nats", "stream-prefix", "postgres", "database", "redis", "redis-prefix"];
  args = parseArgs({ options: Object.fromEntries(names.map((n) => [n, { type: "string" }])) }).values;
  const missing = names.filter((n) => !args[n]);
  if (missing.length > 0) throw new Error(`missing --${missing.join(", --")}`);
  // The same rule as the kit's Namespace, minus the empty prefix (which would be every unprefixed stream).
  if (!/^[A-Za-z0-9_-]+$/.test(args["stream-prefix"])) throw new Error("bad --stream-prefix");
  if (
    !/^[a-z_][a-z0-9_]*$/.test(args.database) ||
    ["postgres", "template0", "template1"].includes(args.database)
  )
    throw new Error("bad --database");
} catch (e) {
  process.stderr.write(`${e.message}\n${usage}`);
  process.exit(2);
}

class InUse extends Error {}

const failures = [];
async function part(what, run) {
  try {
    process.stdout.write(`${await run()}\n`);
  } catch (e) {
    process.stderr.write(`cannot delete ${what}: ${e.message}\n`);
    if (e instanceof InUse) process.exit(1);
    failures.push(what);
  }
}

async function dropStreams() {
  const { connect } = require("@nats-io/transport-node");
  const { jetstreamManager } = require("@nats-io/jetstream");
  const p = args["stream-prefix"];
  const ownName = (name, head) => name.startsWith(head) && /^[A-Z][A-Z0-9_]*$/.test(name.slice(head.length));
  const ours = (name) => [`${p}_`, `KV_${p}_`, `OBJ_${p}_`].some((head) => ownName(name, head));
  const nc = await connect({ servers: args.nats, timeout: 5_000, maxReconnectAttempts: 0 });
  try {
    const jsm = await jetstreamManager(nc);
    const deleted = [];
    for await (const info of jsm.streams.list()) {
      const { name, subjects = [] } = info.config;
      if (!ours(name)) continue;
      // A stream of this prefix carries only its subjects (KV and object stores: their own $KV./$O. ones).
      if (name.startsWith(`${p}_`) && !subjects.every((s) => s.startsWith(`${p}.`))) {
        process.stderr.write(
          `left stream ${name} alone: subjects ${subjects.join(", ")} are not all under ${p}.\n`,
        );
        continue;
      }
      await jsm.streams.delete(name);
      deleted.push(name);
    }
    return deleted.length > 0
      ? `deleted NATS streams ${deleted.join(", ")}`
      : `no NATS streams with prefix ${p}`;
  } finally {
    await nc.close();
  }
}

async function dropDatabase() {
  const postgres = require("postgres");
  const server = new URL(args.postgres);
  server.pathname = "/postgres";
  const sql = postgres(server.toString(), { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    const [exists] = await sql`SELECT 1 FROM pg_database WHERE datname = ${args.database}`;
    if (!exists) return `no database ${args.database}`;
    // No FORCE: connections left mean the services still run, and pulling the database away would hide that.
    await sql.unsafe(`DROP DATABASE ${args.database}`);
    return `dropped database ${args.database}`;
  } catch (e) {
    if (e.code === "55006")
      throw new InUse(
        `it is in use: are this instance's services still running? Nothing deleted (${e.message})`,
      );
    throw e;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function dropKeys() {
  const { Redis } = require("ioredis");
  const prefix = args["redis-prefix"];
  const redis = new Redis(args.redis, {
    lazyConnect: true,
    connectTimeout: 5_000,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  try {
    await redis.connect();
    const pattern = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}*`;
    let cursor = "0";
    let count = 0;
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) count += await redis.unlink(...keys);
    } while (cursor !== "0");
    return `deleted ${count} Redis keys under ${prefix}`;
  } finally {
    redis.disconnect();
  }
}

await part(`database ${args.database}`, dropDatabase);
await part(`the NATS streams of prefix ${args["stream-prefix"]}`, dropStreams);
await part(`the Redis keys under ${args["redis-prefix"]}`, dropKeys);
process.exit(failures.length > 0 ? 1 : 0);
