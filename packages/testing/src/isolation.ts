import { randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import postgres from "postgres";
import type { InfraUrls } from "./infra.js";

/**
 * What one test file owns: a stream prefix, a database and a Redis key
 * prefix of its own, so files run in parallel without seeing each other.
 */
export interface Isolated {
  /** Unique per test file: the stream/subject prefix and part of the other names. */
  id: string;
  streamPrefix: string;
  natsUrl: string;
  /** URL of a database created for this file. */
  databaseUrl: string;
  databaseName: string;
  redisUrl: string;
  redisPrefix: string;
  /** Environment for a child process running a service against this file's slice. */
  env: Record<string, string>;
  /** Deletes the streams, database and keys. */
  cleanup(): Promise<void>;
}

export async function isolate(urls: InfraUrls, label = "t"): Promise<Isolated> {
  const id =
    `${label.replace(/[^a-z0-9]/gi, "").slice(0, 12) || "t"}${randomBytes(4).toString("hex")}`.toLowerCase();
  const databaseName = `spool_test_${id}`;
  const admin = postgres(urls.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${databaseName}`);
  } finally {
    await admin.end();
  }
  const db = new URL(urls.databaseUrl);
  db.pathname = `/${databaseName}`;
  const databaseUrl = db.toString();
  const redisPrefix = `${id}:`;
  return {
    id,
    streamPrefix: id,
    natsUrl: urls.natsUrl,
    databaseUrl,
    databaseName,
    redisUrl: urls.redisUrl,
    redisPrefix,
    env: {
      SPOOL_ENV: "test",
      SPOOL_NATS_URL: urls.natsUrl,
      SPOOL_DATABASE_URL: databaseUrl,
      SPOOL_REDIS_URL: urls.redisUrl,
      SPOOL_STREAM_PREFIX: id,
      SPOOL_REDIS_PREFIX: redisPrefix,
    },
    cleanup: async () => {
      await Promise.allSettled([
        deleteStreams(urls.natsUrl, id),
        dropDatabase(urls.databaseUrl, databaseName),
        deleteKeys(urls.redisUrl, redisPrefix),
      ]);
    },
  };
}

async function deleteStreams(natsUrl: string, prefix: string): Promise<void> {
  let nc: NatsConnection | undefined;
  try {
    nc = await connect({ servers: natsUrl });
    const jsm = await jetstreamManager(nc);
    for await (const name of jsm.streams.names()) {
      // KV buckets and object stores live in streams named KV_<bucket> and OBJ_<bucket>.
      if ([`${prefix}_`, `KV_${prefix}_`, `OBJ_${prefix}_`].some((p) => name.startsWith(p))) {
        await jsm.streams.delete(name);
      }
    }
  } finally {
    await nc?.close();
  }
}

async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

async function deleteKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}
