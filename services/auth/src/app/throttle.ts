import { createHash } from "node:crypto";
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

export interface ThrottlePolicy {
  /** Consecutive failures per account+IP before blocking. */
  accountIpFailures: number;
  /** First block; doubles with each further failure. */
  blockBaseMs: number;
  blockMaxMs: number;
  accountPerHour: number;
  ipPerDay: number;
  /** The periods of those two rates: an hour and a day unless a test shortens them. */
  accountPeriodMs?: number;
  ipPeriodMs?: number;
}

export type ThrottleScope = "account_ip" | "account_hour" | "ip_day";

/**
 * Reserves a login attempt, atomically (one Lua script): refuses it while the
 * account+IP block or a rate limit holds; otherwise counts it as a failure up
 * front — so N parallel wrong passwords are counted exactly and no more than
 * the limit reach password verification — and arms the next block when the
 * consecutive count reaches the limit. A success undoes the reservation
 * (SUCCEED).
 *
 * The failures per account per hour and per IP per day are GCRA rates from the
 * kit (burst = the limit, then one per period/limit: no 2× across a window
 * boundary). All times are the Redis server's clock.
 *
 * KEYS: account+IP hash, account rate, IP rate. ARGV: consecutive limit, block
 * base ms, block max ms, then (limit, period ms) for each rate.
 * Returns {1, armedBlockMs} when allowed (armedBlockMs > 0 when this attempt,
 * if it fails, starts a block), {0, retryAfterMs, scope} when refused; the
 * retry-after is when every limit lets the attempt through.
 */
const BEGIN = `${GCRA_LUA}
local now = gcra_now()
local nowMs = math.floor(now / 1000)
local limit = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local rateKeys = {KEYS[2], KEYS[3]}
local rates = {tonumber(ARGV[4]), tonumber(ARGV[6])}
local periods = {tonumber(ARGV[5]), tonumber(ARGV[7])}
local scopes = {'account_hour', 'ip_day'}
local blocked = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') - nowMs
local worst, retryUs, tats = gcra_check(rateKeys, rates, periods, now)
local retry = math.ceil(retryUs / 1000)
if blocked > 0 and blocked >= retry then return {0, blocked, 'account_ip'} end
if worst > 0 then return {0, retry, scopes[worst]} end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local armed = 0
if n >= limit then
  armed = math.min(base * (2 ^ (n - limit)), max)
  redis.call('HSET', KEYS[1], 'until', nowMs + armed)
end
redis.call('PEXPIRE', KEYS[1], 86400000)
gcra_commit(rateKeys, tats, now)
return {1, armed, ''}
`;

/** A successful login clears the consecutive count and gives back its provisional failure. */
const SUCCEED = `${GCRA_LUA}
redis.call('DEL', KEYS[1])
local rates = {tonumber(ARGV[1]), tonumber(ARGV[3])}
local periods = {tonumber(ARGV[2]), tonumber(ARGV[4])}
gcra_refund({KEYS[2], KEYS[3]}, rates, periods, gcra_now())
return 1
`;

export class LoginThrottle {
  readonly #prefix: string;
  readonly #policy: ThrottlePolicy;
  readonly #rates: readonly [RateLimit, RateLimit];
  readonly #begin: ScriptRunner;
  readonly #succeed: ScriptRunner;

  constructor(redis: Redis, prefix: string, policy: ThrottlePolicy) {
    this.#prefix = prefix;
    this.#policy = policy;
    this.#rates = [
      { name: "account_hour", limit: policy.accountPerHour, periodMs: policy.accountPeriodMs ?? 3_600_000 },
      { name: "ip_day", limit: policy.ipPerDay, periodMs: policy.ipPeriodMs ?? 86_400_000 },
    ];
    this.#begin = redisScript(redis, BEGIN);
    this.#succeed = redisScript(redis, SUCCEED);
  }

  #keys(account: string, ip: string): [string, string, string] {
    // Hashed: account names and addresses stay out of Redis key listings.
    const h = (s: string) => createHash("sha256").update(s).digest("base64url").slice(0, 22);
    const prefix = `${this.#prefix}throttle:`;
    return [
      `${prefix}ai:${h(`${account}\n${ip}`)}`,
      rateLimitKey(prefix, this.#rates[0], h(account)),
      rateLimitKey(prefix, this.#rates[1], h(ip)),
    ];
  }

  /**
   * Throws ThrottledError (with retry-after) when refused, UnavailableError
   * when Redis is down. Resolves with the block (ms) this attempt arms if it
   * fails, 0 when none.
   */
  async begin(account: string, ip: string): Promise<number> {
    const p = this.#policy;
    let result: [number, number, string];
    try {
      result = (await this.#begin(this.#keys(account, ip), [
        p.accountIpFailures,
        p.blockBaseMs,
        p.blockMaxMs,
        ...rateLimitArgs(this.#rates),
      ])) as [number, number, string];
    } catch (e) {
      // Fail closed: without the counters no login is allowed.
      throw new UnavailableError("login is unavailable", { cause: e });
    }
    if (result[0] !== 1) {
      throw new ThrottledError(Math.ceil(Number(result[1])), result[2] as ThrottleScope);
    }
    return Number(result[1]);
  }

  async succeed(account: string, ip: string): Promise<void> {
    try {
      await this.#succeed(this.#keys(account, ip), rateLimitArgs(this.#rates));
    } catch (e) {
      throw new UnavailableError("login is unavailable", { cause: e });
    }
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
