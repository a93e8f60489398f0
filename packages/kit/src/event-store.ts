import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type MsgRequest,
  type NextMsgRequest,
  RetentionPolicy,
  StorageType,
  type StoredMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos, nuid } from "@nats-io/transport-node";
import { ConcurrencyError, UnavailableError } from "./errors.js";
import {
  decodeMessage,
  type EventMessage,
  type EventMetadata,
  encodeMessage,
  type NewEvent,
  type RecordedEvent,
} from "./events.js";
import type { Namespace } from "./namespace.js";
import { assertNatsConnected, withNatsContext } from "./nats.js";

/** JetStream API error: stream name already in use with a different configuration. */
const STREAM_NAME_IN_USE = 10058;
/** Messages readSubject gets one request each before it reads the rest through a consumer. */
const DIRECT_READ_LIMIT = 16;
const CONSUMER_BATCH = 256;
const FETCH_EXPIRES_MS = 5_000;
/** The server removes a read consumer idle this long (normally deleted at once). */
const CONSUMER_INACTIVE_MS = 30_000;

/**
 * STREAM.MSG.GET; null when there is no such message. The server (2.9+)
 * takes next_by_subj here too; the client types it for DIRECT.GET only.
 */
async function getMessage(
  jsm: JetStreamManager,
  stream: string,
  query: MsgRequest | NextMsgRequest,
): Promise<StoredMsg | null> {
  try {
    return await jsm.streams.getMessage(stream, query as MsgRequest);
  } catch (e) {
    if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.NoMessageFound) return null;
    throw withNatsContext(e, "get message");
  }
}

export interface StreamDefinition {
  /** Logical name, e.g. "AUTH"; the namespace prefix is added. */
  name: string;
  /** Relative subject filters, e.g. ["auth.>"]. */
  subjects: string[];
  /** Retention window for delivery streams; omitted = kept for good. */
  maxAgeMs?: number;
  /** "file" (default; event logs) or "memory" (tests of delivery-only streams). */
  storage?: "file" | "memory";
  /** Window in which a retried append with the same message id is dropped (default 2 min). */
  duplicateWindowMs?: number;
  /** Replicas (1 on a single server; production uses 3). */
  replicas?: number;
}

export interface AppendOptions extends EventMetadata {
  /**
   * Optimistic concurrency: the subject's last stream sequence the caller saw
   * (0 = the subject must be new). Omit to append unconditionally.
   */
  expectedSequence?: number;
  /** Deduplication id: a retried append with the same id stores one message. */
  messageId?: string;
  /** Publish timeout (default 5 s). */
  timeoutMs?: number;
}

export interface AppendResult {
  /** Stream sequence of the stored message (of the original, for a duplicate). */
  sequence: number;
  /** True when JetStream dropped the message as a duplicate of an earlier append. */
  duplicate: boolean;
  stream: string;
}

/**
 * Folds an aggregate's events into its state. The store decodes each recorded
 * event once (decode, usually an EventCodec's) and evolve folds the result,
 * typically a switch over the codec's union.
 */
export interface Reducer<S, E = RecordedEvent> {
  initial(): S;
  evolve(state: S, event: E): S;
  decode(event: RecordedEvent): E;
}

export interface Loaded<S> {
  state: S;
  /** Stream sequence of the aggregate's last message (0 when it has none). */
  version: number;
}

interface CacheEntry {
  state: unknown;
  version: number;
  reducer: Reducer<unknown, never>;
}

export interface EventStoreOptions {
  namespace: Namespace;
  /** Aggregates whose state is kept in memory (most recently used). Default 10,000. */
  stateCacheSize?: number;
}

/**
 * The event log on JetStream: one stream per service, one subject per
 * aggregate, appends guarded by Nats-Expected-Last-Subject-Sequence and
 * deduplicated by Nats-Msg-Id.
 */
export class EventStore {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly namespace: Namespace;
  #jsm: JetStreamManager | undefined;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #cacheSize: number;
  /** Which stream holds which subject prefix, from ensureStream(). */
  readonly #streams: { name: string; filters: string[] }[] = [];

