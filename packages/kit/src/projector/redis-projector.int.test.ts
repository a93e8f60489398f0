import { useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyRedisWrites, type RedisWrite } from "./index.js";

// The Redis projector's behaviour is in sink-contract.int.test.ts, shared with
// the PostgreSQL one; this file tests its apply script alone.
const infra = useInfra("redisproj");
let redis: Redis;

beforeAll(() => {
  redis = new Redis(infra().redisUrl);
});
afterAll(() => {
  redis?.disconnect();
});

describe("Redis projector", () => {
  it("applies a batch and its checkpoint in one script: the same batch twice has one effect", async () => {
    const p = `${infra().redisPrefix}script:`;
    const meta = `${p}meta`;
    await redis.hset(meta, "version", "1");
    const batch = {
      metaKey: meta,
      versionField: "version",
      version: 1,
      checkpointField: "checkpoint",
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
    expect(await applyRedisWrites(redis, batch)).toBe("applied");
    expect(await applyRedisWrites(redis, batch)).toBe("already");
    // A redelivery starting inside what was applied is refused too.
    expect(await applyRedisWrites(redis, { ...batch, first: 3, last: 4 })).toBe("already");
    expect(await redis.hgetall(`${p}h`)).toEqual({ a: "5", b: "x" });
    expect(await redis.hget(meta, "checkpoint")).toBe("3");
    // A version the metadata no longer names (retired by a rebuild's swap) writes nothing.
    expect(await applyRedisWrites(redis, { ...batch, version: 2, first: 4, last: 4 })).toBe("retired");
    expect(await redis.hget(meta, "checkpoint")).toBe("3");

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
    expect(await redis.hget(meta, "checkpoint")).toBe("3");
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
    expect(await applyRedisWrites(redis, reuse)).toBe("applied");
    expect(await redis.hgetall(`${p}s`)).toEqual({ n: "2" });

    // Mode "once" (a dead letter's replay) applies under its guard key, once.
    const once = {
      ...batch,
      mode: "once" as const,
      guardKey: `${p}guard`,
      writes: [{ op: "incrby", key: "n", by: 1 }] satisfies RedisWrite[],
    };
    expect(await applyRedisWrites(redis, once)).toBe("applied");
    expect(await applyRedisWrites(redis, once)).toBe("already");
    expect(await redis.get(`${p}n`)).toBe("1");
  });
});
