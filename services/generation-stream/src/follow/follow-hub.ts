import { setTimeout as sleep } from "node:timers/promises";
import {
  type EventMessage,
  type EventStore,
  InvalidArgumentError,
  type Logger,
  UnavailableError,
} from "@spool/kit";
import { FollowGapError, FollowTimeoutError } from "./errors.js";
import {
  type ConsumerMessages,
  type JsMsg,
  LogCursor,
  onConsumerLost,
  orderedConsumer,
  raceWith,
} from "./log-cursor.js";
import { Marks, Ring } from "./ring.js";

/** What the hub needs to know of one event: its place, whether it ends the subject, and its content. */
export interface Decoded<T> {
  /** Position of the event on its subject: 1, 2, 3, … with no gap. */
  sequence: number;
  /** True for the last event of the subject (a generation's completed / failed / cancelled). */
  terminal: boolean;
  payload: T;
}

/**
 * Reads the events of one stored message. A message usually holds one event;
 * one holding several (a batch appended together) returns them in order.
 */
export type Decoder<T> = (msg: EventMessage) => Decoded<T> | readonly Decoded<T>[];

export type FollowItem<T> =
  | { kind: "event"; sequence: number; terminal: boolean; payload: T }
  | { kind: "heartbeat" };

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
}

export interface FollowOptions {
  /**
   * Fail with FollowTimeoutError when no event arrives for this long (from
   * the start of the follow, then from the last event). Bounds the wait on a
   * subject that is still empty or whose producer went quiet. Heartbeats do
   * not count as events. Default: no bound.
   */
  idleTimeoutMs?: number;
}

export interface FollowHubStats {
  /** Subjects with a shared subscription (including ones lingering without followers). */
  subscriptions: number;
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
  /** One-off reads of the log by followers that were behind what is in memory. */
  catchUps: number;
}

interface Counters {
  subscriptionsOpened: number;
  sharedConsumers: number;
  sharedRestarts: number;
  catchUps: number;
}

interface Context<T> {
  store: EventStore;
  stream: string;
  decode: Decoder<T>;
  logger: Logger;
  readBatch: number;
  counters: Counters;
}

/** A subscription that cannot go on: followers at or past `at` get `error`. */
interface Failure {
  error: unknown;
  at: number;
}

/**
 * The one JetStream subscription of a subject in this process, feeding the
 * ring every follower of the subject reads from.
 *
 * It starts at the subject's last stored message (the anchor), so what came
 * before is read from the log by the followers that need it, and from then
 * on receives every message in order through an ordered consumer, recreated
 * from the last stream sequence received whenever it fails or stalls.
 */
class Subscription<T> {
  readonly subject: string;
  readonly fullSubject: string;
  readonly ring: Ring<T>;
  readonly marks = new Marks();
  readonly #ctx: Context<T>;
  followers = 0;
  /** True once the ring's start is known: every event below ring.first is in the log. */
  anchored = false;
  terminalSeq: number | undefined;
  failure: Failure | undefined;
  closed = false;
  /** Stream sequence of the last message received. */
  lastStreamSeq = 0;
  /** When a message last arrived or a consumer was (re)created. */
  lastActivity = Date.now();
  lingerTimer: NodeJS.Timeout | undefined;
  readonly #stop = new AbortController();
  #messages: ConsumerMessages | undefined;
  #changed = Promise.withResolvers<void>();
  #run: Promise<void> | undefined;

  constructor(ctx: Context<T>, subject: string, limits: { maxEvents: number; maxBytes: number }) {
    this.#ctx = ctx;
    this.subject = subject;
    this.fullSubject = ctx.store.namespace.subject(subject);
    this.ring = new Ring<T>(limits);
  }

  /** Resolves at the next change (event, anchor, terminal, failure, close). */
  get changed(): Promise<void> {
    return this.#changed.promise;
  }

  /** True while a shared consumer is delivering (not anchoring, backing off or finished). */
  get consuming(): boolean {
    return this.#messages !== undefined;
  }

  get finished(): boolean {
    return this.closed || this.terminalSeq !== undefined || this.failure !== undefined;
  }

  start(): void {
    this.#run ??= this.#loop();
  }

  /** Drops the current consumer; the loop creates a new one after the last message received. */
  restart(): void {
    this.lastActivity = Date.now();
    this.#messages?.stop();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.#stop.abort();
    this.#messages?.stop();
    this.#notify();
    await this.#run;
  }