  constructor(nc: NatsConnection, options: EventStoreOptions) {
    this.nc = nc;
    this.js = jetstream(nc);
    this.namespace = options.namespace;
    this.#cacheSize = options.stateCacheSize ?? 10_000;
  }

  async manager(): Promise<JetStreamManager> {
    this.#jsm ??= await jetstreamManager(this.nc);
    return this.#jsm;
  }

  /** Creates the stream, or updates it to the definition. Returns the full stream name. */
  async ensureStream(def: StreamDefinition): Promise<string> {
    const jsm = await this.manager();
    const name = this.namespace.stream(def.name);
    const config: Partial<StreamConfig> & { name: string } = {
      name,
      subjects: def.subjects.map((s) => this.namespace.subject(s)),
      retention: RetentionPolicy.Limits,
      storage: def.storage === "memory" ? StorageType.Memory : StorageType.File,
      max_age: def.maxAgeMs ? nanos(def.maxAgeMs) : 0,
      duplicate_window: nanos(def.duplicateWindowMs ?? 120_000),
      num_replicas: def.replicas ?? 1,
      allow_direct: true,
    };
    try {
      await jsm.streams.add(config);
    } catch (e) {
      // Exists with another config: bring it to this definition.
      if (e instanceof JetStreamApiError && e.code === STREAM_NAME_IN_USE) {
        await jsm.streams.update(name, config);
      } else {
        throw e;
      }
    }
    this.#streams.push({ name, filters: def.subjects });
    return name;
  }

  /** The stream whose filters cover a relative subject. */
  streamFor(subject: string): string {
    for (const s of this.#streams) {
      if (s.filters.some((f) => subjectMatches(f, subject))) return s.name;
    }
    throw new Error(`no stream holds subject ${subject}; call ensureStream first`);
  }

