import type { Redis } from "ioredis";
import type { DeadLetter, DeadLetterStore } from "../dead-letters.js";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import type { EventMessage, RecordedEvent } from "../events.js";
import type { ConsumerStatus } from "../managed.js";
import { type Position, ProjectorBase, type ProjectorBaseOptions, type RebuildRequest } from "./base.js";
import { errorMessage, FencedError, HandlerFailure } from "./errors.js";
import type { Sink } from "./lane.js";
import { adoptRebuildDeadLetters, rebuildConsumer } from "./pg-sink.js";
import { applyRedisWrites, type RedisWrite } from "./redis-writes.js";
import type { ProjectionSource } from "./types.js";

/**
 * A Redis read model: the handler turns a batch of events into writes, and
 * one Lua script applies them together with the checkpoint.
 */
export interface RedisProjectionDefinition extends ProjectionSource {
  /**
   * The writes for a batch of events, in order; keys relative to the
   * version's key prefix. Compute them from the events alone: no reads, no
   * side effects (a batch can be computed again when it is retried).
   */
  writes(events: readonly RecordedEvent[]): readonly RedisWrite[] | Promise<readonly RedisWrite[]>;
}

export interface RedisProjectorOptions extends ProjectorBaseOptions {
  /** A client without its own keyPrefix option (this projector prefixes keys itself). */
  redis: Redis;
  /** Prefix of every key the projection writes, and of its metadata (e.g. "auth:"). */
  keyPrefix?: string;
}

/**
 * The metadata hash's fields: version serving reads and its checkpoint, the
 * rebuild under way, the last version handed out, and the writer's state.
 */
const F = {
  version: "version",
  checkpoint: "checkpoint",
  rebuildVersion: "rebuild_version",
  rebuildCheckpoint: "rebuild_checkpoint",
  rebuildStartedAt: "rebuild_started_at",
  lastVersion: "last_version",
  state: "state",
  lastError: "last_error",
} as const;

/** Creates the metadata once: version 1 at checkpoint 0. */
const SET_UP = `
if redis.call('HEXISTS', KEYS[1], 'version') == 0 then
  redis.call('HSET', KEYS[1], 'version', '1', 'checkpoint', '0', 'last_version', '1', 'state', 'running')
end
return 1`;

/**
 * Check and request in one step. Versions are never handed out twice, so an
 * abandoned rebuild's leftover keys never mix with a later one's.
 * Returns {1, target} or {0, the version already being rebuilt}.
 */
const REQUEST_REBUILD = `
local busy = redis.call('HGET', KEYS[1], 'rebuild_version')
if busy then return {0, tonumber(busy)} end
local target = math.max(tonumber(redis.call('HGET', KEYS[1], 'last_version') or '1'),
                        tonumber(redis.call('HGET', KEYS[1], 'version') or '1')) + 1
redis.call('HSET', KEYS[1], 'last_version', target, 'rebuild_version', target, 'rebuild_checkpoint', '0',
           'rebuild_started_at', ARGV[1])
return {1, target}`;

/** The swap: by compare-and-set on both positions. ARGV: old version, live checkpoint, target, checkpoint. */
const SWAP = `
local m = redis.call('HMGET', KEYS[1], 'version', 'checkpoint', 'rebuild_version', 'rebuild_checkpoint')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] or m[3] ~= ARGV[3] or m[4] ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'checkpoint', ARGV[4])
redis.call('HDEL', KEYS[1], 'rebuild_version', 'rebuild_checkpoint', 'rebuild_started_at')
return 1`;

/** Drops the request if it still asks for ARGV[1]; records the reason. */
const ABANDON = `
if redis.call('HGET', KEYS[1], 'rebuild_version') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'rebuild_version', 'rebuild_checkpoint', 'rebuild_started_at')
redis.call('HSET', KEYS[1], 'last_error', ARGV[2])
return 1`;

