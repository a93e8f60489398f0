import { type EventStore, InvalidArgumentError, type Logger, UnavailableError } from "@spool/kit";
import { CatchUpSlots } from "./backfill.js";
import type { Decoder, FollowItem } from "./decode.js";
import { StreamFeed } from "./feed.js";
import { type DirectDelivery, Follower } from "./follower.js";
import { type Counters, Subscription, type SubscriptionContext } from "./subscription.js";

export type { Decoded, Decoder, FollowItem } from "./decode.js";

export interface FollowHubOptions<T> {
  store: EventStore;
  /** Logical stream name (the namespace prefix is added), e.g. "GEN_OUTPUT". */
  stream: string;
  /** The relative subject holding one followed thing's events, e.g. id => `gen.output.${id}`. */
  subjectOf: (id: string) => string;
  decode: Decoder<T>;
  logger: Logger;
  /** A heartbeat is yielded when nothing else was for this long. Default 10 s. */
  heartbeatMs?: number;
  /**
   * The shared subscription of a subject stays this long after its last
   * follower leaves, so a follower reconnecting at once resumes from memory.
   * Default 5 s; 0 releases at once.
   */
  idleUnsubscribeMs?: number;
  /** Most events of one subject held in memory for its followers. Default 512. */
  bufferEvents?: number;
  /** Most message bytes of one subject held in memory. Default 1 MiB. */
  bufferBytes?: number;
  /**
   * A consumer (shared or catch-up) that delivered nothing for this long
   * while the log holds more is recreated (pull consumers have stalled after
   * reconnects). Default 15 s.
   */
  stallTimeoutMs?: number;
  /** Messages asked of the server per pull (and held ahead by a log read). Default 256. */
  readBatch?: number;
  /**
   * Followers behind what is in memory (a replica just started, many clients
   * resuming at once) share one read of a subject's log, held while they read
   * it, up to this many message bytes per subject. Default 4 MiB; 0 turns
   * sharing off (each such follower reads the log alone).
   */
  catchUpBytes?: number;
  /**
   * Most followers reading the log alone at once (one JetStream consumer
   * each): past a shared read's budget, or behind where it started. The
   * rest wait for a turn, heartbeats going on. Default 64.
   */
  maxCatchUpReads?: number;
  /**
   * The wildcard subject covering every `subjectOf(id)` (e.g. "gen.output.>"):
   * when set, one consumer of it (a StreamFeed) feeds every subscription of
   * this hub, instead of one consumer per followed subject. The process then
   * receives every message of those subjects, followed here or not; the
   * server wakes one consumer per message instead of many (ADR 0014).
   */
  feedSubject?: string | undefined;
}

export interface FollowOptions<T = unknown> {
  /**
   * Fail with FollowTimeoutError when no event arrives for this long (from
   * the start of the follow, then from the last event). Bounds the wait on a
   * subject that is still empty or whose producer went quiet. Heartbeats do
   * not count as events. Default: no bound.
   */
  idleTimeoutMs?: number;
  /**
   * Direct delivery: while the follower is live (caught up, waiting for the
   * next event), each new event but the terminal one is offered to this
   * function synchronously, as the subscription receives it, instead of
   * being yielded. Returning true means it was delivered; false (the caller
   * cannot take it now: a slow client) means the follow yields it and what
   * follows it as usual. For a caller that writes events straight to its
   * transport without a promise turn per event. A throw counts as false.
   */
  direct?: DirectDelivery<T> | undefined;
}

export interface FollowHubStats {
  /** Subjects with a shared subscription (including ones lingering without followers). */
  subscriptions: number;
  /** With feedSubject: whether the feed's consumer is delivering (it runs while any subject is followed live). */
  feedConsuming: boolean;
  /** Follows in progress. */
  followers: number;
  /** Events held in memory across subjects, and their message bytes. */
  bufferedEvents: number;
  bufferedBytes: number;
  /** Shared subscriptions started since the hub was created. */
  subscriptionsOpened: number;
  /** JetStream consumers created for shared subscriptions (one per subscription, plus recreations). */
  sharedConsumers: number;
  /** Shared consumers recreated because they stalled or were deleted on the server. */
  sharedRestarts: number;
  /** Reads of the log (one consumer each) for followers behind what is in memory: shared ones plus followers' own. */
  catchUps: number;
  /** Of catchUps, the shared ones (one per subject per burst of followers behind it). */
  sharedCatchUps: number;
  /** Followers reading the log alone right now (at most maxCatchUpReads). */
  catchUpReadsOpen: number;
  /** Followers that had to wait for a turn to read the log alone. */
  catchUpWaits: number;
}

