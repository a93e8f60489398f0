import { setTimeout as sleep } from "node:timers/promises";
import { useInfra } from "@spool/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RateDecision, RateLimiter } from "./rate-limit.js";

const infra = useInfra("ratelimit");
let redis: Redis;
beforeAll(() => {
  redis = new Redis(infra().redisUrl);
});
afterAll(() => {
  redis?.disconnect();
});

const HOUR = 3_600_000;
const allowed = (ds: RateDecision[]) => ds.filter((d) => d.allowed).length;
const parallel = (n: number, f: () => Promise<RateDecision>) => Promise.all(Array.from({ length: n }, f));

describe("GCRA rate limiter", () => {
  it("no 2× across a window boundary: a burst of the limit, then one per period/limit, with the true retry-after", async () => {
    // 5 per 2 s: one event is earned back every 400 ms.
    const limiter = new RateLimiter(redis, infra().redisPrefix, [{ name: "w", limit: 5, periodMs: 2_000 }]);
    const interval = 400;
    const t0 = Date.now();
    expect(allowed(await parallel(5, () => limiter.consume(["s"])))).toBe(5);
    const sixth = await limiter.consume(["s"]);
    expect(sixth.allowed).toBe(false);
    const retry = (sixth as { retryAfterMs: number }).retryAfterMs;
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(interval);

    // Wait past where a fixed 2 s window starting at t0 would have reset:
    // only what was earned back since the burst passes, never another 5.
    await sleep(1_000);
    const second = await parallel(10, () => limiter.consume(["s"]));
    const elapsed = Date.now() - t0;
    expect(allowed(second)).toBeGreaterThanOrEqual(2); // 1 s at 400 ms per event, at least
    expect(allowed(second)).toBeLessThanOrEqual(Math.floor(elapsed / interval));

    // After waiting the retry-after of a refusal, one more is allowed.
    const refused = second.find((d) => !d.allowed) as { retryAfterMs: number };
    expect(refused.retryAfterMs).toBeLessThanOrEqual(interval);
    const before = Date.now();
    await sleep(refused.retryAfterMs);
    expect((await limiter.consume(["s"])).allowed).toBe(true);
    const next = await limiter.consume(["s"]);
    // And no second one, unless another interval has passed meanwhile.
    if (Date.now() - before < refused.retryAfterMs + interval) expect(next.allowed).toBe(false);
  });

  it("100 parallel calls on a limit of 10: exactly 10 allowed, every refusal with its retry-after", async () => {
    const limiter = new RateLimiter(redis, infra().redisPrefix, [{ name: "p", limit: 10, periodMs: HOUR }]);
    const ds = await parallel(100, () => limiter.consume(["s"]));
    expect(allowed(ds)).toBe(10);
    for (const d of ds.filter((x) => !x.allowed)) {
      expect(d).toMatchObject({ allowed: false, limit: "p" });
      const r = (d as { retryAfterMs: number }).retryAfterMs;
      // One event per 6 minutes; the next one is due about 6 minutes after the burst.
      expect(r).toBeGreaterThan(HOUR / 10 - 60_000);
      expect(r).toBeLessThanOrEqual(HOUR / 10);
    }
    // Another subject has its own allowance.
    expect((await limiter.consume(["other"])).allowed).toBe(true);
  });

  it("several limits: refused if any would be exceeded, and then nothing is taken from any", async () => {
    const limiter = new RateLimiter(redis, infra().redisPrefix, [
      { name: "account", limit: 3, periodMs: HOUR },
      { name: "ip", limit: 5, periodMs: HOUR },
    ]);
    // 20 in parallel for one account from one address: the account's 3 pass.
    const ds = await parallel(20, () => limiter.consume(["a1", "ip1"]));
    expect(allowed(ds)).toBe(3);
    expect(ds.find((d) => !d.allowed)).toMatchObject({ limit: "account" });
    // The 17 refusals took nothing from the address: exactly 2 are left for it.
    const others = await Promise.all(["a2", "a3", "a4", "a5"].map((a) => limiter.consume([a, "ip1"])));
    expect(allowed(others)).toBe(2);
    expect(others.find((d) => !d.allowed)).toMatchObject({ limit: "ip" });
    // …and the refusals by the address took nothing from those accounts.
    expect(allowed(await parallel(3, () => limiter.consume(["a5", "ip2"])))).toBe(3);
  });

  it("when several limits refuse, the retry-after is that of the one that frees last", async () => {
    const limiter = new RateLimiter(redis, infra().redisPrefix, [
      { name: "short", limit: 1, periodMs: HOUR },
      { name: "long", limit: 1, periodMs: 2 * HOUR },
    ]);
    expect((await limiter.consume(["x", "x"])).allowed).toBe(true);
    const d = (await limiter.consume(["x", "x"])) as { allowed: false; limit: string; retryAfterMs: number };
    expect(d).toMatchObject({ allowed: false, limit: "long" });
    expect(d.retryAfterMs).toBeGreaterThan(HOUR);
    expect(d.retryAfterMs).toBeLessThanOrEqual(2 * HOUR);
  });

  it("a refund gives exactly one event back", async () => {
    const limiter = new RateLimiter(redis, infra().redisPrefix, [{ name: "r", limit: 4, periodMs: HOUR }]);
    expect(allowed(await parallel(4, () => limiter.consume(["s"])))).toBe(4);
    await limiter.refund(["s"]);
    expect(allowed(await parallel(5, () => limiter.consume(["s"])))).toBe(1);
    // Refunding a full bucket changes nothing.
    await limiter.refund(["fresh"]);
    expect(allowed(await parallel(6, () => limiter.consume(["fresh"])))).toBe(4);
  });

  it("keeps one short-lived key per subject and limit", async () => {
    const limiter = new RateLimiter(redis, infra().redisPrefix, [{ name: "k", limit: 2, periodMs: 10_000 }]);
    await limiter.consume(["s"]);
    const key = `${infra().redisPrefix}rl:k:s`;
    const [sec, usec] = (await redis.time()) as [string | number, string | number];
    const serverUs = Number(sec) * 1e6 + Number(usec);
    // The state is the theoretical arrival time on the server's clock: one interval (5 s) ahead.
    const tat = Number(await redis.get(key));
    expect(tat - serverUs).toBeGreaterThan(4_000_000);
    expect(tat - serverUs).toBeLessThanOrEqual(5_000_000);
    expect(await redis.pttl(key)).toBeLessThanOrEqual(5_000);
  });
});
