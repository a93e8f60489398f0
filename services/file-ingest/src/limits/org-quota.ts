// Bytes an organisation stores, counted in one Redis key per organisation and
// changed only by Lua scripts: a reservation checks and adds in one step, so
// parallel uploads can never together pass the limit (no check-then-act).
// An upload reserves before it reads bytes (its declared size, or blocks as
// its bytes arrive) and keeps the reservation once its file is recorded; a
// failed upload gives it back; a deleted file gives its size back.
//
// When the key is missing (first use, Redis flushed) it is seeded from the
// projection's sum of live files, so the count survives a Redis restart
// without persistence (less what was in flight at that moment).
import { ResourceExhaustedError, redisScript, type ScriptRunner } from "@spool/kit";
import type { Redis } from "ioredis";

const RESERVE = `
local used = redis.call('GET', KEYS[1])
if not used then
  if ARGV[3] == '' then return {-1, 0} end
  used = ARGV[3]
  redis.call('SET', KEYS[1], used)
end
used = tonumber(used)
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and used + n > limit then return {0, used} end
return {1, redis.call('INCRBY', KEYS[1], n)}
`;

const RELEASE = `
local used = redis.call('GET', KEYS[1])
if not used then return 0 end
local left = tonumber(used) - tonumber(ARGV[1])
if left < 0 then left = 0 end
redis.call('SET', KEYS[1], left)
return left
`;

export class OrgQuotaExceededError extends ResourceExhaustedError {
  constructor(limit: number) {
    super(`the organisation's storage limit (${limit} bytes) would be exceeded; delete files to make room`);
  }
}

export class OrgQuota {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #limit: number;
  readonly #reserve: ScriptRunner;
  readonly #release: ScriptRunner;
  readonly #usedFromProjection: (orgId: string) => Promise<number>;

  constructor(options: {
    redis: Redis;
    prefix: string;
    /** 0 = no limit (usage is still counted). */
    limit: number;
    /** The bytes of the organisation's live files, from the projection (for seeding). */
    usedFromProjection: (orgId: string) => Promise<number>;
  }) {
    this.#redis = options.redis;
    this.#prefix = options.prefix;
    this.#limit = options.limit;
    this.#reserve = redisScript(options.redis, RESERVE);
    this.#release = redisScript(options.redis, RELEASE);
    this.#usedFromProjection = options.usedFromProjection;
  }

  #key(orgId: string) {
    return `${this.#prefix}org:${orgId}:stored_bytes`;
  }

  /** Adds `bytes` to the organisation's count, or throws OrgQuotaExceededError and adds nothing. */
  async reserve(orgId: string, bytes: number): Promise<void> {
    if (bytes <= 0) return;
    let r = (await this.#reserve([this.#key(orgId)], [bytes, this.#limit, ""])) as number[];
    if (r[0] === -1) {
      const seed = await this.#usedFromProjection(orgId);
      r = (await this.#reserve([this.#key(orgId)], [bytes, this.#limit, String(seed)])) as number[];
    }
    if (r[0] !== 1) throw new OrgQuotaExceededError(this.#limit);
  }

  /** Gives `bytes` back (never below 0). */
  async release(orgId: string, bytes: number): Promise<void> {
    if (bytes <= 0) return;
    await this.#release([this.#key(orgId)], [bytes]);
  }

  /** The current count (tests, metrics); undefined before first use. */
  async used(orgId: string): Promise<number | undefined> {
    const v = await this.#redis.get(this.#key(orgId));
    return v === null ? undefined : Number(v);
  }

  /** Drops the count (tests: Redis lost it); the next reservation seeds it from the projection. */
  async forget(orgId: string): Promise<void> {
    await this.#redis.del(this.#key(orgId));
  }

  /**
   * A reservation for one upload whose size is learnt as it streams: grows in
   * blocks, settles to the exact size, or gives everything back.
   */
  reservation(orgId: string, blockBytes = 8 * 1024 * 1024): UploadReservation {
    return new UploadReservation(this, orgId, blockBytes);
  }
}

export class UploadReservation {
  #held = 0;
  constructor(
    private readonly quota: OrgQuota,
    private readonly orgId: string,
    private readonly blockBytes: number,
  ) {}

  get held(): number {
    return this.#held;
  }

  /** Makes sure at least `bytes` are held, reserving a block (or exactly `bytes` when `exact`) more. */
  async ensure(bytes: number, exact = false): Promise<void> {
    if (bytes <= this.#held) return;
    const need = bytes - this.#held;
    const want = exact ? need : Math.max(need, this.blockBytes);
    try {
      await this.quota.reserve(this.orgId, want);
      this.#held += want;
    } catch (e) {
      // A block ahead may not fit where the bytes themselves still do.
      if (!(e instanceof OrgQuotaExceededError) || want === need) throw e;
      await this.quota.reserve(this.orgId, need);
      this.#held += need;
    }
  }

  /** Keeps exactly `bytes` (the file's size), giving back the rest. */
  async settle(bytes: number): Promise<void> {
    await this.ensure(bytes, true);
    const extra = this.#held - bytes;
    if (extra > 0) await this.quota.release(this.orgId, extra);
    this.#held = bytes;
  }

  /** `bytes` of the held amount now belong to a recorded file: kept, no longer this reservation's to give back. */
  transfer(bytes: number): void {
    this.#held = Math.max(0, this.#held - bytes);
  }

  /** Gives everything back (a failed upload). */
  async releaseAll(): Promise<void> {
    const held = this.#held;
    this.#held = 0;
    await this.quota.release(this.orgId, held);
  }
}