  async #loop(): Promise<void> {
    const { logger } = this.#ctx;
    let failures = 0;
    while (!this.finished) {
      try {
        if (!this.anchored) await this.#anchor();
        if (this.finished) break;
        await this.#consume();
        failures = 0;
      } catch (e) {
        if (this.closed) break;
        failures++;
        logger.warn({ err: e, subject: this.subject }, "follow subscription failed; recreating it");
      }
      if (this.finished) break;
      const backoff = failures === 0 ? 50 : Math.min(250 * 2 ** failures, 5_000);
      await sleep(backoff, undefined, { signal: this.#stop.signal }).catch(() => {});
    }
  }

  /** Reads the subject's last message: the ring starts with it, the log holds what came before. */
  async #anchor(): Promise<void> {
    const { store, stream, decode } = this.#ctx;
    const jsm = await store.manager();
    const last = await jsm.streams.getMessage(stream, { last_by_subj: this.fullSubject });
    if (this.closed) return;
    if (last === null) {
      this.ring.reset(1);
    } else {
      const msg: EventMessage = {
        subject: last.subject,
        seq: last.seq,
        data: last.data,
        headers: last.header,
      };
      let events: readonly Decoded<T>[];
      try {
        events = decodeAll(decode, msg);
      } catch (e) {
        this.#fail(e, 0);
        return;
      }
      this.ring.reset(events[0]?.sequence ?? 1);
      this.#accept(msg.seq, events, msg.data.length);
      this.lastStreamSeq = last.seq;
    }
    this.anchored = true;
    this.#notify();
  }