  /**
   * Appends a command's events as one message. A stale expectedSequence throws
   * ConcurrencyError; a retried messageId returns the original sequence.
   */
  async append(
    subject: string,
    events: readonly NewEvent[],
    options: AppendOptions = {},
  ): Promise<AppendResult> {
    assertNatsConnected(this.nc);
    const { headers, data } = encodeMessage(events, options);
    const full = this.namespace.subject(subject);
    try {
      const ack = await this.js.publish(full, data, {
        headers,
        ...(options.messageId ? { msgID: options.messageId } : {}),
        ...(options.expectedSequence !== undefined
          ? { expect: { lastSubjectSequence: options.expectedSequence } }
          : {}),
        timeout: options.timeoutMs ?? 5_000,
      });
      return { sequence: ack.seq, duplicate: ack.duplicate, stream: ack.stream };
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamWrongLastSequence) {
        this.#cache.delete(subject);
        throw new ConcurrencyError(subject, options.expectedSequence ?? -1, { cause: e });
      }
      throw withNatsContext(e, `append to ${full}`);
    }
  }

  /** Stream sequence of the subject's last message, 0 when it has none. */
  async lastSequence(subject: string): Promise<number> {
    assertNatsConnected(this.nc);
    const jsm = await this.manager();
    const stream = this.streamFor(subject);
    try {
      const m = await jsm.streams.getMessage(stream, { last_by_subj: this.namespace.subject(subject) });
      return m?.seq ?? 0;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.NoMessageFound) return 0;
      throw withNatsContext(e, `last sequence of ${subject}`);
    }
  }

  /** The events of a subject's last message (empty when it has none): one message get, no replay. */
  async readLast(subject: string): Promise<RecordedEvent[]> {
    assertNatsConnected(this.nc);
    const jsm = await this.manager();
    const stream = this.streamFor(subject);
    const m = await getMessage(jsm, stream, { last_by_subj: this.namespace.subject(subject) });
    return m ? this.decode(stream, { subject: m.subject, seq: m.seq, data: m.data, headers: m.header }) : [];
  }

  /**
   * Reads a subject's events with sequence > after, message by message, up to
   * its last message. Short subjects (most aggregates) are read with message
   * gets (next by subject), which leave nothing behind on the server; a long
   * one (a generation's output) goes on through a consumer of its own, deleted
   * when the read ends. Reads go to the stream leader (STREAM.MSG.GET), not
   * DIRECT.GET: with replicas a direct get may be answered by a lagging
   * follower, and an aggregate load must see the appends acknowledged before it.
   * Refused at once with NatsDisconnectedError (UNAVAILABLE) while NATS is away.
   */
  async *readSubject(subject: string, after = 0): AsyncGenerator<RecordedEvent[]> {
    assertNatsConnected(this.nc);
    const jsm = await this.manager();
    const stream = this.streamFor(subject);
    const full = this.namespace.subject(subject);
    let seq = after;
    for (let n = 0; n < DIRECT_READ_LIMIT; n++) {
      const m = await getMessage(jsm, stream, { next_by_subj: full, seq: seq + 1 });
      if (!m) return;
      seq = m.seq;
      yield this.decode(stream, { subject: m.subject, seq: m.seq, data: m.data, headers: m.header });
    }
    const last = await this.lastSequence(subject);
    if (last > seq) yield* this.#readThroughConsumer(jsm, stream, full, seq, last);
  }

  async *#readThroughConsumer(
    jsm: JetStreamManager,
    stream: string,
    filter: string,
    after: number,
    last: number,
  ): AsyncGenerator<RecordedEvent[]> {
    const name = `read_${nuid.next()}`;
    const info = await jsm.consumers.add(stream, {
      name,
      filter_subject: filter,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: after + 1,
      ack_policy: AckPolicy.None,
      mem_storage: true,
      num_replicas: 1,
      // Only for when the delete below cannot reach the server (NATS away, process killed).
      inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
    });
    try {
      const consumer = this.js.consumers.getConsumerFromInfo(info);
      let seq = after;
      let delivered = 0;
      while (seq < last) {
        const batch = await consumer.fetch({ max_messages: CONSUMER_BATCH, expires: FETCH_EXPIRES_MS });
        const before = delivered;
        try {
          for await (const m of batch) {
            // A lost message would fold into a wrong state: fail the read rather than skip it.
            if (m.info.deliverySequence !== ++delivered) {
              throw new UnavailableError(`messages of ${filter} were lost in transit; read again`);
            }
            seq = m.seq;
            yield this.decode(stream, m);
            if (seq >= last) break;
          }
        } finally {
          batch.stop();
        }
        if (delivered === before && seq < last) {
          throw new UnavailableError(`no messages of ${filter} within ${FETCH_EXPIRES_MS} ms`);
        }
      }
    } finally {
      // Awaited, so a burst of reads never leaves a trail of consumers behind it.
      await jsm.consumers.delete(stream, name).catch(() => {});
    }
  }

  decode(stream: string, msg: EventMessage): RecordedEvent[] {
    return decodeMessage(msg, stream, (s) => this.namespace.relative(s));
  }

  /**
   * Loads an aggregate by replaying its subject. The state of recently used
   * aggregates is cached with its version, so a load replays only what is new.
   */
  async load<S, E>(subject: string, reducer: Reducer<S, E>): Promise<Loaded<S>> {
    const cached = this.#cache.get(subject);
    let state: S;
    let version: number;
    if (cached && cached.reducer === reducer) {
      state = cached.state as S;
      version = cached.version;
    } else {
      state = reducer.initial();
      version = 0;
    }
    for await (const events of this.readSubject(subject, version)) {
      for (const event of events) state = reducer.evolve(state, reducer.decode(event));
      version = events[0]?.streamSequence ?? version;
    }
    this.remember(subject, { state, version, reducer: reducer as Reducer<unknown, never> });
    return { state, version };
  }

  /** Records state after a successful append, so the next load replays nothing. */
  remember(subject: string, entry: CacheEntry): void {
    this.#cache.delete(subject);
    this.#cache.set(subject, entry);
    if (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
  }

  forget(subject: string): void {
    this.#cache.delete(subject);
  }
}

/** NATS subject matching for filters with `*` and `>` wildcards. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (f[i] !== "*" && f[i] !== s[i]) return false;
  }
  return f.length === s.length;
}
