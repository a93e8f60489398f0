import type { NatsConnection } from "@nats-io/transport-node";
import { eventually, useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Incremented } from "../../test/counter.js";
import { incrementFor, Ledger, type Slice, slice } from "../../test/projector-counter.js";
import { FailedPreconditionError } from "../errors.js";
import type { RecordedEvent } from "../events.js";
import { createLogger } from "../logger.js";
import { connectNats } from "../nats.js";
import { applyRedisWrites, RedisProjector, type RedisProjectorOptions, type RedisWrite } from "./index.js";

const infra = useInfra("redisproj");
const logger = createLogger({
  service: "redis-projector-test",
  level: process.env.SPOOL_TEST_LOG ?? "silent",
});
let nc: NatsConnection;
let redis: Redis;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  nc = await connectNats({ url: infra().natsUrl, name: "redis-projector-test" });
  redis = new Redis(infra().redisUrl);
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  redis?.disconnect();
  await nc?.close();
});

async function setUp(label: string): Promise<Slice> {
  const s = await slice(nc, infra(), label);
  cleanups.push(() => s.sql.end());
  return s;
}

/** Totals per subject in a hash, increment ids in a set; poisoned ids throw until fixed. */
function counterWrites(poison = new Set<string>(), fixed = { value: false }) {
  return (events: readonly RecordedEvent[]): RedisWrite[] =>
    events.filter(Incremented.is).flatMap((event) => {
      const e = Incremented.decode(event.data);
      if (poison.has(e.incrementId) && !fixed.value) throw new Error(`poisoned increment ${e.incrementId}`);
      return [
        { op: "hincrby", key: "totals", field: event.subject, by: e.amount },
        { op: "sadd", key: "ids", member: e.incrementId },
        { op: "incrby", key: "count", by: 1 },
      ] satisfies RedisWrite[];
    });
}

function projector(
  s: Slice,
  label: string,
  writes: ReturnType<typeof counterWrites>,
  options: Partial<RedisProjectorOptions> & { strict?: boolean } = {},
): RedisProjector {
  const { strict, ...rest } = options;
  const p = new RedisProjector(
    { name: "counter", stream: "EX", writes, ...(strict ? { strict } : {}) },
    {
      store: s.store,
      sql: s.sql,
      deadLetters: s.deadLetters,
      redis,
      keyPrefix: `${infra().redisPrefix}${label}:`,
      logger,
      standbyRetryMs: 100,
      pollIntervalMs: 100,
      ...rest,
    },
  );
  cleanups.push(() => p.stop());
  return p;
}

async function readModel(prefix: string) {
  const [totals, ids, count] = await Promise.all([
    redis.hgetall(`${prefix}totals`),
    redis.smembers(`${prefix}ids`),
    redis.get(`${prefix}count`),
  ]);
  return { totals, ids: ids.sort(), count: Number(count ?? 0) };
}

function expectedModel(ledger: Ledger) {
  return {
    totals: Object.fromEntries([...ledger.subjects].map(([k, v]) => [k, v.total.toString()])),
    ids: [...ledger.ids].sort(),
    count: ledger.ids.length,
  };
}

