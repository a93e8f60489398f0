import { setTimeout as sleep } from "node:timers/promises";
import { type EventMessage, type EventStore, type Logger, UnavailableError } from "@spool/kit";
import { Backfill, type CatchUpSlots } from "./backfill.js";
import { type Decoded, type Decoder, decodeAll } from "./decode.js";
import type { StreamFeed } from "./feed.js";
import { type ConsumerMessages, followOrdered, type JsMsg, LogCursor, raceWith } from "./log-cursor.js";
import { Marks, Ring } from "./ring.js";

/** Counted across a hub's subscriptions and followers (see FollowHubStats). */
export interface Counters {
  subscriptionsOpened: number;
  sharedConsumers: number;
  sharedRestarts: number;
  /** Log reads (consumers) for followers behind the ring: shared backfills plus followers' own reads. */
  catchUps: number;
  /** Of catchUps, the shared ones (one per subject and burst of followers: Backfill). */
  sharedCatchUps: number;
}

/** What every subscription of a hub shares. */
export interface SubscriptionContext<T> {
  store: EventStore;
  stream: string;
  decode: Decoder<T>;
  logger: Logger;
  readBatch: number;
  counters: Counters;
  /** Most bytes one subject's shared catch-up read holds (0: no shared catch-up, every follower reads alone). */
  backfillBytes: number;
  /** The hub's cap on followers reading the log on their own at once. */
  slots: CatchUpSlots;
  stallMs: number;
  /** The process-wide feed of every subject; undefined: each subscription runs its own consumer. */
  feed?: StreamFeed | undefined;
}

/** A follower waiting for the subscription to change (see Subscription.wait), or for a catch-up slot. */
export interface Waiter {
  /** Ends the wait. */
  wake(): void;
  /** The subscription changed (an event, its anchor, its end): ends the wait, or handles it in place. */
  changed(): void;
}

/** A subscription that cannot go on: followers at or past `at` get `error`. */
export interface Failure {
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
export class Subscription<T> {
  readonly subject: string;
  readonly fullSubject: string;
  readonly ring: Ring<T>;
  readonly marks = new Marks();
  readonly #ctx: SubscriptionContext<T>;
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
  /** The shared read of the log for followers behind the ring, while any reads it. */
  backfill: Backfill<T> | undefined;
  readonly #stop = new AbortController();
  #messages: ConsumerMessages | undefined;
  /**
   * Followers waiting for the next change, woken directly by #notify: no
   * promise, timer or abort listener per follower per event (the profile's
   * "follower wake-ups", docs/BENCHMARKS.md).
   */
  #waiting = new Set<Waiter>();
  #run: Promise<void> | undefined;
  /** With a feed: its messages that arrived while this subscription was anchoring. */
  #early: JsMsg[] | undefined;

  constructor(ctx: SubscriptionContext<T>, subject: string, limits: { maxEvents: number; maxBytes: number }) {
    this.#ctx = ctx;
    this.subject = subject;
    this.fullSubject = ctx.store.namespace.subject(subject);
    this.ring = new Ring<T>(limits);
  }

  /** Wakes `waiter` once, at the next change (event, anchor, terminal, failure, close). */
  wait(waiter: Waiter): void {
    this.#waiting.add(waiter);
  }

  /** Forgets a waiter woken by something else (its timer, its abort). */
  unwait(waiter: Waiter): void {
    this.#waiting.delete(waiter);
  }

  /** True while its own shared consumer is delivering (never with a feed: the feed watches itself). */
  get consuming(): boolean {
    return this.#messages !== undefined;
  }

  get finished(): boolean {
    return this.closed || this.terminalSeq !== undefined || this.failure !== undefined;
  }

  start(): void {
    const feed = this.#ctx.feed;
    this.#run ??= feed ? this.#follow(feed) : this.#loop();
  }

  /** Drops the current consumer; the loop creates a new one after the last message received. */
  restart(): void {
    this.lastActivity = Date.now();
    this.#messages?.stop();
  }

  get slots(): CatchUpSlots {
    return this.#ctx.slots;
  }

