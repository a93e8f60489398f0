import { type Consumer, type ConsumerMessages, DeliverPolicy } from "@nats-io/jetstream";
import { SessionRevoked } from "@spool/proto/spool/auth/v1/events.js";
import type { EventStore } from "../event-store.js";
import { BATCH_TYPE, Headers } from "../events.js";
import type { Logger } from "../logger.js";
import type { RevocationChecker } from "./verifier.js";

const SESSION_REVOKED = "spool.auth.v1.SessionRevoked";

export interface RevocationSetOptions {
  store: EventStore;
  logger: Logger;
  /** Logical name of the auth stream (default "AUTH"). */
  stream?: string;
  /**
   * How far back to read: no session outlives the refresh absolute lifetime,
   * so older revocations cannot matter (default 91 days).
   */
  lookbackMs?: number;
}

/**
 * The set of revoked sessions, fed from the auth service's events: every
 * service mounts one, so logout and admin revocation reach it through the
 * AUTH stream. It is a projection kept in memory and rebuilt from the log on
 * start; `ready` resolves once it has caught up with the stream head, and a
 * service should not serve before then (a restarted process must not accept
 * a token revoked while it was down).
 */
export class RevocationSet implements RevocationChecker {
  readonly #o: RevocationSetOptions;
  /** session id -> when its tokens expire anyway (ms); pruned after that. */
  readonly #revoked = new Map<string, number>();
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  #stopped = false;
  #appliedSeq = 0;
  #ready: Promise<void>;
  #markReady!: () => void;

  constructor(options: RevocationSetOptions) {
    this.#o = options;
    this.#ready = new Promise((resolve) => {
      this.#markReady = resolve;
    });
  }

  get ready(): Promise<void> {
    return this.#ready;
  }

  get size(): number {
    return this.#revoked.size;
  }

  isRevoked(sessionId: string): boolean {
    const until = this.#revoked.get(sessionId);
    return until !== undefined;
  }

  async start(): Promise<void> {
    const { store } = this.#o;
    const streamName = store.namespace.stream(this.#o.stream ?? "AUTH");
    const since = new Date(Date.now() - (this.#o.lookbackMs ?? 91 * 86_400_000));
    this.#loop = (async () => {
      while (!this.#stopped) {
        try {
          const consumer = await store.js.consumers.get(streamName, {
            filter_subjects: store.namespace.subject("auth.session.>"),
            ...(this.#appliedSeq > 0
              ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.#appliedSeq + 1 }
              : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() }),
          });
          this.#messages = await consumer.consume({ max_messages: 1_000 });
          let processed = 0;
          void this.#probeCaughtUp(consumer, () => processed);
          for await (const m of this.#messages) {
            const type = m.headers?.get(Headers.EventType);
            // A revocation may travel alone or in a command's batch (reuse detection writes two events).
            if (type === SESSION_REVOKED || type === BATCH_TYPE) {
              for (const event of store.decode(streamName, m)) {
                if (event.type !== SESSION_REVOKED) continue;
                const e = SessionRevoked.decode(event.data);
                this.#revoked.set(e.sessionId, Number(e.absoluteExpiresAtMs) || Number.MAX_SAFE_INTEGER);
              }
            }
            this.#appliedSeq = m.seq;
            processed++;
            if (m.info.pending === 0) this.#markReady();
          }
        } catch (e) {
          if (this.#stopped) break;
          this.#o.logger.warn({ err: e }, "revocation feed interrupted; resuming");
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    })();
    this.#pruneTimer = setInterval(() => this.#prune(), 60_000);
    this.#pruneTimer.unref();
  }

  #pruneTimer: NodeJS.Timeout | undefined;

  /**
   * Marks the set ready once the consumer has nothing pending and everything
   * it delivered has been applied; covers a stream with no revocation at all,
   * where no message would ever say so.
   */
  async #probeCaughtUp(consumer: Consumer, processed: () => number): Promise<void> {
    while (!this.#stopped) {
      try {
        const info = await consumer.info();
        if (info.num_pending === 0 && processed() >= info.delivered.consumer_seq) {
          this.#markReady();
          return;
        }
      } catch {
        // The ordered consumer is created lazily by consume(); ask again shortly.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  #prune(now = Date.now()): void {
    for (const [sid, until] of this.#revoked) if (until < now) this.#revoked.delete(sid);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#pruneTimer);
    await this.#messages?.close();
    await this.#loop;
  }
}
