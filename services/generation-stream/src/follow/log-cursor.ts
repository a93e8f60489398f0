import type { EventStore, Logger } from "@spool/kit";

type JetStreamClient = EventStore["js"];
type Consumer = Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>;
export type ConsumerMessages = Awaited<ReturnType<Consumer["consume"]>>;
/** A message delivered by a JetStream consumer. */
export type JsMsg = ConsumerMessages extends AsyncIterable<infer M> ? M : never;

export interface ConsumerSpec {
  js: JetStreamClient;
  /** Full stream name. */
  stream: string;
  /** Full subject (one subject: nats-server 2.9 has no multi-filter consumers). */
  subject: string;
  /** First stream sequence to read; 0 reads the subject from its first message. */
  from: number;
}

/** An ordered (ephemeral, unacked) consumer of one subject from a stream sequence. */
export function orderedConsumer(spec: ConsumerSpec): Promise<Consumer> {
  return spec.js.consumers.get(spec.stream, {
    // A single string: an array would ask for 2.10+ multi-filter consumers.
    filter_subjects: spec.subject,
    ...(spec.from > 0
      ? { deliver_policy: "by_start_sequence", opt_start_seq: spec.from }
      : { deliver_policy: "all" }),
  });
}

/**
 * Calls onLost when the server deletes the consumer under the iterator. nats.js
 * would recreate an ordered consumer only after missing two idle heartbeats
 * (about 15 s); the caller recreates it at once from its own position instead.
 * The watch ends when the messages stop and their iterator is drained.
 */
export function onConsumerLost(messages: ConsumerMessages, onLost: () => void): void {
  void (async () => {
    for await (const s of messages.status()) {
      if (s.type === "consumer_deleted") {
        onLost();
        return;
      }
    }
  })().catch(() => {});
}

/** How one live ordered consumer (a subscription's own, or the feed) is run by followOrdered. */
export interface LiveConsumer {
  spec: ConsumerSpec;
  readBatch: number;
  counters: { sharedConsumers: number; sharedRestarts: number };
  logger: Logger;
  /** Logged when the server deletes the consumer. */
  what: string;
  /** The messages are flowing (or stopped: undefined): the owner keeps them to stop or restart them. */
  setMessages(messages: ConsumerMessages | undefined): void;
  /** Stream sequence of the last message taken: older ones are skipped. */
  lastSeq(): number;
  /** Takes a message; false stops the consumer. */
  take(m: JsMsg): boolean;
  /** True once the owner is done (nothing more is taken). */
  done(): boolean;
}

/**
 * Runs one ordered consumer until it stops (stopped by its owner, lost, or
 * its connection gone), taking every message newer than the owner's last,
 * then deletes it. The owner recreates it from its last message: an ordered
 * consumer never goes back, and a recreated one starts after that.
 */
export async function followOrdered(c: LiveConsumer): Promise<void> {
  const consumer = await orderedConsumer(c.spec);
  c.counters.sharedConsumers++;
  let current: ConsumerMessages | undefined;
  try {
    // expires 10 s: idle heartbeats every 5 s, so nats.js notices a dead pull and recreates the consumer.
    const messages = await consumer.consume({ max_messages: c.readBatch, expires: 10_000 });
    current = messages;
    c.setMessages(messages);
    onConsumerLost(messages, () => {
      if (current !== messages) return;
      c.logger.warn({ subject: c.spec.subject }, `${c.what}'s consumer was deleted; recreating it`);
      c.counters.sharedRestarts++;
      messages.stop();
    });
    if (c.done()) messages.stop();
    for await (const m of messages) {
      if (c.done()) break;
      if (m.seq <= c.lastSeq()) continue;
      if (!c.take(m)) break;
    }
  } finally {
    current?.stop();
    current = undefined;
    c.setMessages(undefined);
    // Ephemeral consumers expire on their own; deleting now keeps the server tidy.
    consumer.delete().catch(() => {});
  }
}

export type CursorResult =
  | { kind: "message"; msg: JsMsg }
  | { kind: "timeout" }
  | { kind: "aborted" }
  /** The server deleted the consumer: reopen from the last message read. */
  | { kind: "lost" };

/**
 * A one-off read of a subject from the log, for a follower catching up. The
 * pending read survives a timeout, so the caller can send a heartbeat and ask
 * again without losing a message. nats.js pulls more only as the iterator
 * advances, so a follower that reads slowly holds at most `capacity` messages.
 */
export class LogCursor {
  readonly #consumer: Consumer;
  readonly #messages: ConsumerMessages;
  readonly #iterator: AsyncIterator<JsMsg>;
  #pending: Promise<IteratorResult<JsMsg>> | undefined;
  #closed = false;
  readonly #lost = Promise.withResolvers<"lost">();

  private constructor(consumer: Consumer, messages: ConsumerMessages) {
    this.#consumer = consumer;
    this.#messages = messages;
    this.#iterator = messages[Symbol.asyncIterator]();
    onConsumerLost(messages, () => this.#lost.resolve("lost"));
  }

  static async open(spec: ConsumerSpec, capacity: number): Promise<LogCursor> {
    const consumer = await orderedConsumer(spec);
    // expires 10 s: idle heartbeats every 5 s, so nats.js notices a dead pull and recreates the consumer.
    const messages = await consumer.consume({ max_messages: capacity, expires: 10_000 });
    return new LogCursor(consumer, messages);
  }

  /**
   * The next message, or "timeout" after `timeoutMs`, or "aborted" when the
   * signal fires. Throws when the consumer ends (it only ends when closed or
   * when its connection closes).
   */
  async next(signal: AbortSignal, timeoutMs: number): Promise<CursorResult> {
    if (signal.aborted) return { kind: "aborted" };
    this.#pending ??= this.#iterator.next();
    const pending = this.#pending;
    const raced = await raceWith(Promise.race([pending, this.#lost.promise]), signal, timeoutMs);
    if (raced === "timeout" || raced === "aborted" || raced === "lost") return { kind: raced };
    this.#pending = undefined;
    if (raced.done) throw new Error("log read ended before reaching the end of the subject");
    return { kind: "message", msg: raced.value };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#messages.stop();
    void this.#drain();
    // Ephemeral consumers expire on their own; deleting now keeps the server tidy.
    this.#consumer.delete().catch(() => {});
  }

  /** Reads the stopped iterator to its end, which also ends its status watch. */
  async #drain(): Promise<void> {
    try {
      if (this.#pending && (await this.#pending).done) return;
      while (!(await this.#iterator.next()).done) {}
    } catch {
      // Stopped with an error: nothing left to read either way.
    }
  }
}

/**
 * Waits for a promise, a timeout or an abort, whichever comes first, and
 * cleans up the timer and the listener either way.
 */
export async function raceWith<V>(
  promise: Promise<V>,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<V | "timeout" | "aborted"> {
  if (signal.aborted) return "aborted";
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<"timeout" | "aborted">((resolve) => {
    if (Number.isFinite(timeoutMs)) timer = setTimeout(() => resolve("timeout"), Math.max(0, timeoutMs));
    onAbort = () => resolve("aborted");
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, stop]);
  } finally {
    if (timer) clearTimeout(timer);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}
