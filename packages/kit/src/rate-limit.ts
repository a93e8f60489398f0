import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * Rate limits in Redis, by GCRA (the generic cell rate algorithm: a token
 * bucket kept as one timestamp per subject and limit).
 *
 * Why GCRA and not fixed windows or a sliding log: a fixed window lets 2× the
 * limit through across a boundary and can only report "until the window ends"
 * as retry-after; a sliding log is exact but stores one entry per event (a
 * per-IP daily limit of thousands per subject). GCRA stores one number, never
 * lets more than `limit` through at once, refills one event every
 * period/limit, and the time until the next event is allowed is exact: it is
 * the retry-after. Burst = limit, so a quiet subject may use its whole
 * allowance at once, and then one more every period/limit.
 *
 * All decisions read the clock of the Redis server (TIME) inside the script,
 * so replicas with skewed clocks share one timeline. Times are whole
 * microseconds (exact in Lua's doubles); the emission interval is rounded up to
 * a microsecond, so the effective rate is never above the configured one.
 */
export interface RateLimit {
  /** Names the limit in a refusal and in its Redis key (e.g. "account_hour"). */
  readonly name: string;
  /** Events allowed per period; also the largest burst. */
  readonly limit: number;
  readonly periodMs: number;
}

export type RateDecision =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly limit: string; readonly retryAfterMs: number };

/**
 * Lua functions for scripts that take a rate-limit decision together with
 * other state (prepend this source to the script). State per key: the
 * theoretical arrival time (TAT, µs) as a decimal integer, expiring when it
 * is in the past (an absent key = a full bucket).
 *
 * - gcra_now(): the server's time in µs.
 * - gcra_check(keys, limits, periodsMs, now): whether one more event fits every
 *   limit; returns (refusing index or 0, retry µs, new TATs). When several
 *   refuse, the one that frees last is reported: before then, nothing passes.
 * - gcra_commit(keys, tats, now): consumes (after a check that passed).
 * - gcra_refund(keys, limits, periodsMs, now): gives one event back.
 */
export const GCRA_LUA = `
local function gcra_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function gcra_interval(limit, periodMs)
  return math.ceil(periodMs * 1000 / limit)
end
local function gcra_check(keys, limits, periods, now)
  local worst, retry, tats = 0, 0, {}
  for i = 1, #keys do
    local t = gcra_interval(limits[i], periods[i])
    local tat = tonumber(redis.call('GET', keys[i]) or '0')
    if tat < now then tat = now end
    local over = tat + t - now - t * limits[i]
    if over > retry then worst, retry = i, over end
    tats[i] = tat + t
  end
  return worst, retry, tats
end
local function gcra_store(key, tat, now)
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  else
    redis.call('DEL', key)
  end
end
local function gcra_commit(keys, tats, now)
  for i = 1, #keys do gcra_store(keys[i], tats[i], now) end
end
local function gcra_refund(keys, limits, periods, now)
  for i = 1, #keys do
    local tat = tonumber(redis.call('GET', keys[i]) or '0')
    gcra_store(keys[i], tat - gcra_interval(limits[i], periods[i]), now)
  end
end
`;

/** KEYS: one per limit; ARGV: mode ('consume' | 'refund'), then limit and period (ms) per key. */
const LIMITER = `${GCRA_LUA}
local limits, periods = {}, {}
for i = 1, #KEYS do
  limits[i] = tonumber(ARGV[2 * i])
  periods[i] = tonumber(ARGV[2 * i + 1])
end
local now = gcra_now()
if ARGV[1] == 'refund' then
  gcra_refund(KEYS, limits, periods, now)
  return {1, 0}
end
local worst, retry, tats = gcra_check(KEYS, limits, periods, now)
if worst > 0 then return {0, math.ceil(retry / 1000), worst} end
gcra_commit(KEYS, tats, now)
return {1, 0}
`;

export type ScriptRunner = (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;

/**
 * Registers a Lua script on the client: run by EVALSHA, loaded again (EVAL)
 * by ioredis when the server answers NOSCRIPT (e.g. after a restart).
 */
export function redisScript(redis: Redis, lua: string): ScriptRunner {
  const name = `spoolScript${createHash("sha1").update(lua).digest("hex").slice(0, 16)}`;
  type Command = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;
  const commands = redis as unknown as Record<string, Command | undefined>;
  if (!commands[name]) redis.defineCommand(name, { lua });
  const fn = commands[name];
  if (!fn) throw new Error("ioredis did not define the script");
  return (keys, args) => fn.call(redis, keys.length, ...keys, ...args);
}

/** The Redis key holding one subject's state for one limit. */
export function rateLimitKey(prefix: string, limit: RateLimit, subject: string): string {
  return `${prefix}rl:${limit.name}:${subject}`;
}

/** ARGV pairs (limit, period ms) for the limits, in order. */
export function rateLimitArgs(limits: readonly RateLimit[]): number[] {
  return limits.flatMap((l) => [l.limit, l.periodMs]);
}

export function assertRateLimit(l: RateLimit): void {
  if (!Number.isSafeInteger(l.limit) || l.limit < 1) throw new RangeError(`rate limit ${l.name}: limit < 1`);
  if (!Number.isSafeInteger(l.periodMs) || l.periodMs < 1)
    throw new RangeError(`rate limit ${l.name}: period < 1 ms`);
}

/**
 * One or several limits decided together, in one script: an event is allowed
 * only when every limit allows it, and then it is taken from all of them;
 * when any refuses, nothing is taken.
 */
export class RateLimiter {
  readonly #prefix: string;
  readonly #limits: readonly RateLimit[];
  readonly #run: ScriptRunner;

  constructor(redis: Redis, prefix: string, limits: readonly RateLimit[]) {
    if (limits.length === 0) throw new RangeError("a rate limiter needs at least one limit");
    limits.forEach(assertRateLimit);
    this.#prefix = prefix;
    this.#limits = limits;
    this.#run = redisScript(redis, LIMITER);
  }

  /** subjects[i] is whom limits[i] applies to (an account, an address…). Redis errors propagate. */
  async consume(subjects: readonly string[]): Promise<RateDecision> {
    const r = (await this.#run(this.#keys(subjects), [
      "consume",
      ...rateLimitArgs(this.#limits),
    ])) as number[];
    if (r[0] === 1) return { allowed: true };
    const refusing = this.#limits[Number(r[2]) - 1];
    if (!refusing) throw new Error("rate-limit script named no limit");
    return { allowed: false, limit: refusing.name, retryAfterMs: Number(r[1]) };
  }

  /** Gives back one event taken by consume() (e.g. an attempt that turned out not to count). */
  async refund(subjects: readonly string[]): Promise<void> {
    await this.#run(this.#keys(subjects), ["refund", ...rateLimitArgs(this.#limits)]);
  }

  #keys(subjects: readonly string[]): string[] {
    if (subjects.length !== this.#limits.length) throw new RangeError("one subject per limit");
    return this.#limits.map((l, i) => rateLimitKey(this.#prefix, l, subjects[i] as string));
  }
}