  /**
   * The shared catch-up read that can give a follower `want` next, started
   * when there is none (undefined: the follower reads the log on its own —
   * shared catch-up is off, or the current read started later than `want`,
   * filled its budget or stopped). The caller counts itself in `readers`.
   */
  backfillFor(want: number): Backfill<T> | undefined {
    if (this.#ctx.backfillBytes === 0 || !this.anchored) return undefined;
    const current = this.backfill;
    if (current) {
      // Started at the subject's first message: nothing older exists, so `want` below it is a gap.
      const gapBelow = current.fromStart && current.first > 0 && want < current.first;
      return current.serves(want) || gapBelow ? current : undefined;
    }
    const from = this.marks.floor(want);
    const b = new Backfill<T>(from === 0);
    this.backfill = b;
    void this.#runBackfill(b, from);
    return b;
  }

  /** A follower stopped reading `b`; the last one out ends the read and drops it. */
  leaveBackfill(b: Backfill<T>): void {
    b.readers--;
    if (b.readers > 0) return;
    b.stop.abort();
    if (b.state === "reading") b.state = "stopped";
    if (this.backfill === b) this.backfill = undefined;
  }

  async #runBackfill(b: Backfill<T>, from: number): Promise<void> {
    const { store, stream, readBatch, counters, logger, backfillBytes, stallMs } = this.#ctx;
    let cursor: LogCursor | undefined;
    try {
      cursor = await LogCursor.open({ js: store.js, stream, subject: this.fullSubject, from }, readBatch);
      counters.catchUps++;
      counters.sharedCatchUps++;
      while (b.state === "reading" && !b.stop.signal.aborted) {
        const r = await cursor.next(b.stop.signal, stallMs);
        if (r.kind === "aborted") break;
        if (r.kind !== "message") {
          // Lost or stalled: its readers go on alone (bounded by the hub's cap).
          b.state = "stopped";
          break;
        }
        const events = decodeAll(this.#ctx.decode, r.msg);
        const first = events[0];
        if (first) this.marks.add(first.sequence, r.msg.seq);
        let charge = r.msg.data.length;
        for (const e of events) {
          if (!b.push({ ...e, streamSequence: r.msg.seq, bytes: charge })) {
            b.state = "stopped";
            break;
          }
          charge = 0;
        }
        if (b.state !== "reading") break;
        if (b.next >= this.ring.first || (this.terminalSeq !== undefined && b.next > this.terminalSeq))
          b.state = "joined";
        else if (b.bytes >= backfillBytes) b.state = "full";
        this.#notify();
      }
    } catch (e) {
      if (!b.stop.signal.aborted)
        logger.warn({ err: e, subject: this.subject }, "shared catch-up read failed");
      b.state = "stopped";
    } finally {
      cursor?.close();
      if (b.state === "reading") b.state = "stopped";
      if (this.backfill === b && b.state !== "joined" && b.state !== "full") this.backfill = undefined;
      this.#notify();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.#ctx.feed?.detach(this.fullSubject, this);
    this.backfill?.stop.abort();
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.#stop.abort();
    this.#messages?.stop();
    this.#notify();
    await this.#run;
  }

  /** The events of a message of this subject, checked (see decodeAll). */
  decode(msg: EventMessage): readonly Decoded<T>[] {
    return decodeAll(this.#ctx.decode, msg);
  }

  /** Stream sequence of the subject's last stored message; 0 when it holds none. */
  async lastStoredSequence(): Promise<number> {
    const { store, stream } = this.#ctx;
    try {
      const jsm = await store.manager();
      const m = await jsm.streams.getMessage(stream, { last_by_subj: this.fullSubject });
      return m?.seq ?? 0;
    } catch (e) {
      throw new UnavailableError("cannot read the log", { cause: e });
    }
  }

  /** A one-off read of the log for a follower, from the closest mark at or below `want`. */
  async openCursor(want: number): Promise<LogCursor> {
    const { store, stream, readBatch, counters } = this.#ctx;
    try {
      const cursor = await LogCursor.open(
        { js: store.js, stream, subject: this.fullSubject, from: this.marks.floor(want) },
        readBatch,
      );
      counters.catchUps++;
      return cursor;
    } catch (e) {
      throw new UnavailableError("cannot read the log", { cause: e });
    }
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

  /**
   * With the process-wide feed: a finished subject is anchored on its
   * terminal message and needs nothing more. A live one is attached first,
   * then anchored on its last message read after that (so nothing stored
   * in between is missed); the feed's messages that came meanwhile are then
   * taken, skipping what the anchor already holds.
   */
  async #follow(feed: StreamFeed): Promise<void> {
    let failures = 0;
    while (!this.anchored && !this.finished) {
      try {
        const first = await this.#readLast();
        if (this.closed) return;
        if (first !== null && this.#endsWithTerminal(first)) {
          this.#anchorAt(first);
          return;
        }
        // Not waited for past close(): the feed may be unable to start while NATS is away.
        await raceWith(feed.attach(this.fullSubject, this), this.#stop.signal, Number.POSITIVE_INFINITY);
        if (this.closed) return;
        this.#anchorAt(await this.#readLast());
      } catch (e) {
        if (this.closed) return;
        failures++;
        this.#ctx.logger.warn({ err: e, subject: this.subject }, "follow subscription failed; retrying");
        await sleep(Math.min(250 * 2 ** failures, 5_000), undefined, { signal: this.#stop.signal }).catch(
          () => {},
        );
      }
    }
    const early = this.#early ?? [];
    this.#early = undefined;
    for (const m of early) this.receive(m);
    if (this.finished) feed.detach(this.fullSubject, this);
  }

  /** A message of this subject from the feed. */
  receive(m: JsMsg): void {
    if (this.finished) return;
    this.lastActivity = Date.now();
    if (!this.anchored) {
      this.#early ??= [];
      this.#early.push(m);
      return;
    }
    if (m.seq <= this.lastStreamSeq) return;
    this.lastStreamSeq = m.seq;
    this.#receive(m);
    if (this.finished) this.#ctx.feed?.detach(this.fullSubject, this);
  }

  async #readLast(): Promise<EventMessage | null> {
    const { store, stream } = this.#ctx;
    const jsm = await store.manager();
    const last = await jsm.streams.getMessage(stream, { last_by_subj: this.fullSubject });
    return last === null
      ? null
      : { subject: last.subject, seq: last.seq, data: last.data, headers: last.header };
  }

  /** True when the message's last event ends the subject (an undecodable one is left to #anchorAt). */
  #endsWithTerminal(msg: EventMessage): boolean {
    try {
      return decodeAll(this.#ctx.decode, msg).at(-1)?.terminal === true;
    } catch {
      return false;
    }
  }

  /** Reads the subject's last message: the ring starts with it, the log holds what came before. */
  async #anchor(): Promise<void> {
    const last = await this.#readLast();
    if (this.closed) return;
    this.#anchorAt(last);
  }

  #anchorAt(last: EventMessage | null): void {
    const { decode } = this.#ctx;
    if (last === null) {
      this.ring.reset(1);
    } else {
      let events: readonly Decoded<T>[];
      try {
        events = decodeAll(decode, last);
      } catch (e) {
        this.#fail(e, 0);
        return;
      }
      this.ring.reset(events[0]?.sequence ?? 1);
      this.#accept(last.seq, events, last.data.length);
      this.lastStreamSeq = last.seq;
    }
    this.anchored = true;
    this.#notify();
  }

  #consume(): Promise<void> {
    const { store, stream, readBatch, counters, logger } = this.#ctx;
    return followOrdered({
      spec: {
        js: store.js,
        stream,
        subject: this.fullSubject,
        from: this.lastStreamSeq > 0 ? this.lastStreamSeq + 1 : 0,
      },
      readBatch,
      counters,
      logger,
      what: "follow subscription",
      setMessages: (messages) => {
        this.#messages = messages;
        this.lastActivity = Date.now();
      },
      lastSeq: () => this.lastStreamSeq,
      take: (m) => {
        this.lastActivity = Date.now();
        this.lastStreamSeq = m.seq;
        this.#receive(m);
        return !this.finished;
      },
      done: () => this.closed,
    });
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
    if (this.#waiting.size === 0) return;
    const waiting = this.#waiting;
    this.#waiting = new Set();
    for (const w of waiting) w.changed();
  }
}
