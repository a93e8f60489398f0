import { useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserLimitError, UserLimits } from "./user-limits.js";

const infra = useInfra("genlimits");
let redis: Redis;
beforeAll(() => {
  redis = new Redis(infra().redisUrl);
});
afterAll(() => {
  redis?.disconnect();
});

describe("per-user generation limits", () => {
  it("20 parallel starts: exactly the active limit succeed, the rest are refused with retry info", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, {
      maxActive: 2,
      maxStartsPerWindow: 100,
      windowMs: 60_000,
      activeTtlMs: 60_000,
    });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => limits.reserve("u1", `g${i}`)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(2);
    for (const r of results.filter((x) => x.status === "rejected")) {
      const e = (r as PromiseRejectedResult).reason as UserLimitError;
      expect(e).toBeInstanceOf(UserLimitError);
      expect(e.limit).toBe("active");
      expect(e.retryAfterMs).toBeGreaterThan(0);
    }
    expect(await limits.active("u1")).toBe(2);
    // Another user is not affected; releasing a slot frees it.
    await limits.reserve("u2", "x1");
    const held = (await redis.zrange(`${infra().redisPrefix}active:u1`, 0, -1))[0]!;
    await limits.release("u1", held);
    await limits.reserve("u1", "g-next");
    // Reserving the same generation again is idempotent.
    await limits.reserve("u1", "g-next");
    expect(await limits.active("u1")).toBe(2);
  });

  it("starts per window are counted exactly under parallel load", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, {
      maxActive: 100,
      maxStartsPerWindow: 5,
      windowMs: 60_000,
      activeTtlMs: 60_000,
    });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => limits.reserve("u3", `s${i}`)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(5);
    const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect((refused.reason as UserLimitError).limit).toBe("window");
  });

  it("an entry left by a dead replica ages out", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, {
      maxActive: 1,
      maxStartsPerWindow: 100,
      windowMs: 60_000,
      activeTtlMs: 1_000,
    });
    const t = Date.now();
    await limits.reserve("u4", "a", t);
    await expect(limits.reserve("u4", "b", t + 10)).rejects.toBeInstanceOf(UserLimitError);
    await limits.reserve("u4", "b", t + 1_001);
  });
});