/**
 * Feeds a Redis read model, exactly once in effect: a batch's writes and the
 * checkpoint move in one Lua script that does nothing when the checkpoint
 * has already passed the batch, or when the batch's version is no longer
 * the one it writes (fencing, as the PostgreSQL projector's compare-and-set
 * does). The writer is elected and dead letters are kept in PostgreSQL, as
 * for the PostgreSQL projector.
 *
 * Keys are versioned: version N's key "totals" is "<prefix><name>:vN:totals",
 * and the metadata hash names the version serving reads (readers resolve
 * keys with liveKey()). A rebuild fills version N+1's keys, swaps the
 * version in one script, then deletes version N's keys.
 */
export class RedisProjector extends ProjectorBase {
  readonly definition: RedisProjectionDefinition;
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(definition: RedisProjectionDefinition, options: RedisProjectorOptions) {
    if (!/^[a-z][a-z0-9_]{0,49}$/.test(definition.name)) {
      throw new Error(
        `projection name ${JSON.stringify(definition.name)}: lowercase letters, digits, '_' (max 50)`,
      );
    }
    super(definition, options, `spool:redis-projection:${options.keyPrefix ?? ""}:${definition.name}`);
    this.definition = definition;
    this.#redis = options.redis;
    this.#prefix = options.keyPrefix ?? "";
  }

  /** The full Redis key of a relative key in one version. */
  key(relative: string, version: number): string {
    return this.#versionPrefix(version) + relative;
  }

  /** The full Redis key of a relative key in the version serving reads now. */
  async liveKey(relative: string): Promise<string> {
    return this.key(relative, (await this.readPosition()).version);
  }

  /** The hash holding the version serving reads, its checkpoint and a rebuild's progress. */
  get metaKey(): string {
    return `${this.#prefix}spool:projection:${this.name}`;
  }

  async status(): Promise<ConsumerStatus> {
    const [meta, head, deadLetters] = await Promise.all([
      this.#meta(),
      this.head(),
      this.pendingDeadLetters(),
    ]);
    const checkpoint = this.writer?.lane.checkpoint ?? num(meta[F.checkpoint]);
    const rebuildVersion = meta[F.rebuildVersion];
    return {
      name: this.name,
      stream: this.streamName,
      state: this.state === "running" && rebuildVersion ? "rebuilding" : this.state,
      checkpoint,
      head,
      lag: Math.max(0, head - checkpoint),
      version: num(meta[F.version], 1),
      strict: this.definition.strict ?? false,
      deadLetters,
      lastError: this.lastError ?? meta[F.lastError],
      rebuild: rebuildVersion
        ? {
            targetVersion: Number(rebuildVersion),
            applied: num(meta[F.rebuildCheckpoint]),
            head,
            startedAt: new Date(num(meta[F.rebuildStartedAt])),
          }
        : undefined,
    };
  }