describe("Redis projector", () => {
  it("applies a batch and its checkpoint in one script: the same batch twice has one effect", async () => {
    const p = `${infra().redisPrefix}script:`;
    const batch = {
      markerKey: `${p}checkpoint`,
      mode: "batch" as const,
      first: 1,
      last: 3,
      keyPrefix: p,
      writes: [
        { op: "hincrby", key: "h", field: "a", by: 5n },
        { op: "hset", key: "h", field: "b", value: "x" },
        { op: "set", key: "s", value: "v" },
        { op: "zadd", key: "z", score: 2, member: "m" },
      ] satisfies RedisWrite[],
    };
    expect(await applyRedisWrites(redis, batch)).toBe(true);
    expect(await applyRedisWrites(redis, batch)).toBe(false);
    // A redelivery starting inside what was applied is refused too.
    expect(await applyRedisWrites(redis, { ...batch, first: 3, last: 4 })).toBe(false);
    expect(await redis.hgetall(`${p}h`)).toEqual({ a: "5", b: "x" });
    expect(await redis.get(`${p}checkpoint`)).toBe("3");

    // A write that would fail halfway refuses the whole batch before writing anything.
    const bad = {
      ...batch,
      first: 4,
      last: 4,
      writes: [
        { op: "hincrby", key: "h", field: "a", by: 1 },
        { op: "hincrby", key: "s", field: "f", by: 1 },
      ] satisfies RedisWrite[],
    };
    await expect(applyRedisWrites(redis, bad)).rejects.toThrow(/WRONGTYPE/);
    const notInteger = {
      ...bad,
      writes: [{ op: "hincrby", key: "h", field: "b", by: 1 }] satisfies RedisWrite[],
    };
    await expect(applyRedisWrites(redis, notInteger)).rejects.toThrow(/not an integer/);
    expect(await redis.hgetall(`${p}h`)).toEqual({ a: "5", b: "x" });
    expect(await redis.get(`${p}checkpoint`)).toBe("3");
    // Checks see the batch's own earlier writes: a key deleted then used as a hash is fine.
    const reuse = {
      ...batch,
      first: 4,
      last: 5,
      writes: [
        { op: "del", key: "s" },
        { op: "hincrby", key: "s", field: "n", by: 2 },
      ] satisfies RedisWrite[],
    };
    expect(await applyRedisWrites(redis, reuse)).toBe(true);
    expect(await redis.hgetall(`${p}s`)).toEqual({ n: "2" });
  });

  it("feeds a Redis read model end to end, exactly once across a restart", async () => {
    const s = await setUp("redis_e2e");
    const prefix = `${infra().redisPrefix}e2e:`;
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 2_000);
    const first = projector(s, "e2e", counterWrites(), { batchSize: 200 });
    await first.start();
    await first.waitFor(ledger.lastSequence, 10_000);
    expect(await readModel(prefix)).toEqual(expectedModel(ledger));
    expect(await first.status()).toMatchObject({
      state: "running",
      checkpoint: ledger.lastSequence,
      lag: 0,
      deadLetters: 0,
    });
    expect(await redis.get(first.checkpointKey)).toBe(String(ledger.lastSequence));
    await first.stop();

    await ledger.appendMany(s.store, 500, { prefix: "r" });
    const second = projector(s, "e2e", counterWrites(), { batchSize: 200 });
    await second.start();
    await second.waitFor(ledger.lastSequence, 10_000);
    expect(await readModel(prefix)).toEqual(expectedModel(ledger));
  });

  it("dead-letters a failing event, replays it once; a strict one halts instead", async () => {
    const s = await setUp("redis_poison");
    const prefix = `${infra().redisPrefix}poison:`;
    const fixed = { value: false };
    const ledger = new Ledger();
    await ledger.appendMany(s.store, 10, { parallel: 1, skip: (id) => id === "i4" });
    const p = projector(s, "poison", counterWrites(new Set(["i4"]), fixed), { maxAttempts: 2 });
    await p.start();
    await p.waitFor(10, 10_000);
    expect(await readModel(prefix)).toEqual(expectedModel(ledger));
    const [entry] = (await s.deadLetters.list({ consumer: "counter", limit: 5 })).items;
    expect(entry).toMatchObject({ streamSequence: 5, attempts: 2 });
    expect(entry?.error).toContain("poisoned increment i4");

    fixed.value = true;
    await p.replay(entry!);
    const i4 = incrementFor(4);
    ledger.record(i4.subject, i4.id, i4.amount, 5);
    expect(await readModel(prefix)).toEqual(expectedModel(ledger));
    await expect(p.replay(entry!)).rejects.toBeInstanceOf(FailedPreconditionError);
    expect(await readModel(prefix)).toEqual(expectedModel(ledger));
    await p.stop();

    // Strict: same kind of poison on a fresh model halts before it.
    const strictSlice = await setUp("redis_strict");
    await new Ledger().appendMany(strictSlice.store, 10, { parallel: 1 });
    const strict = projector(strictSlice, "strict", counterWrites(new Set(["i4"])), {
      maxAttempts: 2,
      strict: true,
    });
    await strict.start();
    await eventually(async () => (await strict.status()).state === "halted", { timeoutMs: 10_000 });
    expect(strict.healthy()).toBe(false);
    expect(await strict.status()).toMatchObject({ checkpoint: 4, deadLetters: 0 });
    expect((await readModel(`${infra().redisPrefix}strict:`)).count).toBe(4);
  });
});
