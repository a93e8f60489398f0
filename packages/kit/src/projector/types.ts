import type { RecordedEvent } from "../events.js";
import type { Logger } from "../logger.js";

/** What every projector needs besides its definition. */
export interface ProjectorTuning {
  /** Messages applied per transaction (default 500). */
  batchSize?: number;
  /**
   * Attempts of a failing message, alone in its own transaction and one
   * right after the other (no backoff: the lane waits on them), before it is
   * dead-lettered or halts (default 3). Store outages do not count.
   */
  maxAttempts?: number;
  /** How often a standby instance tries to become the writer (default 2 s). */
  standbyRetryMs?: number;
  /** How often the writer checks its lock, the stream head and rebuild requests (default 1 s). */
  pollIntervalMs?: number;
  /**
   * A consumer that received nothing for this long while the stream holds
   * newer messages is recreated (pull consumers have stalled after reconnects).
   * Default 15 s.
   */
  stallTimeoutMs?: number;
  logger: Logger;
  metrics?: ProjectorMetrics;
  /**
   * Called (and awaited) after each batch's transaction committed, before the
   * next batch is read. For tests and tracing; keep it cheap.
   */
  onBatchCommitted?: (batch: CommittedBatch) => void | Promise<void>;
}

/** Counting hooks, so the service's metrics registry stays outside the kit's projector. */
export interface ProjectorMetrics {
  /** Events applied in a committed batch (rebuild = into the tables being rebuilt). */
  applied?(projection: string, events: number, rebuild: boolean): void;
  /** Head sequence minus checkpoint, refreshed every poll interval by the writer. */
  lag?(projection: string, lag: number): void;
  deadLettered?(projection: string): void;
}

export interface CommittedBatch {
  projection: string;
  /** Table version written (the rebuild's target version when rebuild is true). */
  version: number;
  rebuild: boolean;
  messages: number;
  events: number;
  firstSequence: number;
  lastSequence: number;
}

/** Where a projection reads from: a stream, optionally narrowed to one subject filter. */
export interface ProjectionSource {
  /** Unique per service: names the checkpoint, the writer lock and dead letters. Lowercase, digits, '_'. */
  name: string;
  /** Logical stream name, e.g. "AUTH" (the namespace prefix is added). */
  stream: string;
  /**
   * One relative subject filter, e.g. "auth.user.>" (nats-server 2.9 has no
   * multi-filter consumers). Omitted: the whole stream.
   */
  filterSubject?: string;
  /**
   * Halt on an event that keeps failing instead of dead-lettering it and moving
   * on: for projections whose later events make no sense without the earlier.
   */
  strict?: boolean;
}

export type DecodedBatch = readonly RecordedEvent[];
