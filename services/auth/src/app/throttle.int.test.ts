import { setTimeout as sleep } from "node:timers/promises";
import { useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoginThrottle, ThrottledError, type ThrottlePolicy } from "./throttle.js";

const infra = useInfra("throttle");
let redis: Redis;
beforeAll(() => {
  redis = new Redis(infra().redisUrl);
});
afterAll(() => {
  redis?.disconnect();
});

const HOUR = 3_600_000;
const policy = (p: Partial<ThrottlePolicy>): ThrottlePolicy => ({
  accountIpFailures: 1_000,
  blockBaseMs: 30_000,
  blockMaxMs: HOUR,
  accountPerHour: 1_000,
  ipPerDay: 100_000,
  ...p,
});

/** Attempts in parallel; how many were let through to verification, and the refusals. */
async function attempts(t: LoginThrottle, n: number, account: string, ip: string) {
  const rs = await Promise.allSettled(Array.from({ length: n }, () => t.begin(account, ip)));
  const refused = rs.flatMap((r) => (r.status === "rejected" ? [r.reason as ThrottledError] : []));
  for (const e of refused) expect(e).toBeInstanceOf(ThrottledError);
  return { passed: n - refused.length, refused };
}

describe("login throttle rates (GCRA)", () => {
  it("the per-account rate lets no 2× through across a window boundary and reports the true retry-after", async () => {
    // 5 failures per 2 s for the test; the hour in production is the same code with another period.
    const t = new LoginThrottle(
      redis,
      infra().redisPrefix,
      policy({ accountPerHour: 5, accountPeriodMs: 2_000 }),
    );
    const interval = 2_000 / 5;
    // Start just before a client-clock 2 s boundary (where the old fixed windows were cut), so a
    // fixed window would let 5 more through right after it.
    await sleep(2_000 - (Date.now() % 2_000) + 1_700);
    const t0 = Date.now();
    expect((await attempts(t, 5, "a@x.test", "10.0.0.1")).passed).toBe(5);
    await sleep(2_000 - (Date.now() % 2_000) + 50);
    const second = await attempts(t, 5, "a@x.test", "10.0.0.2");
    const elapsed = Date.now() - t0;
    // GCRA: 5 at once, then one per 400 ms, whatever the boundaries.
    expect(second.passed).toBeLessThanOrEqual(Math.floor(elapsed / interval));
    expect(second.passed).toBeLessThan(5);
    const refusal = second.refused[0]!;
    expect(refusal.scope).toBe("account_hour");
    expect(refusal.retryAfterMs).toBeGreaterThan(0);
    expect(refusal.retryAfterMs).toBeLessThanOrEqual(interval);
    // The retry-after is true: after it, an attempt passes.
    await sleep(refusal.retryAfterMs!);
    await t.begin("a@x.test", "10.0.0.3");
  });

  it("the per-account hourly rate refuses with the time until one failure is earned back, not the hour", async () => {
    const t = new LoginThrottle(redis, infra().redisPrefix, policy({ accountPerHour: 4 }));
    const { passed, refused } = await attempts(t, 30, "b@x.test", "10.0.1.1");
    expect(passed).toBe(4);
    for (const e of refused) {
      expect(e.scope).toBe("account_hour");
      expect(e.retryAfterMs).toBeLessThanOrEqual(HOUR / 4);
      expect(e.retryAfterMs).toBeGreaterThan(HOUR / 4 - 60_000);
    }
  });

  it("the per-IP daily rate counts accounts together; a refused attempt takes nothing", async () => {
    const t = new LoginThrottle(redis, infra().redisPrefix, policy({ accountPerHour: 2, ipPerDay: 5 }));
    // c1 is refused by its account rate after 2: those refusals do not use the address's allowance.
    expect((await attempts(t, 10, "c1@x.test", "10.0.2.1")).passed).toBe(2);
    const rs = await Promise.all(
      ["c2", "c3", "c4", "c5"].map((a) => attempts(t, 1, `${a}@x.test`, "10.0.2.1")),
    );
    expect(rs.reduce((s, r) => s + r.passed, 0)).toBe(3);
    const byIp = rs.flatMap((r) => r.refused)[0]!;
    expect(byIp.scope).toBe("ip_day");
    expect(byIp.retryAfterMs).toBeLessThanOrEqual(86_400_000 / 5);
    // …and the address's refusal took nothing from the account: c5 passes from elsewhere.
    const c5 = await attempts(t, 2, "c5@x.test", "10.0.2.2");
    expect(c5.passed).toBe(rs[3]!.passed === 1 ? 1 : 2);
  });

  it("a success gives its provisional failure back and clears the consecutive count", async () => {
    const t = new LoginThrottle(
      redis,
      infra().redisPrefix,
      policy({ accountIpFailures: 3, accountPerHour: 3 }),
    );
    await t.begin("d@x.test", "10.0.3.1");
    await t.begin("d@x.test", "10.0.3.1");
    await t.begin("d@x.test", "10.0.3.1");
    await t.succeed("d@x.test", "10.0.3.1");
    // One failure given back: exactly one more passes, and the block armed by the third is cleared.
    expect((await attempts(t, 5, "d@x.test", "10.0.3.1")).passed).toBe(1);
  });

  it("the consecutive-failure block still arms at the limit and reports its own retry-after", async () => {
    const t = new LoginThrottle(
      redis,
      infra().redisPrefix,
      policy({ accountIpFailures: 3, blockBaseMs: 60_000 }),
    );
    const armed = await Promise.all([1, 2, 3].map(() => t.begin("e@x.test", "10.0.4.1")));
    expect(armed.filter((ms) => ms > 0)).toEqual([60_000]);
    const { passed, refused } = await attempts(t, 5, "e@x.test", "10.0.4.1");
    expect(passed).toBe(0);
    expect(refused[0]!.scope).toBe("account_ip");
    expect(refused[0]!.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(refused[0]!.retryAfterMs).toBeGreaterThan(50_000);
  });
});
