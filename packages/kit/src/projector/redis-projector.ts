import type { Redis } from "ioredis";
import type { DeadLetter, DeadLetterStore } from "../dead-letters.js";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import type { EventMessage, RecordedEvent } from "../events.js";
import type { ConsumerStatus } from "../managed.js";
import { type Position, ProjectorBase, type ProjectorBaseOptions } from "./base.js";
import { errorMessage, FencedError, HandlerFailure } from "./errors.js";
import type { Sink } from "./lane.js";
import { applyRedisWrites, type RedisWrite } from "./redis-writes.js";
import type { ProjectionSource } from "./types.js";

/**
 * A Redis read model: the handler turns a batch of events into writes, and
 * one Lua script applies them together with the checkpoint.
 */
export interface RedisProjectionDefinition extends ProjectionSource {
  /**
   * The writes for a batch of events, in order; keys relative to the key
   * prefix. Compute them from the events alone: no reads, no side effects
   * (a batch can be computed again when it is retried).
   */
  writes(events: readonly RecordedEvent[]): readonly RedisWrite[] | Promise<readonly RedisWrite[]>;
}

export interface RedisProjectorOptions extends ProjectorBaseOptions {
  /** A client without its own keyPrefix option (this projector prefixes keys itself). */
  redis: Redis;
  /** Prefix of every key the projection writes, and of its checkpoint (e.g. "auth:"). */
  keyPrefix?: string;
}

/**
 * Feeds a Redis read model, exactly once in effect: a batch's writes and the
 * checkpoint move in one Lua script that does nothing when the checkpoint
 * has already passed the batch. The writer is elected and dead letters are
 * kept in PostgreSQL, as for the PostgreSQL projector. No rebuild: to start
 * over, delete the keys and the checkpoint and restart.
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

  /** The full Redis key of a relative key, for readers of the model. */
  key(relative: string): string {
    return this.#prefix + relative;
  }

  get checkpointKey(): string {
    return this.key(`spool:projection:${this.name}:checkpoint`);
  }

  async status(): Promise<ConsumerStatus> {
    const [checkpoint, head, deadLetters] = await Promise.all([
      this.checkpoint(),
      this.head(),
      this.pendingDeadLetters(),
    ]);
    return {
      name: this.name,
      stream: this.streamName,
      state: this.state,
      checkpoint,
      head,
      lag: Math.max(0, head - checkpoint),
      version: 1,
      strict: this.definition.strict ?? false,
      deadLetters,
      lastError: this.lastError,
      rebuild: undefined,
    };
  }

  /**
   * Applies a dead-lettered message once: the script sets a guard key for
   * the entry with the writes, so a repeated replay, or one interrupted
   * between Redis and marking the entry, never applies twice.
   */
  async replay(entry: DeadLetter): Promise<void> {
    if (entry.consumer !== this.name || entry.stream !== this.streamName) {
      throw new InvalidArgumentError(
        `dead letter ${entry.id} belongs to ${entry.consumer}, not ${this.name}`,
      );
    }
    const current = await this.options.deadLetters.get(entry.id);
    if (!current || current.replayedAt) {
      throw new FailedPreconditionError(`dead letter ${entry.id} was already replayed`);
    }
    let writes: readonly RedisWrite[];
    try {
      writes = await this.definition.writes(this.options.store.decode(entry.stream, entry.message));
      await applyRedisWrites(this.#redis, {
        markerKey: this.key(`spool:projection:${this.name}:replayed:${entry.id}`),
        mode: "once",
        first: entry.streamSequence,
        last: entry.streamSequence,
        keyPrefix: this.#prefix,
        writes,
      });
    } catch (e) {
      await this.options.deadLetters.recordReplayFailure(entry.id, errorMessage(e));
      throw e;
    }
    // Applied now or by an earlier, interrupted replay: either way exactly once.
    await this.options.deadLetters.markReplayed(entry.id);
    this.options.logger.info(
      { projection: this.name, id: entry.id, seq: entry.streamSequence },
      "dead letter replayed",
    );
  }

  // --- ProjectorBase ----------------------------------------------------------

  protected async setUp(): Promise<void> {
    await this.options.deadLetters.migrate();
  }

  protected async readPosition(): Promise<Position> {
    const stored = await this.#redis.get(this.checkpointKey);
    return { version: 1, checkpoint: stored ? Number(stored) : 0 };
  }

  protected newSink(): Sink {
    return new RedisSink(this.#redis, this.definition, this.options.deadLetters, this.streamName, {
      prefix: this.#prefix,
      checkpointKey: this.checkpointKey,
    });
  }

  /** The Redis model keeps no state row; the process's own state is what status() shows. */
  protected async recordState(): Promise<void> {}
}

class RedisSink implements Sink {
  readonly version = 1;
  readonly rebuild = false;
  readonly #redis: Redis;
  readonly #definition: RedisProjectionDefinition;
  readonly #deadLetters: DeadLetterStore;
  readonly #stream: string;
  readonly #keys: { prefix: string; checkpointKey: string };

  constructor(
    redis: Redis,
    definition: RedisProjectionDefinition,
    deadLetters: DeadLetterStore,
    stream: string,
    keys: { prefix: string; checkpointKey: string },
  ) {
    this.#redis = redis;
    this.#definition = definition;
    this.#deadLetters = deadLetters;
    this.#stream = stream;
    this.#keys = keys;
  }

  async commit(events: readonly RecordedEvent[], from: number, last: number): Promise<void> {
    let writes: readonly RedisWrite[];
    try {
      writes = await this.#definition.writes(events);
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
    await this.#deadLetters.add({
      consumer: this.#definition.name,
      stream: this.#stream,
      message,
      attempts,
      error,
    });
    await this.#apply(message.seq, message.seq, []);
  }

  async #apply(first: number, last: number, writes: readonly RedisWrite[]): Promise<void> {
    let applied: boolean;
    try {
      applied = await applyRedisWrites(this.#redis, {
        markerKey: this.#keys.checkpointKey,
        mode: "batch",
        first,
        last,
        keyPrefix: this.#keys.prefix,
        writes,
      });
    } catch (e) {
      // The script refused the writes (wrong type, bad argument): the event's fault, not Redis's.
      if (e instanceof Error && /^(WRONGTYPE|ERR )/.test(e.message)) throw new HandlerFailure(e);
      throw e;
    }
    if (!applied) throw new FencedError(this.#definition.name, "the Redis checkpoint");
  }
}
