import {
  GCRA_LUA,
  type RateLimit,
  ResourceExhaustedError,
  rateLimitArgs,
  rateLimitKey,
  redisScript,
  type ScriptRunner,
  UnavailableError,
} from "@spool/kit";
import type { Redis } from "ioredis";

export interface UserLimitPolicy {
  /** Generations a user may have queued or running at once (default 2). */
  maxActive: number;
  /** Starts a user may make per window: a GCRA rate (a burst of this many, then one per windowMs / this). */
  maxStartsPerWindow: number;
  windowMs: number;
  /** An active entry not refreshed for this long is dropped (a replica died holding it). */
  activeTtlMs: number;
  /**
   * The retry-after advised when every active slot is taken (0 = none). When a
   * slot frees is not known — it is when one of the user's generations ends —
   * so this is a short polling hint, not a promise.
   */
  activeRetryMs: number;
}

/**
 * Reserves an active slot and a start, atomically, on the Redis server's
 * clock: drops expired active entries; refuses when the slots are taken or
 * the start rate is exceeded; otherwise records both. The retry-after of a
 * refusal is the longest of those that apply: the active hint, and the exact
 * time until the start rate allows one more.
 *
 * KEYS: active set, start rate. ARGV: max active, active ttl ms, active retry
 * ms, generation id, then the rate's (limit, period ms).
 * Returns {1} or {0, retryAfterMs, which}.
 */
const RESERVE = `${GCRA_LUA}
local now = gcra_now()
local nowMs = math.floor(now / 1000)
local maxActive = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local activeRetry = tonumber(ARGV[3])
local id = ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', nowMs)
if redis.call('ZSCORE', KEYS[1], id) then return {1, 0, ''} end
local rateKeys = {KEYS[2]}
local worst, retryUs, tats = gcra_check(rateKeys, {tonumber(ARGV[5])}, {tonumber(ARGV[6])}, now)
local retry = math.ceil(retryUs / 1000)
if redis.call('ZCARD', KEYS[1]) >= maxActive then return {0, math.max(activeRetry, retry), 'active'} end
if worst > 0 then return {0, retry, 'window'} end
gcra_commit(rateKeys, tats, now)
redis.call('ZADD', KEYS[1], nowMs + ttl, id)
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, 0, ''}
`;

/** Pushes a running generation's expiry (and the set's) out by the ttl, on the server's clock. */
const REFRESH = `${GCRA_LUA}
local expires = math.floor(gcra_now() / 1000) + tonumber(ARGV[1])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', expires, ARGV[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
`;

const ACTIVE = `${GCRA_LUA}
return redis.call('ZCOUNT', KEYS[1], math.floor(gcra_now() / 1000), '+inf')
`;

export type UserLimit = "active" | "window";

export class UserLimitError extends ResourceExhaustedError {
  readonly limit: UserLimit;
  constructor(limit: UserLimit, retryAfterMs: number | undefined) {
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
  readonly #starts: RateLimit;
  readonly #reserve: ScriptRunner;
  readonly #refresh: ScriptRunner;
  readonly #active: ScriptRunner;

  constructor(redis: Redis, prefix: string, policy: UserLimitPolicy) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#policy = policy;
    this.#starts = { name: "starts", limit: policy.maxStartsPerWindow, periodMs: policy.windowMs };
    this.#reserve = redisScript(redis, RESERVE);
    this.#refresh = redisScript(redis, REFRESH);
    this.#active = redisScript(redis, ACTIVE);
  }

  #activeKey(userId: string): string {
    return `${this.#prefix}active:${userId}`;
  }

  /** Takes a slot for a generation; throws UserLimitError when over a limit. Idempotent per generation id. */
  async reserve(userId: string, generationId: string): Promise<void> {
    const p = this.#policy;
    let r: [number, number, string];
    try {
      r = (await this.#reserve(
        [this.#activeKey(userId), rateLimitKey(this.#prefix, this.#starts, userId)],
        [p.maxActive, p.activeTtlMs, p.activeRetryMs, generationId, ...rateLimitArgs([this.#starts])],
      )) as [number, number, string];
    } catch (e) {
      throw new UnavailableError("generation limits are unavailable", { cause: e });
    }
    if (r[0] !== 1) {
      const retry = Number(r[1]);
      throw new UserLimitError(r[2] as UserLimit, retry > 0 ? retry : undefined);
    }
  }

  /** Keeps a long generation's slot from ageing out while it runs. */
  async refresh(userId: string, generationId: string): Promise<void> {
    await this.#refresh([this.#activeKey(userId)], [this.#policy.activeTtlMs, generationId]);
  }

  async release(userId: string, generationId: string): Promise<void> {
    await this.#redis.zrem(this.#activeKey(userId), generationId);
  }

  /** Slots held now. */
  async active(userId: string): Promise<number> {
    return Number(await this.#active([this.#activeKey(userId)], []));
  }
}
