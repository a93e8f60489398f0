import { type Consumer, type ConsumerMessages, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import {
  ServiceAccountDeleted,
  ServiceAccountDisabled,
  SessionRevoked,
  UserDeleted,
  UserDisabled,
  UserPasswordReset,
} from "@spool/proto/spool/auth/v1/events.js";
import { defineEvents, type EventOf, unreachable } from "../event-codec.js";
import type { EventStore } from "../event-store.js";
import { BATCH_TYPE, Headers } from "../events.js";
import type { Logger } from "../logger.js";
import { RevocationWatchers, type StopWatching, type WatchedToken } from "./revocation-watch.js";
import { AuthStreams } from "./streams.js";
import type { RevocationChecker } from "./verifier.js";

/** The AUTH events the feed follows (their type headers as auth writes them); others decode as unknown. */
const RevocationEvents = defineEvents(
  {
    SessionRevoked,
    UserDisabled,
    UserDeleted,
    UserPasswordReset,
    ServiceAccountDisabled,
    ServiceAccountDeleted,
  },
  { prefix: "spool.auth.v1." },
);

const SESSION_REVOKED = RevocationEvents.typeName("SessionRevoked");
const { AUTH } = AuthStreams;

/**
 * Events that withdraw a subject (user or service account): every access
 * token of that subject issued up to the event is refused. Maps each to the
 * subject (`sub`) it withdraws; undefined for any other event.
 */
function withdrawnSubject(event: EventOf<typeof RevocationEvents>): string | undefined {
  switch (event.type) {
    case "UserDisabled":
    case "UserDeleted":
    case "UserPasswordReset":
      return event.data.userId;
    case "ServiceAccountDisabled":
    case "ServiceAccountDeleted":
      return event.data.serviceAccountId;
    case "SessionRevoked":
    case "unknown":
      return undefined;
    default:
      return unreachable(event);
  }
}

const SUBJECT_REVOCATIONS: ReadonlySet<string> = new Set(
  (
    [
      "UserDisabled",
      "UserDeleted",
      "UserPasswordReset",
      "ServiceAccountDisabled",
      "ServiceAccountDeleted",
    ] as const
  ).map((t) => RevocationEvents.typeName(t)),
);

/** The longest access-token lifetime auth can issue (its TTL settings are capped at 1 h). */
export const MAX_ACCESS_TOKEN_LIFETIME_MS = 3_600_000;
/** Margin on top of the token lifetime for clock skew and the verifiers' clock tolerance. */
const SKEW_MARGIN_MS = 5 * 60_000;

/**
 * Whether a token issued at `issuedAtMs` falls under a subject's not-before.
 * `iat` has whole seconds, so a token issued in the not-before's own second is
 * refused too: it may have been issued before the withdrawal.
 */
export function issuedNoLaterThan(issuedAtMs: number, notBeforeMs: number): boolean {
  return Math.floor(issuedAtMs / 1000) <= Math.floor(notBeforeMs / 1000);
}

/** The first instant at which a token issued to a subject escapes its not-before (the next whole second). */
export function firstIssuableMs(notBeforeMs: number): number {
  return (Math.floor(notBeforeMs / 1000) + 1) * 1000;
}

export interface RevocationSetOptions {
  store: EventStore;
  logger: Logger;
  /** Logical name of the auth stream (default "AUTH"). */
  stream?: string;
  /**
   * How far back to read session revocations: no session outlives the
   * refresh absolute lifetime, so older revocations cannot matter (default 91 days).
   */
  lookbackMs?: number;
  /**
   * The longest access-token lifetime (default 1 h). Subject withdrawals are
   * read back this far (plus a margin for clock skew) and pruned after it: by
   * then every token issued before them has expired anyway.
   */
  maxTokenLifetimeMs?: number;
}

/**
 * What the auth service has withdrawn, fed from its events: every service
 * mounts one, so logout, admin revocation and the withdrawal of a user or a
 * service account reach it through the AUTH stream. It holds
 * - revoked sessions (SessionRevoked): every token carrying that `sid`;
 * - subject not-befores (UserDisabled, UserDeleted, UserPasswordReset,
 *   ServiceAccountDisabled, ServiceAccountDeleted): every token of that `sub`
 *   issued at or before the event, where the event's time is the later of its
 *   Spool-Time header and the time the stream stored it. A token issued by a
 *   racing login or exchange that did not yet see the event was issued before
 *   the event was stored, so it is covered (auth re-checks the subject after
 *   issuing, see services/auth/src/app/sessions.ts).
 * It is a projection kept in memory and rebuilt from the log on start (one
 * ordered consumer per subject filter: nats-server 2.9 takes one filter per
 * consumer); `ready` resolves once every feed has caught up with the stream
 * head, and a service should not serve before then (a restarted process must
 * not accept a token revoked while it was down).
 */
export class RevocationSet implements RevocationChecker {
  readonly #o: RevocationSetOptions;
  readonly #watchers = new RevocationWatchers();
  /** session id -> when its tokens expire anyway (ms); pruned after that. */
  readonly #revoked = new Map<string, number>();
  /** subject -> tokens issued at or before this time (ms) are refused; pruned once none can be alive. */
  readonly #notBefore = new Map<string, number>();
  readonly #subjectWindowMs: number;
  readonly #open = new Set<ConsumerMessages>();
  readonly #loops: Promise<void>[] = [];
  #stopped = false;
  #ready: Promise<void>;
  #markReady!: () => void;
  #pruneTimer: NodeJS.Timeout | undefined;

  constructor(options: RevocationSetOptions) {
    this.#o = options;
    this.#subjectWindowMs = (options.maxTokenLifetimeMs ?? MAX_ACCESS_TOKEN_LIFETIME_MS) + SKEW_MARGIN_MS;
    this.#ready = new Promise((resolve) => {
      this.#markReady = resolve;
    });
  }

  get ready(): Promise<void> {
    return this.#ready;
  }

  /** Revoked sessions plus withdrawn subjects held. */
  get size(): number {
    return this.#revoked.size + this.#notBefore.size;
  }

  isRevoked(sessionId: string): boolean {
    const until = this.#revoked.get(sessionId);
    return until !== undefined;
  }

  /** Tokens of this subject issued at or before the returned time (ms) are refused; undefined when none. */
  notBefore(subject: string): number | undefined {
    return this.#notBefore.get(subject);
  }

  /**
   * Calls `listener` once when a revocation covering this token is learned:
   * its session revoked or its subject withdrawn at or after it was issued
   * (asynchronously at once when the set already holds one). Long-lived calls
   * use it (credentialSignal) to end when their credentials are withdrawn.
   */
  watch(token: WatchedToken, listener: () => void): StopWatching {
    let watching = true;
    const once = () => {
      if (!watching) return;
      watching = false;
      stop();
      listener();
    };
    const stop = this.#watchers.add(token, once);
    const notBefore = this.notBefore(token.subject);
    const revoked =
      (token.sessionId !== undefined && this.isRevoked(token.sessionId)) ||
      (notBefore !== undefined && issuedNoLaterThan(token.issuedAtMs, notBefore));
    if (revoked) queueMicrotask(once);
    return () => {
      watching = false;
      stop();
    };
  }

  async start(): Promise<void> {
    const streamName = this.#o.store.namespace.stream(this.#o.stream ?? AUTH.name);
    const now = Date.now();
    const subjectsSince = now - this.#subjectWindowMs;
    const ready = [
      this.#follow(
        streamName,
        AUTH.subjects.session.all,
        now - (this.#o.lookbackMs ?? 91 * 86_400_000),
        (m) => this.#applySession(streamName, m),
      ),
      this.#follow(streamName, AUTH.subjects.user.all, subjectsSince, (m) =>
        this.#applySubject(streamName, m),
      ),
      this.#follow(streamName, AUTH.subjects.serviceAccount.all, subjectsSince, (m) =>
        this.#applySubject(streamName, m),
      ),
    ];
    void Promise.all(ready).then(() => this.#markReady());
    this.#pruneTimer = setInterval(() => this.#prune(), 60_000);
    this.#pruneTimer.unref();
  }

  #applySession(stream: string, m: JsMsg): void {
    const type = m.headers?.get(Headers.EventType);
    // A revocation may travel alone or in a command's batch (reuse detection writes two events).
    if (type !== SESSION_REVOKED && type !== BATCH_TYPE) return;
    for (const event of this.#o.store.decode(stream, m).map(RevocationEvents.decode)) {
      if (event.type !== "SessionRevoked") continue;
      const e = event.data;
      this.#revoked.set(e.sessionId, Number(e.absoluteExpiresAtMs) || Number.MAX_SAFE_INTEGER);
      this.#watchers.sessionRevoked(e.sessionId);
    }
  }

  #applySubject(stream: string, m: JsMsg): void {
    const type = m.headers?.get(Headers.EventType) ?? "";
    if (type !== BATCH_TYPE && !SUBJECT_REVOCATIONS.has(type)) return;
    // The later of the writer's clock and the stream's: a token issued before the event was stored is covered.
    const storedMs = m.time.getTime();
    for (const event of this.#o.store.decode(stream, m).map(RevocationEvents.decode)) {
      const subject = withdrawnSubject(event);
      if (!subject) continue;
      const at = Math.max(event.meta.time.getTime(), storedMs);
      if (at > (this.#notBefore.get(subject) ?? 0)) this.#notBefore.set(subject, at);
      this.#watchers.subjectWithdrawn(subject, at);
    }
  }

  /**
   * Follows one subject filter of the stream from `sinceMs`, resuming after
   * the last applied message when the consumer is lost. Returns a promise
   * that resolves once the feed has caught up with the stream head.
   */
  #follow(stream: string, filter: string, sinceMs: number, apply: (m: JsMsg) => void): Promise<void> {
    const { store, logger } = this.#o;
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    let appliedSeq = 0;
    const loop = async () => {
      while (!this.#stopped) {
        try {
          const consumer = await store.js.consumers.get(stream, {
            filter_subjects: store.namespace.subject(filter),
            ...(appliedSeq > 0
              ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: appliedSeq + 1 }
              : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(sinceMs).toISOString() }),
          });
          const messages = await consumer.consume({ max_messages: 1_000 });
          if (this.#stopped) {
            await messages.close();
            break;
          }
          this.#open.add(messages);
          try {
            let processed = 0;
            void this.#probeCaughtUp(consumer, () => processed, markReady);
            for await (const m of messages) {
              apply(m);
              appliedSeq = m.seq;
              processed++;
              if (m.info.pending === 0) markReady();
            }
          } finally {
            this.#open.delete(messages);
          }
        } catch (e) {
          if (this.#stopped) break;
          logger.warn({ err: e, filter }, "revocation feed interrupted; resuming");
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    };
    this.#loops.push(loop());
    return ready;
  }

  /**
   * Marks a feed ready once its consumer has nothing pending and everything
   * it delivered has been applied; covers a filter with no message at all,
   * where no message would ever say so.
   */
  async #probeCaughtUp(consumer: Consumer, processed: () => number, markReady: () => void): Promise<void> {
    while (!this.#stopped) {
      try {
        const info = await consumer.info();
        if (info.num_pending === 0 && processed() >= info.delivered.consumer_seq) {
          markReady();
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
    // A withdrawal older than the longest token lifetime refuses nothing that could still verify.
    for (const [sub, at] of this.#notBefore)
      if (at + this.#subjectWindowMs < now) this.#notBefore.delete(sub);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#pruneTimer);
    await Promise.all([...this.#open].map((m) => m.close()));
    await Promise.all(this.#loops);
  }
}
