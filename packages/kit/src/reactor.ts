import {
  AckPolicy,
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { DeadLetter, DeadLetterStore } from "./dead-letters.js";
import type { EventStore } from "./event-store.js";
import type { RecordedEvent } from "./events.js";
import type { Logger } from "./logger.js";
import type { ConsumerState, ConsumerStatus, ManagedConsumer } from "./managed.js";

export interface ReactorOptions {
  /** Durable consumer name, unique within the service (the namespace prefix is added). */
  name: string;
  store: EventStore;
  /** Logical stream name, e.g. "AUTH". */
  stream: string;
  /** Relative subject filter (one subject; NATS 2.9 has no multi-filter consumers). */
  filterSubject?: string;
  /**
   * The reaction to one message's events. It must be idempotent (use the event
   * id): delivery is at least once, since a crash between the effect and the
   * ack redelivers the message.
   */
  handle: (events: RecordedEvent[]) => Promise<void>;
  deadLetters: DeadLetterStore;
  logger: Logger;
  /** Attempts before the message is dead-lettered (default 5). */
  maxDeliver?: number;
  /** Delay before each redelivery, by attempt (default 250 ms, 1 s, 5 s, 15 s, then the last). */
  backoffMs?: readonly number[];
  /** How long a delivered message may stay unacked before redelivery (default 30 s). */
  ackWaitMs?: number;
  /** Where a new durable starts: every stored event (default) or only new ones. */
  deliverFrom?: "all" | "new";
  /**
   * Failures that say "not now" rather than "never" (a dependency away, e.g.
   * a virus scanner): such a message is nak'ed with the backoff and retried
   * for as long as it takes, never dead-lettered. With this option the
   * consumer has no delivery limit of its own; other failures are still
   * dead-lettered once the message has been delivered maxDeliver times
   * (counting the "not now" deliveries: a message that waited out an outage
   * gets one attempt after it before it is dead-lettered).
   */
  retryIndefinitely?: (error: unknown) => boolean;
}

const DEFAULT_BACKOFF_MS = [250, 1_000, 5_000, 15_000];

/**
 * A cross-service reaction on a durable pull consumer: each message is acked
 * only after its effect is committed; a failure is retried with backoff up to
 * maxDeliver attempts, then dead-lettered (recorded before the ack) so the
 * consumer moves on.
 */
export class Reactor implements ManagedConsumer {
  readonly name: string;
  readonly #o: ReactorOptions;
  readonly #streamName: string;
  readonly #durable: string;
  readonly #maxDeliver: number;
  readonly #backoff: readonly number[];
  #state: ConsumerState = "stopped";
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  #lastError: string | undefined;

  constructor(options: ReactorOptions) {
    this.#o = options;
    this.name = options.name;
    this.#streamName = options.store.namespace.stream(options.stream);
    this.#durable = options.store.namespace.consumer(options.name);
    this.#maxDeliver = options.maxDeliver ?? 5;
    this.#backoff = options.backoffMs ?? DEFAULT_BACKOFF_MS;
    if (this.#maxDeliver < 1) throw new Error("maxDeliver must be at least 1");
  }

  async start(): Promise<void> {
    const jsm = await this.#o.store.manager();
    const config = {
      durable_name: this.#durable,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(this.#o.ackWaitMs ?? 30_000),
      // One more than our own limit: the last delivery is the one we dead-letter.
      // Unlimited when some failures are retried for as long as they last.
      max_deliver: this.#o.retryIndefinitely ? -1 : this.#maxDeliver + 1,
      max_ack_pending: 1_000,
      ...(this.#o.filterSubject
        ? { filter_subject: this.#o.store.namespace.subject(this.#o.filterSubject) }
        : {}),
    };
    try {
      await jsm.consumers.info(this.#streamName, this.#durable);
      await jsm.consumers.update(this.#streamName, this.#durable, config);
    } catch (e) {
      if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound)) throw e;
      await jsm.consumers.add(this.#streamName, {
        ...config,
        deliver_policy: this.#o.deliverFrom === "new" ? DeliverPolicy.New : DeliverPolicy.All,
      });
    }
    this.#state = "running";
    const consumer = await this.#o.store.js.consumers.get(this.#streamName, this.#durable);
    this.#loop = this.#run(consumer);
  }

  async #run(consumer: Consumer): Promise<void> {
    while (this.#state === "running") {
      try {
        this.#messages = await consumer.consume({ max_messages: 100 });
        for await (const msg of this.#messages) {
          await this.#process(msg);
          if (this.#state !== "running") break;
        }
      } catch (e) {
        if (this.#state !== "running") break;
        this.#lastError = (e as Error).message;
        this.#o.logger.warn({ err: e, reactor: this.name }, "reactor consume loop failed; restarting");
        await sleep(1_000);
      }
    }
  }

  async #process(msg: JsMsg): Promise<void> {
    const attempt = msg.info.deliveryCount;
    try {
      const events = this.#o.store.decode(this.#streamName, msg);
      if (attempt > this.#maxDeliver && !this.#o.retryIndefinitely) {
        throw new Error("delivered past maxDeliver");
      }
      await this.#o.handle(events);
      msg.ack();
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      this.#lastError = error;
      const notNow = this.#o.retryIndefinitely?.(e) === true;
      if (attempt >= this.#maxDeliver && !notNow) {
        await this.#o.deadLetters.add({
          consumer: this.name,
          stream: this.#streamName,
          message: msg,
          attempts: attempt,
          error,
        });
        this.#o.logger.error(
          { reactor: this.name, seq: msg.seq, attempts: attempt, err: e },
          "event dead-lettered after its last attempt",
        );
        // Recorded first, so a crash here redelivers rather than loses it. term(), not term(reason): 2.9 ignores reasons.
        msg.term();
        return;
      }
      const delay = this.#backoff[Math.min(attempt - 1, this.#backoff.length - 1)] ?? 1_000;
      this.#o.logger.warn(
        { reactor: this.name, seq: msg.seq, attempt, err: e },
        "reaction failed; will retry",
      );
      msg.nak(delay);
    }
  }

  async stop(): Promise<void> {
    if (this.#state === "stopped") return;
    this.#state = "stopped";
    await this.#messages?.close();
    await this.#loop;
  }

  healthy(): boolean {
    return this.#state === "running";
  }

  async status(): Promise<ConsumerStatus> {
    const jsm = await this.#o.store.manager();
    const [info, stream, deadLetters] = await Promise.all([
      jsm.consumers.info(this.#streamName, this.#durable),
      jsm.streams.info(this.#streamName),
      this.#o.deadLetters.countPending(this.name),
    ]);
    const checkpoint = info.ack_floor.stream_seq;
    return {
      name: this.name,
      stream: this.#streamName,
      state: this.#state,
      checkpoint,
      head: stream.state.last_seq,
      lag: info.num_pending + info.num_ack_pending,
      version: 1,
      strict: false,
      deadLetters,
      lastError: this.#lastError,
      rebuild: undefined,
    };
  }

  /** Runs the reaction again for a dead-lettered message, then marks it replayed. */
  async replay(entry: DeadLetter): Promise<void> {
    await this.#o.handle(this.#o.store.decode(this.#streamName, entry.message));
    if (!(await this.#o.deadLetters.markReplayed(entry.id))) {
      throw new Error(`dead letter ${entry.id} was already replayed`);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
