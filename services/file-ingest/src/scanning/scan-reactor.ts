// Scans every recorded file and appends its verdict: consumes FileRecorded
// from the FILES stream (a durable reactor), reads the blob, asks the scanner,
// and appends FileScanned to the file's own subject with optimistic
// concurrency. A file already scanned or deleted is skipped, so a redelivery
// (at least once) or a race with a delete writes nothing twice.
//
// Scanner unavailable (clamd down, timeout, its size limit) is never a
// verdict: the message is nak'ed with backoff and retried for as long as the
// outage lasts (never dead-lettered for it), so the file stays pending and is
// scanned when the scanner is back. Other failures (a missing blob) are
// retried maxDeliver times and then dead-lettered, visible to operators.
import {
  aggregate,
  type DeadLetterStore,
  type EventStore,
  FileEvents,
  FilesStreams,
  isTransientError,
  type Logger,
  type Platform,
  Reactor,
} from "@spool/kit";
import type { BlobStore } from "../blobs/blob-store.js";
import { decideScan, FileAggregate, type RecordScan } from "../domain/file.js";
import { type Scanner, ScannerUnavailableError } from "./scanner.js";

export interface ScanReactorOptions {
  scanner: Scanner;
  blobs: BlobStore;
  /** Durable consumer name (default "file-scanner"). */
  name?: string;
  /** Delay before each retry, by attempt; the last repeats (default 1 s, 5 s, 15 s, 30 s, 60 s). */
  backoffMs?: readonly number[];
  /** Attempts before a failure other than "scanner unavailable" is dead-lettered (default 5). */
  maxDeliver?: number;
  /** Longest a scan may hold its message before redelivery (default 5 min; above the scanner's timeout). */
  ackWaitMs?: number;
  /** Clock for scanned_at_ms (tests). */
  now?: () => number;
}

export interface ScanReactorDeps extends ScanReactorOptions {
  store: EventStore;
  deadLetters: DeadLetterStore;
  logger: Logger;
}

export const SCAN_REACTOR_DEFAULTS = {
  name: "file-scanner",
  backoffMs: [1_000, 5_000, 15_000, 30_000, 60_000],
  maxDeliver: 5,
  ackWaitMs: 5 * 60_000,
} as const;

/** The actor recorded on FileScanned events. */
export const SCANNER_ACTOR = "file-ingest/scanner";

/** The reactor, not yet started (tests; the service uses startScanReactor). */
export function createScanReactor(deps: ScanReactorDeps): Reactor {
  const { scanner, blobs, logger } = deps;
  const now = deps.now ?? Date.now;
  const files = aggregate(deps.store, FileAggregate);

  async function scanFile(fileId: string, causation: { eventId: string; correlationId: string | undefined }) {
    const { state } = await files.load(fileId);
    if (state.kind !== "active" || state.scan.status !== "pending") return;
    const result = await scanner.scan(blobs.read(state.record.sha256));
    const verdict: RecordScan = {
      verdict: result.verdict,
      signature: result.verdict === "infected" ? result.signature : "",
      scanner: scanner.name,
      nowMs: now(),
    };
    // Decided again on the state the append is conditional on: deleted or scanned meanwhile → nothing.
    await files.handle(fileId, (s) => decideScan(s, verdict), {
      actor: SCANNER_ACTOR,
      causationId: causation.eventId,
      ...(causation.correlationId ? { correlationId: causation.correlationId } : {}),
      messageId: `scan-${fileId}`,
    });
    if (result.verdict === "infected") {
      logger.warn({ fileId, signature: result.signature }, "infected file quarantined");
    }
  }

  return new Reactor({
    name: deps.name ?? SCAN_REACTOR_DEFAULTS.name,
    store: deps.store,
    stream: FilesStreams.FILES.name,
    filterSubject: FilesStreams.FILES.subjects.file.all,
    deadLetters: deps.deadLetters,
    logger,
    maxDeliver: deps.maxDeliver ?? SCAN_REACTOR_DEFAULTS.maxDeliver,
    backoffMs: deps.backoffMs ?? SCAN_REACTOR_DEFAULTS.backoffMs,
    ackWaitMs: deps.ackWaitMs ?? SCAN_REACTOR_DEFAULTS.ackWaitMs,
    // The scanner (or NATS) away is "not now": the file waits, pending, however long that takes.
    retryIndefinitely: (e) => e instanceof ScannerUnavailableError || isTransientError(e),
    handle: async (events) => {
      for (const event of events) {
        const decoded = FileEvents.decode(event);
        if (decoded.type !== "FileRecorded") continue;
        await scanFile(decoded.data.fileId, { eventId: event.eventId, correlationId: event.correlationId });
      }
    },
  });
}

/** Registers the scan reactor with the platform (started by platform.ready()/serve(), stopped at shutdown). */
export function startScanReactor(platform: Platform, options: ScanReactorOptions): Reactor {
  return platform.addConsumer(
    createScanReactor({
      ...options,
      store: platform.store,
      deadLetters: platform.deadLetters,
      logger: platform.logger,
    }),
  );
}