  async #consume(): Promise<void> {
    const { store, stream, readBatch, counters } = this.#ctx;
    const consumer = await orderedConsumer({
      js: store.js,
      stream,
      subject: this.fullSubject,
      from: this.lastStreamSeq > 0 ? this.lastStreamSeq + 1 : 0,
    });
    counters.sharedConsumers++;
    try {
      // expires 10 s: idle heartbeats every 5 s, so nats.js notices a dead pull and recreates the consumer.
      const messages = await consumer.consume({ max_messages: readBatch, expires: 10_000 });
      this.#messages = messages;
      this.lastActivity = Date.now();
      onConsumerLost(messages, () => {
        if (this.#messages !== messages) return;
        this.#ctx.logger.warn(
          { subject: this.subject },
          "follow subscription's consumer was deleted; recreating it",
        );
        this.#ctx.counters.sharedRestarts++;
        messages.stop();
      });
      if (this.closed) messages.stop();
      for await (const m of messages) {
        this.lastActivity = Date.now();
        // An ordered consumer never goes back; a recreated one starts after the last message received.
        if (m.seq <= this.lastStreamSeq) continue;
        this.lastStreamSeq = m.seq;
        this.#receive(m);
        if (this.finished) break;
      }
    } finally {
      this.#messages?.stop();
      this.#messages = undefined;
      // Ephemeral consumers expire on their own; deleting now keeps the server tidy.
      consumer.delete().catch(() => {});
    }
  }

  #receive(m: JsMsg): void {
    let events: readonly Decoded<T>[];
    try {
      events = decodeAll(this.#ctx.decode, m);
    } catch (e) {
      // Never skip: followers get everything before it, then this error.
      this.#fail(e, this.ring.next);
      return;
    }
    this.#accept(m.seq, events, m.data.length);
    this.#notify();
  }

  #accept(streamSeq: number, events: readonly Decoded<T>[], bytes: number): void {
    const first = events[0];
    if (first) this.marks.add(first.sequence, streamSeq);
    let charge = bytes;
    for (const e of events) {
      if (this.terminalSeq !== undefined) break;
      const added = this.ring.push({ ...e, streamSequence: streamSeq, bytes: charge });
      charge = 0;
      if (added && e.terminal) this.terminalSeq = e.sequence;
    }
  }

  #fail(error: unknown, at: number): void {
    this.#ctx.logger.error(
      { err: error, subject: this.subject },
      "undecodable message on a followed subject",
    );
    this.failure = { error, at };
    this.#messages?.stop();
    this.#notify();
  }

  #notify(): void {
    this.#changed.resolve();
    this.#changed = Promise.withResolvers<void>();
  }
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
  readonly #store: EventStore;
  readonly #stream: string;
  readonly #subjectOf: (id: string) => string;
  readonly #decode: Decoder<T>;
  readonly #logger: Logger;
  readonly #heartbeatMs: number;
  readonly #lingerMs: number;
  readonly #limits: { maxEvents: number; maxBytes: number };
  readonly #stallMs: number;
  readonly #readBatch: number;
  readonly #subs = new Map<string, Subscription<T>>();
  readonly #counters: Counters = {
    subscriptionsOpened: 0,
    sharedConsumers: 0,
    sharedRestarts: 0,
    catchUps: 0,
  };
  readonly #ctx: Context<T>;
  readonly #watchdog: NodeJS.Timeout;
  #watching = false;
  #closed = false;

  constructor(options: FollowHubOptions<T>) {
    this.#store = options.store;
    this.#stream = options.store.namespace.stream(options.stream);
    this.#subjectOf = options.subjectOf;
    this.#decode = options.decode;
    this.#logger = options.logger;
    this.#heartbeatMs = positive("heartbeatMs", options.heartbeatMs ?? 10_000);
    this.#lingerMs = nonNegative("idleUnsubscribeMs", options.idleUnsubscribeMs ?? 5_000);
    this.#limits = {
      maxEvents: positive("bufferEvents", options.bufferEvents ?? 512),
      maxBytes: positive("bufferBytes", options.bufferBytes ?? 1024 * 1024),
    };
    this.#stallMs = positive("stallTimeoutMs", options.stallTimeoutMs ?? 15_000);
    this.#readBatch = positive("readBatch", options.readBatch ?? 256);
    this.#ctx = {
      store: this.#store,
      stream: this.#stream,
      decode: this.#decode,
      logger: this.#logger,
      readBatch: this.#readBatch,
      counters: this.#counters,
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
    options: FollowOptions = {},
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
    return this.#follow(subject, after, signal, idleMs);
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
    return { subscriptions: this.#subs.size, followers, bufferedEvents, bufferedBytes, ...this.#counters };
  }

  /** Stops every subscription; followers still running end with UnavailableError. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watchdog);
    const subs = [...this.#subs.values()];
    this.#subs.clear();
    await Promise.all(subs.map((s) => s.close()));
  }

  async *#follow(
    subject: string,
    after: number,
    signal: AbortSignal,
    idleMs: number,
  ): AsyncGenerator<FollowItem<T>> {
    if (signal.aborted) return;
    if (this.#closed) throw new UnavailableError("the follow hub is closed");
    const sub = this.#acquire(subject);
    const heartbeatMs = this.#heartbeatMs;
    /** The last sequence delivered: the follower takes exactly delivered + 1 next. */
    let delivered = after;
    let lastYield = Date.now();
    let lastEvent = lastYield;
    let cursor: LogCursor | undefined;
    /** Stream sequence of the subject's last message when the cursor opened: the read ends there. */
    let cursorEnd = 0;
    /** `delivered` when the cursor opened: a read that ends without moving it found a gap. */
    let cursorFrom = 0;
    let cursorActive = 0;
    const closeCursor = () => {
      cursor?.close();
      cursor = undefined;
    };
    try {
      for (;;) {
        if (signal.aborted) return;
        if (sub.closed) throw new UnavailableError("the follow hub is closed");
        if (sub.terminalSeq !== undefined && delivered >= sub.terminalSeq) return;
        if (sub.failure && delivered + 1 >= sub.failure.at) throw sub.failure.error;

        if (sub.anchored) {
          const ring = sub.ring;
          const want = delivered + 1;
          const inRing = want >= ring.first && want < ring.next;
          // A follower reading the log stays on it until it is in the newer half of
          // the ring, so a slow reader does not flap between the two at the edge.
          if (inRing && (cursor === undefined || want - ring.first >= ring.size >> 1)) {
            closeCursor();
            const e = ring.get(want);
            if (e) {
              delivered = e.sequence;
              lastYield = lastEvent = Date.now();
              yield { kind: "event", sequence: e.sequence, terminal: e.terminal, payload: e.payload };
              if (e.terminal) return;
              continue;
            }
          }
          if (cursor !== undefined || want < ring.first) {
            if (cursor === undefined) {
              const end = await this.#lastStreamSequence(sub);
              if (end === 0) throw new FollowGapError(subject, want, sub.ring.first);
              cursor = await this.#openCursor(sub, want);
              cursorEnd = end;
              cursorFrom = delivered;
              cursorActive = Date.now();
              if (signal.aborted) return;
            }
            const deadline = Math.min(
              lastYield + heartbeatMs,
              lastEvent + idleMs,
              cursorActive + this.#stallMs,
            );
            const r = await readCursor(cursor, signal, deadline - Date.now());
            if (r.kind === "aborted") return;
            if (r.kind === "lost") {
              // Reopened on the next turn, from the closest mark at or below what comes next.
              closeCursor();
              continue;
            }
            if (r.kind === "timeout") {
              const now = Date.now();
              if (now >= lastEvent + idleMs) throw new FollowTimeoutError(subject, idleMs);
              if (now >= cursorActive + this.#stallMs) {
                this.#logger.warn({ subject }, "log read for a follower stalled; reopening it");
                closeCursor();
              } else if (now >= lastYield + heartbeatMs) {
                lastYield = now;
                yield { kind: "heartbeat" };
              }
              continue;
            }
            cursorActive = Date.now();
            const m = r.msg;
            const events = decodeAll(this.#decode, m);
            const first = events[0];
            if (first) sub.marks.add(first.sequence, m.seq);
            for (const e of events) {
              if (e.sequence <= delivered) continue;
              if (e.sequence > delivered + 1) throw new FollowGapError(subject, delivered + 1, e.sequence);
              delivered = e.sequence;
              lastYield = lastEvent = Date.now();
              yield { kind: "event", sequence: e.sequence, terminal: e.terminal, payload: e.payload };
              if (e.terminal || signal.aborted) return;
            }
            if (m.seq >= cursorEnd || m.info.pending === 0) {
              closeCursor();
              // The log was read to its end without the next event, yet the ring starts past it.
              if (delivered === cursorFrom && delivered + 1 < sub.ring.first) {
                throw new FollowGapError(subject, delivered + 1, sub.ring.first);
              }
            }
            continue;
          }
        }

        // Nothing to deliver yet: wait for the subscription (its anchor or the next event).
        const deadline = Math.min(lastYield + heartbeatMs, lastEvent + idleMs);
        const r = await raceWith(sub.changed, signal, deadline - Date.now());
        if (r === "aborted") return;
        if (r === "timeout") {
          const now = Date.now();
          if (now >= lastEvent + idleMs) throw new FollowTimeoutError(subject, idleMs);
          if (now >= lastYield + heartbeatMs) {
            lastYield = now;
            yield { kind: "heartbeat" };
          }
        }
      }
    } finally {
      closeCursor();
      this.#release(sub);
    }
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

  async #openCursor(sub: Subscription<T>, want: number): Promise<LogCursor> {
    try {
      const cursor = await LogCursor.open(
        { js: this.#store.js, stream: this.#stream, subject: sub.fullSubject, from: sub.marks.floor(want) },
        this.#readBatch,
      );
      this.#counters.catchUps++;
      return cursor;
    } catch (e) {
      throw new UnavailableError("cannot read the log", { cause: e });
    }
  }

  async #lastStreamSequence(sub: Subscription<T>): Promise<number> {
    try {
      const jsm = await this.#store.manager();
      const m = await jsm.streams.getMessage(this.#stream, { last_by_subj: sub.fullSubject });
      return m?.seq ?? 0;
    } catch (e) {
      throw new UnavailableError("cannot read the log", { cause: e });
    }
  }

  /** Recreates shared consumers that went quiet while their subject holds newer messages. */
  async #watch(): Promise<void> {
    if (this.#watching || this.#closed) return;
    this.#watching = true;
    try {
      const now = Date.now();
      for (const sub of [...this.#subs.values()]) {
        if (!sub.consuming || sub.finished || now - sub.lastActivity < this.#stallMs) continue;
        // Checked again only after another quiet period.
        sub.lastActivity = now;
        const last = await this.#lastStreamSequence(sub).catch(() => 0);
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

async function readCursor(
  cursor: LogCursor,
  signal: AbortSignal,
  timeoutMs: number,
): ReturnType<LogCursor["next"]> {
  try {
    return await cursor.next(signal, timeoutMs);
  } catch (e) {
    throw new UnavailableError("cannot read the log", { cause: e });
  }
}

function isList<T>(v: Decoded<T> | readonly Decoded<T>[]): v is readonly Decoded<T>[] {
  return Array.isArray(v);
}

/** Decodes a message's events and checks they are consecutive positive sequences. */
function decodeAll<T>(decode: Decoder<T>, msg: EventMessage): readonly Decoded<T>[] {
  const out = decode(msg);
  const events = isList(out) ? out : [out];
  if (events.length === 0) throw new Error(`message ${msg.seq} on ${msg.subject} holds no event`);
  let previous: number | undefined;
  for (const e of events) {
    if (!Number.isSafeInteger(e.sequence) || e.sequence < 1) {
      throw new Error(`message ${msg.seq} on ${msg.subject} holds an event with sequence ${e.sequence}`);
    }
    if (previous !== undefined && e.sequence !== previous + 1) {
      throw new Error(`message ${msg.seq} on ${msg.subject} holds non-consecutive sequences`);
    }
    previous = e.sequence;
  }
  return events;
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