/**
 * Fans a subject's events out to every follower in this process through one
 * JetStream subscription per subject (ADR 0004).
 *
 * Followers are cursors over the subject's per-event `sequence`: each yields
 * every event with sequence > after, in order, once, until the terminal one.
 * Events come from the shared in-memory ring when it holds the next one, and
 * from a one-off read of the log otherwise (a follower that joined late,
 * resumed from an old sequence, or read too slowly and saw the ring move on).
 * Either way the follower takes exactly `delivered + 1` next, so stitching
 * the log onto the live tail has no gap and no duplicate by construction.
 */
export class FollowHub<T> {
  readonly #subjectOf: (id: string) => string;
  readonly #logger: Logger;
  readonly #heartbeatMs: number;
  readonly #lingerMs: number;
  readonly #limits: { maxEvents: number; maxBytes: number };
  readonly #stallMs: number;
  readonly #subs = new Map<string, Subscription<T>>();
  readonly #counters: Counters = {
    subscriptionsOpened: 0,
    sharedConsumers: 0,
    sharedRestarts: 0,
    catchUps: 0,
    sharedCatchUps: 0,
  };
  readonly #slots: CatchUpSlots;
  readonly #ctx: SubscriptionContext<T>;
  readonly #watchdog: NodeJS.Timeout;
  readonly #feed: StreamFeed | undefined;
  #watching = false;
  #closed = false;

  constructor(options: FollowHubOptions<T>) {
    this.#subjectOf = options.subjectOf;
    this.#logger = options.logger;
    this.#heartbeatMs = positive("heartbeatMs", options.heartbeatMs ?? 10_000);
    this.#lingerMs = nonNegative("idleUnsubscribeMs", options.idleUnsubscribeMs ?? 5_000);
    this.#limits = {
      maxEvents: positive("bufferEvents", options.bufferEvents ?? 512),
      maxBytes: positive("bufferBytes", options.bufferBytes ?? 1024 * 1024),
    };
    this.#stallMs = positive("stallTimeoutMs", options.stallTimeoutMs ?? 15_000);
    this.#slots = new CatchUpSlots(positive("maxCatchUpReads", options.maxCatchUpReads ?? 64));
    const stream = options.store.namespace.stream(options.stream);
    const readBatch = positive("readBatch", options.readBatch ?? 256);
    this.#feed =
      options.feedSubject === undefined
        ? undefined
        : new StreamFeed({
            store: options.store,
            stream,
            subject: options.store.namespace.subject(options.feedSubject),
            readBatch,
            logger: this.#logger,
            counters: this.#counters,
          });
    this.#ctx = {
      store: options.store,
      stream,
      decode: options.decode,
      logger: this.#logger,
      readBatch,
      feed: this.#feed,
      counters: this.#counters,
      backfillBytes: nonNegative("catchUpBytes", options.catchUpBytes ?? 4 * 1024 * 1024),
      slots: this.#slots,
      stallMs: this.#stallMs,
    };
    this.#watchdog = setInterval(() => void this.#watch(), Math.max(100, this.#stallMs / 3));
    this.#watchdog.unref();
  }

  /**
   * Every event of `id` with sequence > after, in order, each once, ending
   * after the terminal event; a heartbeat whenever nothing was yielded for
   * heartbeatMs. Aborting the signal (or leaving the loop) ends it promptly
   * and frees the follower. Throws FollowGapError when events it needs are
   * no longer stored, FollowTimeoutError past options.idleTimeoutMs, and
   * UnavailableError when the hub closes or the log cannot be read.
   */
  follow(
    id: string,
    after: number,
    signal: AbortSignal,
    options: FollowOptions<T> = {},
  ): AsyncIterable<FollowItem<T>> {
    if (!Number.isSafeInteger(after) || after < 0) {
      throw new InvalidArgumentError("after_sequence must be a non-negative integer", [
        { field: "after_sequence", description: "a sequence already received, or 0 for the start" },
      ]);
    }
    const idleMs = options.idleTimeoutMs ?? Number.POSITIVE_INFINITY;
    if (!(idleMs > 0)) {
      throw new InvalidArgumentError("idleTimeoutMs must be positive", [
        { field: "idleTimeoutMs", description: "milliseconds, more than 0" },
      ]);
    }
    const subject = this.#subjectOf(id);
    const lease = {
      acquire: () => {
        if (this.#closed) throw new UnavailableError("the follow hub is closed");
        return this.#acquire(subject);
      },
      release: (sub: Subscription<T>) => this.#release(sub),
    };
    const timing = { heartbeatMs: this.#heartbeatMs, idleMs, stallMs: this.#stallMs };
    return new Follower(lease, after, signal, timing, this.#logger, options.direct).run();
  }

  stats(): FollowHubStats {
    let followers = 0;
    let bufferedEvents = 0;
    let bufferedBytes = 0;
    for (const s of this.#subs.values()) {
      followers += s.followers;
      bufferedEvents += s.ring.size;
      bufferedBytes += s.ring.bytes;
    }
    return {
      subscriptions: this.#subs.size,
      followers,
      bufferedEvents,
      bufferedBytes,
      ...this.#counters,
      catchUpReadsOpen: this.#slots.used,
      feedConsuming: this.#feed?.consuming ?? false,
      catchUpWaits: this.#slots.waited,
    };
  }

  /** Stops every subscription; followers still running end with UnavailableError. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watchdog);
    const subs = [...this.#subs.values()];
    this.#subs.clear();
    await Promise.all(subs.map((s) => s.close()));
    await this.#feed?.close();
  }

  #acquire(subject: string): Subscription<T> {
    let sub = this.#subs.get(subject);
    if (!sub) {
      sub = new Subscription<T>(this.#ctx, subject, this.#limits);
      this.#subs.set(subject, sub);
      this.#counters.subscriptionsOpened++;
      sub.start();
    }
    if (sub.lingerTimer) {
      clearTimeout(sub.lingerTimer);
      sub.lingerTimer = undefined;
    }
    sub.followers++;
    return sub;
  }

  #release(sub: Subscription<T>): void {
    sub.followers--;
    if (sub.followers > 0 || sub.closed) return;
    const drop = () => {
      if (sub.followers > 0) return;
      if (this.#subs.get(sub.subject) === sub) this.#subs.delete(sub.subject);
      void sub.close();
    };
    if (this.#lingerMs === 0) {
      drop();
    } else {
      sub.lingerTimer = setTimeout(drop, this.#lingerMs);
      sub.lingerTimer.unref();
    }
  }

  /** Recreates shared consumers that went quiet while their subject holds newer messages. */
  async #watch(): Promise<void> {
    if (this.#watching || this.#closed) return;
    this.#watching = true;
    try {
      const now = Date.now();
      const feed = this.#feed;
      if (feed?.consuming && now - feed.lastActivity >= this.#stallMs) {
        // Checked again only after another quiet period.
        feed.lastActivity = now;
        const last = await feed.lastStoredSequence().catch(() => 0);
        if (last > feed.lastStreamSeq && feed.consuming) {
          this.#logger.warn({ subject: feed.subject }, "follow feed stalled; recreating its consumer");
          this.#counters.sharedRestarts++;
          feed.restart();
        }
      }
      for (const sub of [...this.#subs.values()]) {
        if (!sub.consuming || sub.finished || now - sub.lastActivity < this.#stallMs) continue;
        // Checked again only after another quiet period.
        sub.lastActivity = now;
        const last = await sub.lastStoredSequence().catch(() => 0);
        if (last > sub.lastStreamSeq && sub.consuming && !sub.finished) {
          this.#logger.warn({ subject: sub.subject }, "follow subscription stalled; recreating its consumer");
          this.#counters.sharedRestarts++;
          sub.restart();
        }
      }
    } finally {
      this.#watching = false;
    }
  }
}

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value))
    throw new Error(`FollowHub: ${name} must be a positive number`);
  return value;
}

function nonNegative(name: string, value: number): number {
  if (!(value >= 0) || !Number.isFinite(value)) throw new Error(`FollowHub: ${name} must be 0 or more`);
  return value;
}
