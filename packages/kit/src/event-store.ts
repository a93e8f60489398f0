import {
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import { ConcurrencyError } from "./errors.js";
import {
  decodeMessage,
  type EventMessage,
  type EventMetadata,
  encodeMessage,
  type NewEvent,
  type RecordedEvent,
} from "./events.js";
import type { Namespace } from "./namespace.js";

/** JetStream API error: stream name already in use with a different configuration. */
const STREAM_NAME_IN_USE = 10058;

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

/** Folds an aggregate's events into its state. */
export interface Reducer<S> {
  initial(): S;
  evolve(state: S, event: RecordedEvent): S;
}

export interface Loaded<S> {
  state: S;
  /** Stream sequence of the aggregate's last message (0 when it has none). */
  version: number;
}

interface CacheEntry {
  state: unknown;
  version: number;
  reducer: Reducer<unknown>;
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
      throw e;
    }
  }

  /** Stream sequence of the subject's last message, 0 when it has none. */
  async lastSequence(subject: string): Promise<number> {
    const jsm = await this.manager();
    const stream = this.streamFor(subject);
    try {
      const m = await jsm.streams.getMessage(stream, { last_by_subj: this.namespace.subject(subject) });
      return m?.seq ?? 0;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.NoMessageFound) return 0;
      throw e;
    }
  }

  /**
   * Reads a subject's events with sequence > after, message by message, up to
   * the subject's last message at the time of the call.
   */
  async *readSubject(subject: string, after = 0): AsyncGenerator<RecordedEvent[]> {
    const last = await this.lastSequence(subject);
    if (last <= after) return;
    const stream = this.streamFor(subject);
    const consumer = await this.js.consumers.get(stream, {
      filter_subjects: this.namespace.subject(subject),
      ...(after > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 } : {}),
    });
    const messages = await consumer.consume({ max_messages: 512 });
    try {
      for await (const m of messages) {
        yield this.decode(stream, m);
        if (m.seq >= last) break;
      }
    } finally {
      messages.stop();
    }
  }

  decode(stream: string, msg: EventMessage): RecordedEvent[] {
    return decodeMessage(msg, stream, (s) => this.namespace.relative(s));
  }

  /**
   * Loads an aggregate by replaying its subject. The state of recently used
   * aggregates is cached with its version, so a load replays only what is new.
   */
  async load<S>(subject: string, reducer: Reducer<S>): Promise<Loaded<S>> {
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
      for (const event of events) state = reducer.evolve(state, event);
      version = events[0]?.streamSequence ?? version;
    }
    this.remember(subject, { state, version, reducer: reducer as Reducer<unknown> });
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
