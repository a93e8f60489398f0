// The content-addressed blob store's contract. Two implementations: the local
// filesystem (default; temp file, fsync, rename) and a NATS JetStream object
// store (several replicas). Blobs are keyed by the lowercase hex sha256 of
// their bytes; storage names are never derived from anything a client sent.

/** Bytes streamed into staging, hashed on the way; not yet visible under their hash. */
export interface StagedBlob {
  readonly sha256: string;
  readonly size: number;
  /**
   * Publishes the blob under its hash. Idempotent and safe in parallel: when
   * the same bytes are already stored this only refreshes the blob's
   * `touchedAtMs` (so the collector's grace period starts again) and drops the
   * staged copy. After commit the staged blob is gone.
   */
  commit(): Promise<void>;
  /** Drops the staged bytes; safe to call more than once and after commit. */
  discard(): Promise<void>;
}

export interface StageOptions {
  /** The stream fails with BlobTooLargeError once more than this many bytes arrived; nothing stays behind. */
  maxBytes: number;
  signal?: AbortSignal;
}

export interface StoredBlob {
  readonly sha256: string;
  readonly size: number;
  /** Last commit of these bytes (the collector's grace period counts from here). */
  readonly touchedAtMs: number;
}

export interface BlobStore {
  /**
   * Streams `source` to staging while hashing. If `source` throws, the signal
   * aborts or the limit is passed, the staged bytes are removed and the error
   * is rethrown: a failed or aborted upload leaves nothing behind.
   */
  stage(source: AsyncIterable<Uint8Array>, options: StageOptions): Promise<StagedBlob>;
  /** The stored blob, or undefined. */
  stat(sha256: string): Promise<StoredBlob | undefined>;
  /** A stored blob's bytes, optionally the byte range [start, end) (end exclusive, default the size). */
  read(sha256: string, range?: { start: number; end?: number }): AsyncIterable<Uint8Array>;
  /** Every stored blob, for the collector. */
  list(): AsyncIterable<StoredBlob>;
  /**
   * Removes a stored blob (the collector only). Missing blobs are not an error.
   * With `ifTouchedAtMs`, atomically: only while the blob's touchedAtMs is still
   * that value, so a commit racing with the collector (which refreshes
   * touchedAtMs) keeps the blob. True when this call removed it.
   */
  delete(sha256: string, options?: { ifTouchedAtMs?: number }): Promise<boolean>;
  close(): Promise<void>;
}

/** More bytes than StageOptions.maxBytes. */
export class BlobTooLargeError extends Error {
  constructor(readonly maxBytes: number) {
    super(`content is larger than ${maxBytes} bytes`);
    this.name = "BlobTooLargeError";
  }
}

/** A sha256 in the form the store keys blobs by. Everything else is refused before it touches a path. */
export const SHA256_HEX = /^[0-9a-f]{64}$/;

/** No stored blob under that key (the blob was collected, or never stored). */
export class BlobNotFoundError extends Error {
  constructor() {
    super("blob not found");
    this.name = "BlobNotFoundError";
  }
}

/** A key that is not a lowercase hex sha256; the key itself is never echoed (it may come from a client). */
export class InvalidBlobKeyError extends Error {
  constructor() {
    super("blob key is not a lowercase hex sha256");
    this.name = "InvalidBlobKeyError";
  }
}

/** Throws InvalidBlobKeyError unless `sha256` matches SHA256_HEX: nothing else reaches a path or an object name. */
export function assertBlobKey(sha256: string): void {
  if (typeof sha256 !== "string" || !SHA256_HEX.test(sha256)) throw new InvalidBlobKeyError();
}
