import { createHash } from "node:crypto";
import { ResourceExhaustedError, UnavailableError } from "@spool/kit";
import type { Redis } from "ioredis";

export interface ThrottlePolicy {
  /** Consecutive failures per account+IP before blocking. */
  accountIpFailures: number;
  /** First block; doubles with each further failure. */
  blockBaseMs: number;
  blockMaxMs: number;
  accountPerHour: number;
  ipPerDay: number;
}

export type ThrottleScope = "account_ip" | "account_hour" | "ip_day";

/**
 * Reserves a login attempt, atomically (one Lua script): refuses it while a
 * block or a window limit holds; otherwise counts it as a failure up front —
 * so N parallel wrong passwords are counted exactly and no more than the limit
 * reach password verification — and arms the next block when the consecutive
 * count reaches the limit. A success undoes the reservation (succeed()).
 *
 * Returns {1, armedBlockMs} when allowed (armedBlockMs > 0 when this attempt,
 * if it fails, starts a block), {0, retryAfterMs, scope} when refused.
 */
const BEGIN = `
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local hourLimit = tonumber(ARGV[5])
local dayLimit = tonumber(ARGV[6])
local blockedUntil = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if blockedUntil > now then return {0, blockedUntil - now, 'account_ip'} end
local hour = tonumber(redis.call('GET', KEYS[2]) or '0')
if hour >= hourLimit then return {0, math.max(redis.call('PTTL', KEYS[2]), 1), 'account_hour'} end
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
if day >= dayLimit then return {0, math.max(redis.call('PTTL', KEYS[3]), 1), 'ip_day'} end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local armed = 0
if n >= limit then
  armed = math.min(base * (2 ^ (n - limit)), max)
  redis.call('HSET', KEYS[1], 'until', now + armed)
end
redis.call('PEXPIRE', KEYS[1], 86400000)
if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], 3600000) end
if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], 86400000) end
return {1, armed, ''}
`;

/** A successful login clears the consecutive count and the provisional window counts. */
const SUCCEED = `
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
return 1
`;

export interface ThrottleCounts {
  consecutive: number;
  accountHour: number;
  ipDay: number;
}

export class LoginThrottle {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #policy: ThrottlePolicy;

  constructor(redis: Redis, prefix: string, policy: ThrottlePolicy) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#policy = policy;
  }

  #keys(account: string, ip: string, nowMs: number): [string, string, string] {
    // Hashed: account names and addresses stay out of Redis key listings.
    const h = (s: string) => createHash("sha256").update(s).digest("base64url").slice(0, 22);
    const hour = Math.floor(nowMs / 3_600_000);
    const day = Math.floor(nowMs / 86_400_000);
    return [
      `${this.#prefix}throttle:ai:${h(`${account}\n${ip}`)}`,
      `${this.#prefix}throttle:ah:${h(account)}:${hour}`,
      `${this.#prefix}throttle:id:${h(ip)}:${day}`,
    ];
  }

  /**
   * Throws ThrottledError (with retry-after) when refused, UnavailableError
   * when Redis is down. Resolves with the block (ms) this attempt arms if it
   * fails, 0 when none.
   */
  async begin(account: string, ip: string, nowMs = Date.now()): Promise<number> {
    const p = this.#policy;
    let result: [number, number, string];
    try {
      result = (await this.#redis.eval(
        BEGIN,
        3,
        ...this.#keys(account, ip, nowMs),
        nowMs,
        p.accountIpFailures,
        p.blockBaseMs,
        p.blockMaxMs,
        p.accountPerHour,
        p.ipPerDay,
      )) as [number, number, string];
    } catch (e) {
      // Fail closed: without the counters no login is allowed.
      throw new UnavailableError("login is unavailable", { cause: e });
    }
    if (result[0] !== 1) {
      throw new ThrottledError(Math.ceil(Number(result[1])), result[2] as ThrottleScope);
    }
    return Number(result[1]);
  }

  async succeed(account: string, ip: string, nowMs = Date.now()): Promise<void> {
    try {
      await this.#redis.eval(SUCCEED, 3, ...this.#keys(account, ip, nowMs));
    } catch (e) {
      throw new UnavailableError("login is unavailable", { cause: e });
    }
  }

  async counts(account: string, ip: string, nowMs = Date.now()): Promise<ThrottleCounts> {
    const [ai, ah, id] = this.#keys(account, ip, nowMs);
    const [n, hour, day] = await Promise.all([
      this.#redis.hget(ai, "n"),
      this.#redis.get(ah),
      this.#redis.get(id),
    ]);
    return { consecutive: Number(n ?? 0), accountHour: Number(hour ?? 0), ipDay: Number(day ?? 0) };
  }
}

/** A refused login: the same answer whether or not the account exists. */
export class ThrottledError extends ResourceExhaustedError {
  readonly scope: ThrottleScope;
  constructor(retryAfterMs: number, scope: ThrottleScope) {
    super("too many login attempts; try again later", retryAfterMs);
    this.scope = scope;
  }
}
