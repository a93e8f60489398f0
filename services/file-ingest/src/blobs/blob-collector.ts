// Removes blobs nothing references any more, after a grace period.
//
// The invariant the service must keep (and keeps, in the upload path):
//   1. a new reference to a blob (a FileRecorded naming its sha256) is only
//      ever written AFTER StagedBlob.commit() returned, and
//   2. commit() sets the blob's touchedAtMs to now, also when the bytes were
//      already stored (dedupe), and
//   3. isReferenced(sha256) sees every reference written more than graceMs
//      ago (the reference projection lags by less than the grace period).
// Then a blob with touchedAtMs older than the grace period and no reference
// is garbage: any upload that will reference it has not committed yet, and
// when it does commit it either touches the blob first (the collector's
// conditional delete, on the touchedAtMs it read, then refuses) or finds it
// gone and stores it again. A live reference keeps a blob whatever its age.
import type { Logger } from "@spool/kit";
import type { BlobStore } from "./blob-store.js";

export interface CollectBlobsOptions {
  store: BlobStore;
  /** True while a live (not deleted) file record names this sha256. */
  isReferenced: (sha256: string) => Promise<boolean>;
  /** A blob committed less than this long ago is never collected (default 24 hours). */
  graceMs?: number;
  /** Clock (tests). */
  now?: () => number;
  signal?: AbortSignal;
}

export interface CollectResult {
  /** Blobs looked at. */
  examined: number;
  /** Blobs removed by this run. */
  deleted: string[];
}

export const DEFAULT_BLOB_GRACE_MS = 24 * 60 * 60 * 1000;

/** One collection pass over every stored blob. */
export async function collectBlobs(options: CollectBlobsOptions): Promise<CollectResult> {
  const now = options.now ?? Date.now;
  const graceMs = options.graceMs ?? DEFAULT_BLOB_GRACE_MS;
  if (!(graceMs >= 0)) throw new RangeError("graceMs must not be negative");
  const result: CollectResult = { examined: 0, deleted: [] };
  for await (const blob of options.store.list()) {
    options.signal?.throwIfAborted();
    result.examined++;
    if (now() - blob.touchedAtMs < graceMs) continue;
    if (await options.isReferenced(blob.sha256)) continue;
    // Conditional on the touchedAtMs read above: a commit since then keeps the blob.
    if (await options.store.delete(blob.sha256, { ifTouchedAtMs: blob.touchedAtMs })) {
      result.deleted.push(blob.sha256);
    }
  }
  return result;
}

export interface BlobCollectorOptions extends CollectBlobsOptions {
  /** Time between passes (default 1 hour). */
  intervalMs?: number;
  logger: Logger;
}

/**
 * collectBlobs on a timer. Several replicas may each run one: every delete is
 * conditional, so two collectors at once only repeat each other's work.
 */
export class BlobCollector {
  readonly #o: BlobCollectorOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #abort = new AbortController();

  constructor(options: BlobCollectorOptions) {
    this.#o = options;
  }

  start(): void {
    if (this.#timer) return;
    this.#abort = new AbortController();
    this.#timer = setInterval(
      () => {
        this.#running ??= this.collect()
          .then(() => undefined)
          .catch((err) => {
            if (!this.#abort.signal.aborted)
              this.#o.logger.warn({ err }, "blob collection failed; next pass retries");
          })
          .finally(() => {
            this.#running = undefined;
          });
      },
      this.#o.intervalMs ?? 60 * 60 * 1000,
    );
    this.#timer.unref();
  }

  /** One pass now. */
  async collect(): Promise<CollectResult> {
    const result = await collectBlobs({ ...this.#o, signal: this.#abort.signal });
    if (result.deleted.length > 0) {
      this.#o.logger.info(
        { examined: result.examined, deleted: result.deleted.length },
        "unreferenced blobs collected",
      );
    }
    return result;
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
    await this.#running;
  }
}
