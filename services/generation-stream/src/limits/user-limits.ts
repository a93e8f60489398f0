import { ResourceExhaustedError, UnavailableError } from "@spool/kit";
import type { Redis } from "ioredis";

export interface UserLimitPolicy {
  /** Generations a user may have queued or running at once (default 2). */
  maxActive: number;
  /** Starts a user may make per window. */
  maxStartsPerWindow: number;
  windowMs: number;
  /** An active entry not refreshed for this long is dropped (a replica died holding it). */
  activeTtlMs: number;
}

/**
 * Reserves an active slot and a start in the window, atomically: drops
 * expired active entries, refuses when either limit is reached (with the
 * time until a slot or the window frees up), otherwise records both.
 * Returns {1} or {0, retryAfterMs, which}.
 */
const RESERVE = `
local now = tonumber(ARGV[1])
local maxActive = tonumber(ARGV[2])
local maxStarts = tonumber(ARGV[3])
local windowMs = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local id = ARGV[6]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], id) then return {1, 0, ''} end
if redis.call('ZCARD', KEYS[1]) >= maxActive then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(tonumber(first[2]) - now, 1), 'active'}
end
local starts = tonumber(redis.call('GET', KEYS[2]) or '0')
if starts >= maxStarts then
  return {0, math.max(redis.call('PTTL', KEYS[2]), 1), 'window'}
end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], windowMs) end
redis.call('ZADD', KEYS[1], now + ttl, id)
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, 0, ''}
`;

export class UserLimitError extends ResourceExhaustedError {
  readonly limit: "active" | "window";
  constructor(limit: "active" | "window", retryAfterMs: number) {
    super(
      limit === "active"
        ? "too many generations running; wait for one to finish"
        : "too many generations started; slow down",
      retryAfterMs,
    );
    this.limit = limit;
  }
}

export class UserLimits {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #policy: UserLimitPolicy;

  constructor(redis: Redis, prefix: string, policy: UserLimitPolicy) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#policy = policy;
  }

  #activeKey(userId: string): string {
    return `${this.#prefix}active:${userId}`;
  }

  /** Takes a slot for a generation; throws UserLimitError when over a limit. Idempotent per generation id. */
  async reserve(userId: string, generationId: string, nowMs = Date.now()): Promise<void> {
    const p = this.#policy;
    const window = Math.floor(nowMs / p.windowMs);
    let r: [number, number, string];
    try {
      r = (await this.#redis.eval(
        RESERVE,
        2,
        this.#activeKey(userId),
        `${this.#prefix}starts:${userId}:${window}`,
        nowMs,
        p.maxActive,
        p.maxStartsPerWindow,
        p.windowMs,
        p.activeTtlMs,
        generationId,
      )) as [number, number, string];
    } catch (e) {
      throw new UnavailableError("generation limits are unavailable", { cause: e });
    }
    if (r[0] !== 1) throw new UserLimitError(r[2] as "active" | "window", Number(r[1]));
  }

  /** Keeps a long generation's slot from ageing out while it runs. */
  async refresh(userId: string, generationId: string, nowMs = Date.now()): Promise<void> {
    await this.#redis.zadd(this.#activeKey(userId), "XX", nowMs + this.#policy.activeTtlMs, generationId);
  }

  async release(userId: string, generationId: string): Promise<void> {
    await this.#redis.zrem(this.#activeKey(userId), generationId);
  }

  async active(userId: string, nowMs = Date.now()): Promise<number> {
    return this.#redis.zcount(this.#activeKey(userId), nowMs, "+inf");
  }
}
