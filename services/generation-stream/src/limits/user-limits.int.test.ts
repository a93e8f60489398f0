import { setTimeout as sleep } from "node:timers/promises";
import { useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserLimitError, type UserLimitPolicy, UserLimits } from "./user-limits.js";

const infra = useInfra("genlimits");
let redis: Redis;
beforeAll(() => {
  redis = new Redis(infra().redisUrl);
});
afterAll(() => {
  redis?.disconnect();
});

const policy = (p: Partial<UserLimitPolicy>): UserLimitPolicy => ({
  maxActive: 100,
  maxStartsPerWindow: 100,
  windowMs: 60_000,
  activeTtlMs: 60_000,
  activeRetryMs: 1_000,
  ...p,
});

/** Reserves in parallel; the number reserved and the refusals. */
async function reserveAll(limits: UserLimits, user: string, ids: string[]) {
  const rs = await Promise.allSettled(ids.map((id) => limits.reserve(user, id)));
  const refused = rs.flatMap((r) => (r.status === "rejected" ? [r.reason as UserLimitError] : []));
  for (const e of refused) expect(e).toBeInstanceOf(UserLimitError);
  return { ok: ids.length - refused.length, refused };
}
const ids = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}`);

describe("per-user generation limits", () => {
  it("20 parallel starts: exactly the active limit succeed, the rest are refused with retry info", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, policy({ maxActive: 2 }));
    const { ok, refused } = await reserveAll(limits, "u1", ids("g", 20));
    expect(ok).toBe(2);
    for (const e of refused) {
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

  it("the active refusal advises a short retry (a slot frees when a generation ends), not the slot's expiry", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, policy({ maxActive: 1, activeRetryMs: 1_000 }));
    await limits.reserve("u5", "a");
    const e = (await limits.reserve("u5", "b").catch((x) => x)) as UserLimitError;
    expect(e.limit).toBe("active");
    expect(e.retryAfterMs).toBe(1_000);
    // Configured to none: no retry-after at all.
    const none = new UserLimits(redis, infra().redisPrefix, policy({ maxActive: 1, activeRetryMs: 0 }));
    expect(((await none.reserve("u5", "c").catch((x) => x)) as UserLimitError).retryAfterMs).toBeUndefined();
  });

  it("starts per window are counted exactly under parallel load", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, policy({ maxStartsPerWindow: 5 }));
    const { ok, refused } = await reserveAll(limits, "u3", ids("s", 20));
    expect(ok).toBe(5);
    for (const e of refused) {
      expect(e.limit).toBe("window");
      // 5 per minute: one start comes back every 12 s.
      expect(e.retryAfterMs).toBeLessThanOrEqual(12_000);
      expect(e.retryAfterMs).toBeGreaterThan(10_000);
    }
  });

  it("the start rate lets no 2× through across a window boundary, and its retry-after is the true one", async () => {
    const limits = new UserLimits(
      redis,
      infra().redisPrefix,
      policy({ maxStartsPerWindow: 5, windowMs: 2_000 }),
    );
    const interval = 2_000 / 5;
    // 300 ms before a 2 s boundary of the client clock (where fixed windows were cut), then 50 ms after it.
    await sleep(2_000 - (Date.now() % 2_000) + 1_700);
    const t0 = Date.now();
    expect((await reserveAll(limits, "u6", ids("a", 5))).ok).toBe(5);
    await sleep(2_000 - (Date.now() % 2_000) + 50);
    const second = await reserveAll(limits, "u6", ids("b", 5));
    expect(second.ok).toBeLessThanOrEqual(Math.floor((Date.now() - t0) / interval));
    expect(second.ok).toBeLessThan(5);
    const r = second.refused[0]!;
    expect(r.limit).toBe("window");
    expect(r.retryAfterMs).toBeGreaterThan(0);
    expect(r.retryAfterMs).toBeLessThanOrEqual(interval);
    await sleep(r.retryAfterMs!);
    await limits.reserve("u6", "after-retry");
  });

  it("a refusal takes nothing: not a start when the slots are full, not a slot when the rate refuses", async () => {
    const limits = new UserLimits(
      redis,
      infra().redisPrefix,
      policy({ maxActive: 1, maxStartsPerWindow: 2 }),
    );
    await limits.reserve("u7", "a");
    expect((await reserveAll(limits, "u7", ids("full", 10))).ok).toBe(0);
    await limits.release("u7", "a");
    // The 10 refusals used none of the 2 starts: the second is still there.
    await limits.reserve("u7", "b");
    await limits.release("u7", "b");
    const e = (await limits.reserve("u7", "c").catch((x) => x)) as UserLimitError;
    expect(e.limit).toBe("window");
    expect(await limits.active("u7")).toBe(0);
  });

  it("an entry left by a dead replica ages out; refreshing keeps a running one", async () => {
    const limits = new UserLimits(redis, infra().redisPrefix, policy({ maxActive: 1, activeTtlMs: 400 }));
    await limits.reserve("u4", "a");
    await expect(limits.reserve("u4", "b")).rejects.toBeInstanceOf(UserLimitError);
    for (let i = 0; i < 3; i++) {
      await sleep(200);
      await limits.refresh("u4", "a");
    }
    await expect(limits.reserve("u4", "b")).rejects.toBeInstanceOf(UserLimitError);
    await sleep(450);
    await limits.reserve("u4", "b");
  });
});