  /**
   * Applies a dead-lettered message once, to the version it is missing from:
   * the script sets a guard key for the entry with the writes, so a repeated
   * replay, or one interrupted between Redis and marking the entry, never
   * applies twice; a version retired meanwhile refuses it.
   */
  async replay(entry: DeadLetter): Promise<void> {
    const entryVersion = this.#entryVersion(entry);
    const current = await this.options.deadLetters.get(entry.id);
    if (!current || current.replayedAt) {
      throw new FailedPreconditionError(`dead letter ${entry.id} was already replayed`);
    }
    const meta = await this.#meta();
    const version = entryVersion === "live" ? num(meta[F.version], 1) : entryVersion;
    // An entry of a rebuild that has since been swapped in (its adoption was interrupted) is live.
    const versionField = String(version) === meta[F.rebuildVersion] ? F.rebuildVersion : F.version;
    let result: Awaited<ReturnType<typeof applyRedisWrites>>;
    try {
      const writes = await this.definition.writes(this.options.store.decode(entry.stream, entry.message));
      result = await applyRedisWrites(this.#redis, {
        metaKey: this.metaKey,
        versionField,
        version,
        checkpointField: "",
        guardKey: `${this.metaKey}:replayed:${entry.id}`,
        mode: "once",
        first: entry.streamSequence,
        last: entry.streamSequence,
        keyPrefix: this.#versionPrefix(version),
        writes,
      });
    } catch (e) {
      await this.options.deadLetters.recordReplayFailure(entry.id, errorMessage(e));
      throw e;
    }
    if (result === "retired") {
      throw new FailedPreconditionError(`dead letter ${entry.id} is for version ${version}, which is gone`);
    }
    // Applied now or by an earlier, interrupted replay: either way exactly once.
    await this.options.deadLetters.markReplayed(entry.id);
    this.options.logger.info(
      { projection: this.name, id: entry.id, seq: entry.streamSequence, version },
      "dead letter replayed",
    );
  }

  // --- ProjectorBase ----------------------------------------------------------

  protected async setUp(): Promise<void> {
    await this.options.deadLetters.migrate();
    await this.#redis.eval(SET_UP, 1, this.metaKey);
  }

  protected async readPosition(): Promise<Position> {
    const [version, checkpoint] = await this.#redis.hmget(this.metaKey, F.version, F.checkpoint);
    return { version: num(version, 1), checkpoint: num(checkpoint) };
  }

  protected newSink(version: number, rebuild: boolean): Sink {
    return new RedisSink({
      redis: this.#redis,
      definition: this.definition,
      deadLetters: this.options.deadLetters,
      stream: this.streamName,
      metaKey: this.metaKey,
      keyPrefix: this.#versionPrefix(version),
      version,
      rebuild,
    });
  }

  protected async recordState(state: "running" | "halted", error: string | undefined): Promise<void> {
    if (error === undefined) {
      await this.#redis.multi().hset(this.metaKey, F.state, state).hdel(this.metaKey, F.lastError).exec();
    } else {
      await this.#redis.hset(this.metaKey, F.state, state, F.lastError, error.slice(0, 2000));
    }
  }

  protected async requestRebuild(): Promise<number> {
    const [ok, version] = (await this.#redis.eval(REQUEST_REBUILD, 1, this.metaKey, Date.now())) as [
      number,
      number,
    ];
    if (ok !== 1) {
      throw new FailedPreconditionError(
        `projection ${this.name} is already rebuilding to version ${version}; ` +
          "wait for it to finish (GetProjection shows its progress)",
      );
    }
    return version;
  }

  protected async rebuildRequest(): Promise<RebuildRequest | undefined> {
    const [target, checkpoint] = await this.#redis.hmget(this.metaKey, F.rebuildVersion, F.rebuildCheckpoint);
    return target ? { target: Number(target), checkpoint: num(checkpoint) } : undefined;
  }

  /**
   * Readers switch with the metadata hash, in one script; then the old
   * version's keys are deleted and the rebuild's dead letters adopted (a
   * crash in between leaves stray keys of a retired version, and entries a
   * replay still finds under the rebuild's name).
   */
  protected async swapVersion(
    target: number,
    checkpoint: number,
    live: { version: number; checkpoint: number },
  ): Promise<void> {
    const swapped = await this.#redis.eval(
      SWAP,
      1,
      this.metaKey,
      live.version,
      live.checkpoint,
      target,
      checkpoint,
    );
    if (swapped !== 1) throw new FencedError(this.name, "the version in the Redis metadata");
    await this.options.sql.begin((tx) => adoptRebuildDeadLetters(tx, this.name, target));
    await this.#deleteVersion(live.version);
  }

  protected async abandonRebuild(target: number, reason: string): Promise<void> {
    const dropped = await this.#redis.eval(ABANDON, 1, this.metaKey, target, reason.slice(0, 2000));
    // Not the rebuild asked for any more (swapped in, or another abandon won): nothing of it to drop.
    if (dropped !== 1) return;
    await this.options
      .sql`DELETE FROM spool_dead_letters WHERE consumer = ${rebuildConsumer(this.name, target)}`;
    await this.#deleteVersion(target);
  }

  // --- plumbing ----------------------------------------------------------------

  #versionPrefix(version: number): string {
    return `${this.#prefix}${this.name}:v${version}:`;
  }

  async #meta(): Promise<Record<string, string | undefined>> {
    return this.#redis.hgetall(this.metaKey);
  }

  /** Deletes every key of a version no one reads or writes any more. */
  async #deleteVersion(version: number): Promise<void> {
    const match = `${this.#versionPrefix(version).replace(/[*?[\]\\]/g, "\\$&")}*`;
    let cursor = "0";
    do {
      const [next, keys] = await this.#redis.scan(cursor, "MATCH", match, "COUNT", 1000);
      if (keys.length > 0) await this.#redis.unlink(...keys);
      cursor = next;
    } while (cursor !== "0");
  }

  /** The version an entry is missing from: "live", or the rebuild version in its consumer name. */
  #entryVersion(entry: DeadLetter): "live" | number {
    if (entry.stream !== this.streamName) {
      throw new InvalidArgumentError(
        `dead letter ${entry.id} is from stream ${entry.stream}, not ${this.streamName}`,
      );
    }
    if (entry.consumer === this.name) return "live";
    const m = /^(.+)@v(\d+)$/.exec(entry.consumer);
    if (m && m[1] === this.name) return Number(m[2]);
    throw new InvalidArgumentError(`dead letter ${entry.id} belongs to ${entry.consumer}, not ${this.name}`);
  }
}

