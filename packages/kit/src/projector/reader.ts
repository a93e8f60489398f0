import { setTimeout as sleep } from "node:timers/promises";
import { type ConsumerMessages, DeliverPolicy, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";

export interface StreamReaderOptions {
  js: JetStreamClient;
  /** Full stream name. */
  stream: string;
  /** Full subject filter (one subject). */
  filterSubject: string | undefined;
  /** First stream sequence to read. */
  from: number;
  /** Messages held ahead of the applier (and asked of the server per pull). */
  capacity: number;
  onError: (e: unknown) => void;
}

/**
 * Reads a stream in order from a sequence, through an ordered (ephemeral)
 * pull consumer, into a bounded buffer from which whole batches are taken.
 *
 * The checkpoint lives with the read model, so nothing is acked: a crash or a
 * lost consumer just means reading again from the checkpoint. The buffer is
 * filled by iterating the consumer, and nats.js issues the next pull only as
 * its iterator advances, so a slow applier throttles the server instead of
 * growing memory. The buffer lets the applier take everything already
 * delivered (up to a batch) without waiting for a full batch that may never
 * come on a quiet stream.
 */
export class StreamReader {
  readonly #o: StreamReaderOptions;
  #next: number;
  #buffer: JsMsg[] = [];
  #closed = false;
  #messages: ConsumerMessages | undefined;
  #pump: Promise<void> | undefined;
  #lastActivity = Date.now();
  /** Resolved when the buffer gains a message (for take) or loses some (for the pump). */
  #changed = Promise.withResolvers<void>();

  constructor(options: StreamReaderOptions) {
    this.#o = options;
    this.#next = Math.max(1, options.from);
  }

  start(): this {
    this.#pump ??= this.#run();
    return this;
  }

  /** The next sequence the consumer will deliver (one past the last one received). */
  get nextSequence(): number {
    return this.#next;
  }

  /** Milliseconds since a message last arrived or was taken (or a consumer was created). */
  get idleMs(): number {
    return this.#buffer.length > 0 ? 0 : Date.now() - this.#lastActivity;
  }

  /**
   * Waits for at least one message, then returns up to max of them in stream
   * order. Returns [] when the signal aborts or the reader closes.
   */
  async take(max: number, signal: AbortSignal): Promise<JsMsg[]> {
    const wake = () => this.#notify();
    signal.addEventListener("abort", wake, { once: true });
    try {
      while (this.#buffer.length === 0) {
        if (this.#closed || signal.aborted) return [];
        await this.#changed.promise;
      }
    } finally {
      signal.removeEventListener("abort", wake);
    }
    const out = this.#buffer.splice(0, max);
    // Taking counts as activity: a pump held back by a full buffer is not a stalled consumer.
    this.#lastActivity = Date.now();
    this.#notify();
    return out;
  }

  /** Drops the current consumer; a new one starts after the last message received. */
  restart(): void {
    // The new consumer gets a full stall period before the watchdog looks again.
    this.#lastActivity = Date.now();
    this.#messages?.stop();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#messages?.stop();
    this.#notify();
    await this.#pump;
    this.#buffer = [];
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      try {
        const consumer = await this.#o.js.consumers.get(this.#o.stream, {
          // A single string: an array would ask for 2.10+ multi-filter consumers.
          ...(this.#o.filterSubject ? { filter_subjects: this.#o.filterSubject } : {}),
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: this.#next,
        });
        try {
          // expires 10 s: heartbeats every 5 s, so a dead pull is noticed within ~10 s.
          this.#messages = await consumer.consume({ max_messages: this.#o.capacity, expires: 10_000 });
          this.#lastActivity = Date.now();
          if (this.#closed) this.#messages.stop();
          for await (const msg of this.#messages) {
            failures = 0;
            this.#lastActivity = Date.now();
            // Defensive: an ordered consumer resets itself on gaps, never goes back.
            if (msg.seq < this.#next) continue;
            this.#next = msg.seq + 1;
            this.#buffer.push(msg);
            this.#notify();
            while (this.#buffer.length >= this.#o.capacity && !this.#closed) await this.#changed.promise;
            if (this.#closed) break;
          }
        } finally {
          this.#messages?.stop();
          this.#messages = undefined;
          // Ephemeral consumers expire on their own; deleting now keeps the server tidy.
          consumer.delete().catch(() => {});
        }
      } catch (e) {
        if (this.#closed) break;
        failures++;
        this.#o.onError(e);
      }
      if (!this.#closed) await sleep(failures === 0 ? 50 : Math.min(250 * 2 ** failures, 5_000));
    }
  }

  #notify(): void {
    this.#changed.resolve();
    this.#changed = Promise.withResolvers<void>();
  }
}
