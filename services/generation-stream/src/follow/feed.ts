import { setTimeout as sleep } from "node:timers/promises";
import type { EventStore, Logger } from "@spool/kit";
import { type ConsumerMessages, followOrdered, type JsMsg } from "./log-cursor.js";
import type { Counters } from "./subscription.js";

/** What the feed hands one subject's messages to (a Subscription). */
export interface FeedSink {
  receive(m: JsMsg): void;
}

export interface FeedContext {
  store: EventStore;
  /** Full stream name. */
  stream: string;
  /** Full wildcard subject covering every followed subject, e.g. `<prefix>.gen.output.>`. */
  subject: string;
  readBatch: number;
  logger: Logger;
  counters: Counters;
}

/**
 * One ordered consumer over every subject of the output stream for this
 * process, handing each message to the subscription of its subject (and
 * dropping the rest). It replaces one consumer per followed subject: with
 * many followed generations nats-server wakes one consumer per append
 * instead of scanning and waking many, about a third of its CPU under
 * bench/gen (ADR 0014). It starts with the first subject attached and stops
 * when the last one leaves.
 *
 * Gap-free hand-over: attach() resolves once the feed's start is fixed (the
 * stream's last sequence when it started, or where it resumes after a
 * failure), so every message stored after that reaches the sink; the
 * subscription then reads its subject's last message and skips what it
 * already holds by stream sequence.
 */
export class StreamFeed {
  readonly #ctx: FeedContext;
  readonly #sinks = new Map<string, FeedSink>();
  /** Stream sequence of the last message received; the next consumer starts after it. */
  #lastStreamSeq = 0;
  /** When a message last arrived or a consumer was (re)created. */
  lastActivity = Date.now();
  #messages: ConsumerMessages | undefined;
  #run: Promise<void> | undefined;
  /** Resolves once the running loop has fixed where it reads from. */
  #positioned: Promise<void> | undefined;
  #stop = new AbortController();

  constructor(ctx: FeedContext) {
    this.#ctx = ctx;
  }

  get subject(): string {
    return this.#ctx.subject;
  }

  /** True while a consumer is delivering. */
  get consuming(): boolean {
    return this.#messages !== undefined;
  }

  get lastStreamSeq(): number {
    return this.#lastStreamSeq;
  }

  /** Hands `subject`'s messages to `sink` from now on; resolves once none stored from now on can be missed. */
  async attach(subject: string, sink: FeedSink): Promise<void> {
    this.#sinks.set(subject, sink);
    if (this.#run === undefined) {
      this.#stop = new AbortController();
      const positioned = Promise.withResolvers<void>();
      this.#positioned = positioned.promise;
      this.#run = this.#loop(this.#stop.signal, positioned);
    }
    await this.#positioned;
  }

  /** Stops handing `subject`'s messages to `sink`; the last one out stops the feed. */
  detach(subject: string, sink: FeedSink): void {
    if (this.#sinks.get(subject) === sink) this.#sinks.delete(subject);
    if (this.#sinks.size > 0 || this.#run === undefined) return;
    this.#stop.abort();
    this.#messages?.stop();
    this.#messages = undefined;
    this.#run = undefined;
    this.#positioned = undefined;
    // A later start reads from the stream's end, not from where this one stopped.
    this.#lastStreamSeq = 0;
  }

  /** Drops the current consumer; the loop recreates it after the last message received. */
  restart(): void {
    this.lastActivity = Date.now();
    this.#messages?.stop();
  }

  async close(): Promise<void> {
    this.#sinks.clear();
    this.#stop.abort();
    this.#messages?.stop();
    this.#messages = undefined;
    await this.#run;
  }

  /** Stream sequence of the stream's last message (0 when empty). */
  async lastStoredSequence(): Promise<number> {
    const jsm = await this.#ctx.store.manager();
    const info = await jsm.streams.info(this.#ctx.stream);
    return info.state.last_seq;
  }

  async #loop(signal: AbortSignal, positioned: PromiseWithResolvers<void>): Promise<void> {
    let failures = 0;
    let from = 0;
    while (!signal.aborted) {
      try {
        if (from === 0) {
          // First start: everything after the stream's current end. Subscriptions read their
          // subject's last message after this, so nothing falls between the two.
          from = (await this.lastStoredSequence()) + 1;
          this.#lastStreamSeq = from - 1;
          positioned.resolve();
        }
        await this.#consume(from, signal);
        failures = 0;
      } catch (e) {
        if (signal.aborted) break;
        failures++;
        this.#ctx.logger.warn({ err: e, subject: this.#ctx.subject }, "follow feed failed; recreating it");
      }
      if (signal.aborted) break;
      if (this.#lastStreamSeq > 0) from = this.#lastStreamSeq + 1;
      const backoff = failures === 0 ? 50 : Math.min(250 * 2 ** failures, 5_000);
      await sleep(backoff, undefined, { signal }).catch(() => {});
    }
    // Attachers waiting on a feed stopped before it started are let go (their subscription is closing).
    positioned.resolve();
  }

  #consume(from: number, signal: AbortSignal): Promise<void> {
    const { store, stream, subject, readBatch, counters, logger } = this.#ctx;
    return followOrdered({
      spec: { js: store.js, stream, subject, from },
      readBatch,
      counters,
      logger,
      what: "follow feed",
      setMessages: (messages) => {
        // A run stopped by detach() leaves the state alone: a new run may already own it.
        if (signal.aborted) return;
        this.#messages = messages;
        this.lastActivity = Date.now();
      },
      lastSeq: () => this.#lastStreamSeq,
      take: (m) => {
        this.lastActivity = Date.now();
        this.#lastStreamSeq = m.seq;
        this.#sinks.get(m.subject)?.receive(m);
        return true;
      },
      // Stopped (the last subject left): what the old consumer still holds is not handed on.
      done: () => signal.aborted,
    });
  }
}