function num(v: string | null | undefined, fallback = 0): number {
  return v ? Number(v) : fallback;
}

interface RedisSinkOptions {
  redis: Redis;
  definition: RedisProjectionDefinition;
  deadLetters: DeadLetterStore;
  stream: string;
  metaKey: string;
  /** The version's key prefix. */
  keyPrefix: string;
  version: number;
  rebuild: boolean;
}

/** One version's keys as a lane's sink. */
class RedisSink implements Sink {
  readonly version: number;
  readonly rebuild: boolean;
  readonly #o: RedisSinkOptions;

  constructor(options: RedisSinkOptions) {
    this.#o = options;
    this.version = options.version;
    this.rebuild = options.rebuild;
  }

  async commit(events: readonly RecordedEvent[], from: number, last: number): Promise<void> {
    let writes: readonly RedisWrite[];
    try {
      writes = await this.#o.definition.writes(events);
    } catch (e) {
      throw new HandlerFailure(e);
    }
    await this.#apply(events[0]?.streamSequence ?? from + 1, last, writes);
  }

  /**
   * Recorded in PostgreSQL first, then the checkpoint moves in Redis: a crash
   * in between retries the message and records it again (the entry is keyed
   * by sequence), never skips it unrecorded.
   */
  async deadLetter(message: EventMessage, _from: number, attempts: number, error: string): Promise<void> {
    const name = this.#o.definition.name;
    await this.#o.deadLetters.add({
      consumer: this.rebuild ? rebuildConsumer(name, this.version) : name,
      stream: this.#o.stream,
      message,
      attempts,
      error,
    });
    await this.#apply(message.seq, message.seq, []);
  }

  async #apply(first: number, last: number, writes: readonly RedisWrite[]): Promise<void> {
    let result: Awaited<ReturnType<typeof applyRedisWrites>>;
    try {
      result = await applyRedisWrites(this.#o.redis, {
        metaKey: this.#o.metaKey,
        versionField: this.rebuild ? F.rebuildVersion : F.version,
        version: this.version,
        checkpointField: this.rebuild ? F.rebuildCheckpoint : F.checkpoint,
        mode: "batch",
        first,
        last,
        keyPrefix: this.#o.keyPrefix,
        writes,
      });
    } catch (e) {
      // The script refused the writes (wrong type, bad argument): the event's fault, not Redis's.
      if (e instanceof Error && /^(WRONGTYPE|ERR )/.test(e.message)) throw new HandlerFailure(e);
      throw e;
    }
    if (result !== "applied") {
      throw new FencedError(
        this.#o.definition.name,
        this.rebuild ? "the Redis rebuild checkpoint" : "the Redis checkpoint",
      );
    }
  }
}
