// The file commands: bring bytes in (upload, URL import, archive entries),
// read a file, delete it. Every way in goes through ingest(), which keeps the
// order the blob collector relies on: bytes staged and checked, blob
// committed, then FileRecorded appended. Anything failing before the record
// leaves no blob (the staged copy is discarded) and gives back its quota.
import { createHash, randomUUID } from "node:crypto";
import {
  type Aggregate,
  aggregate,
  type EventStore,
  FailedPreconditionError,
  InvalidArgumentError,
  type Logger,
  type Principal,
  type RateLimiter,
  ResourceExhaustedError,
} from "@spool/kit";
import { FileOrigin } from "@spool/proto/spool/files/v1/events.js";
import { type BlobStore, BlobTooLargeError } from "../blobs/blob-store.js";
import {
  decideDelete,
  decideRecord,
  type ExistingFile,
  FileAggregate,
  type FileState,
} from "../domain/file.js";
import type { OrgQuota } from "../limits/org-quota.js";
import { allowedType, declaredMismatch, detectContentType, SNIFF_BYTES } from "../upload/content-type.js";
import { displayNameOrRefuse } from "../upload/display-name.js";
import { fileNotFound, visibleFile } from "./access.js";

export interface FileLimits {
  maxFileBytes: number;
  displayNameMaxChars: number;
  allowedContentTypes: readonly string[];
}

export interface IngestRequest {
  /** As the client sent it; sanitised here. */
  displayName: string;
  /** The proto field it came from, for violations ("metadata.display_name"). */
  displayNameField: string;
  declaredContentType: string;
  contentTypeField: string;
  /** Exact size the content must have, when announced. */
  expectedSize?: number | undefined;
  sizeField?: string;
  /** SHA-256 the content must have, when announced. */
  expectedSha256?: string | undefined;
  shaField?: string;
  origin: FileOrigin;
  sourceUrl?: string;
  archiveFileId?: string;
  archivePath?: string;
  /** Below the per-file limit (a URL import's own limit). */
  maxBytes?: number;
  /** The caller already holds the organisation quota for these bytes (an archive's entries, reserved together). */
  quotaReserved?: boolean;
}

export interface Recorded {
  file: ExistingFile;
  sequence: number;
}

/** Thrown for content whose announced size it does not have. */
function sizeMismatch(field: string, expected: number, actual: string): InvalidArgumentError {
  return new InvalidArgumentError(`the content is ${actual} bytes, not the ${expected} announced`, [
    { field, description: `the content is ${actual} bytes, not ${expected}` },
  ]);
}

export class Files {
  readonly #store: EventStore;
  readonly #files: Aggregate<FileState, string>;
  readonly #blobs: BlobStore;
  readonly #quota: OrgQuota;
  readonly #rate: RateLimiter;
  readonly #limits: FileLimits;
  readonly #logger: Logger;
  readonly #now: () => number;

  constructor(d: {
    store: EventStore;
    blobs: BlobStore;
    quota: OrgQuota;
    rate: RateLimiter;
    limits: FileLimits;
    logger: Logger;
    now?: () => number;
  }) {
    this.#store = d.store;
    this.#files = aggregate(d.store, FileAggregate);
    this.#blobs = d.blobs;
    this.#quota = d.quota;
    this.#rate = d.rate;
    this.#limits = d.limits;
    this.#logger = d.logger;
    this.#now = d.now ?? Date.now;
  }

  get limits(): FileLimits {
    return this.#limits;
  }

  /** One upload, import or expansion per call against the caller's rate (GCRA in Redis). */
  async takeUploadSlot(caller: Principal): Promise<void> {
    const d = await this.#rate.consume([caller.subject]);
    if (!d.allowed)
      throw new ResourceExhaustedError(
        `too many uploads: at most the configured number per window (limit ${d.limit})`,
        d.retryAfterMs,
      );
  }

  /** The checks that need no bytes, so a bad request is refused before anything streams. */
  precheck(req: IngestRequest): string {
    const name = displayNameOrRefuse(req.displayName, this.#limits.displayNameMaxChars, req.displayNameField);
    const max = Math.min(req.maxBytes ?? this.#limits.maxFileBytes, this.#limits.maxFileBytes);
    if (req.expectedSize !== undefined && req.expectedSize > max)
      throw new InvalidArgumentError(`the file is larger than the limit of ${max} bytes`, [
        { field: req.sizeField ?? "size_bytes", description: `at most ${max} bytes` },
      ]);
    return name;
  }

  /**
   * Streams `content` into the blob store and records a file of the caller.
   * Nothing is left behind when anything fails: no blob, no record, no quota.
   */
  async ingest(
    caller: Principal,
    req: IngestRequest,
    content: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): Promise<Recorded> {
    const displayName = this.precheck(req);
    const max = Math.min(req.maxBytes ?? this.#limits.maxFileBytes, this.#limits.maxFileBytes);
    const reservation = req.quotaReserved ? undefined : this.#quota.reservation(caller.orgId);
    const sizeField = req.sizeField ?? "size_bytes";
    try {
      // An announced size is reserved whole, before any byte is read.
      if (req.expectedSize !== undefined) await reservation?.ensure(req.expectedSize, true);
      const sample: Uint8Array[] = [];
      let sampled = 0;
      let seen = 0;
      const expected = req.expectedSize;
      const metered = async function* () {
        for await (const chunk of content) {
          seen += chunk.length;
          if (expected !== undefined && seen > expected)
            throw sizeMismatch(sizeField, expected, `over ${expected}`);
          // Without an announced size, the quota grows ahead of the bytes (atomic in Redis each time).
          if (seen <= max) await reservation?.ensure(seen);
          if (sampled < SNIFF_BYTES) {
            const part = chunk.subarray(0, SNIFF_BYTES - sampled);
            sample.push(part);
            sampled += part.length;
          }
          yield chunk;
        }
      };
      const staged = await this.#blobs.stage(metered(), { maxBytes: max, signal }).catch((e: unknown) => {
        if (e instanceof BlobTooLargeError)
          throw new ResourceExhaustedError(`the file is larger than the limit of ${max} bytes`);
        throw e;
      });
      let detected: string;
      try {
        if (expected !== undefined && staged.size !== expected)
          throw sizeMismatch(sizeField, expected, String(staged.size));
        if (req.expectedSha256 && req.expectedSha256 !== staged.sha256)
          throw new InvalidArgumentError("the content's SHA-256 is not the one announced", [
            { field: req.shaField ?? "sha256", description: "does not match the content" },
          ]);
        detected = await detectContentType(Buffer.concat(sample));
        const mismatch = declaredMismatch(req.declaredContentType, detected);
        if (mismatch)
          throw new InvalidArgumentError(mismatch, [{ field: req.contentTypeField, description: mismatch }]);
        if (!allowedType(this.#limits.allowedContentTypes, detected))
          throw new InvalidArgumentError(`files of type ${detected} are not accepted here`, [
            { field: req.contentTypeField, description: `${detected} is not an allowed content type` },
          ]);
        await reservation?.settle(staged.size);
        signal.throwIfAborted();
        // Commit before the record: the collector never removes a blob committed within its grace period.
        await staged.commit();
      } catch (e) {
        await staged.discard();
        throw e;
      }
      const fileId = randomUUID();
      const result = await this.#files.handle(
        fileId,
        (state) =>
          decideRecord(state, {
            fileId,
            orgId: caller.orgId,
            ownerId: caller.subject,
            displayName,
            sizeBytes: BigInt(staged.size),
            sha256: staged.sha256,
            declaredContentType: req.declaredContentType.toLowerCase(),
            detectedContentType: detected,
            origin: req.origin,
            sourceUrl: req.sourceUrl ?? "",
            archiveFileId: req.archiveFileId ?? "",
            archivePath: req.archivePath ?? "",
            nowMs: this.#now(),
          }),
        { actor: caller.subject },
      );
      if (result.state.kind === "none") throw new Error("file record not applied");
      return { file: result.state, sequence: result.sequence };
    } catch (e) {
      await reservation?.releaseAll().catch((err: unknown) => {
        // The count is then too high (never too low): it refuses early rather than late.
        this.#logger.warn({ err }, "could not give back an upload's quota reservation");
      });
      throw e;
    }
  }

  /** A quota reservation of the organisation (several files reserved in one step). */
  reservation(orgId: string) {
    return this.#quota.reservation(orgId);
  }

  /** The file, if the caller may reach it (NOT_FOUND otherwise). */
  async get(caller: Principal, fileId: string): Promise<ExistingFile> {
    const { state } = await this.#files.load(fileId);
    return visibleFile(caller, state);
  }

  /** A readable file's bytes in [start, end): CLEAN only. */
  async open(
    caller: Principal,
    fileId: string,
    range: { offset: number; length: number },
  ): Promise<{ file: ExistingFile; start: number; end: number; bytes: AsyncIterable<Uint8Array> }> {
    const file = await this.get(caller, fileId);
    if (file.scan.status === "pending")
      throw new FailedPreconditionError("the file has not been scanned yet; try again once it is CLEAN");
    if (file.scan.status === "infected")
      throw new FailedPreconditionError("the file is quarantined: the scanner found a threat in it");
    const size = Number(file.record.sizeBytes);
    if (range.offset > size)
      throw new InvalidArgumentError(`offset beyond the file's ${size} bytes`, [
        { field: "offset", description: `at most ${size}` },
      ]);
    const end = range.length > 0 ? Math.min(size, range.offset + range.length) : size;
    const bytes =
      end === range.offset
        ? emptyStream()
        : this.#blobs.read(file.record.sha256, { start: range.offset, end });
    return { file, start: range.offset, end, bytes };
  }

  /** Soft delete; its bytes leave the organisation's quota. A second delete is NOT_FOUND. */
  async delete(caller: Principal, fileId: string): Promise<{ deletedAtMs: number; sequence: number }> {
    const nowMs = this.#now();
    let size = 0;
    const result = await this.#files.handle(
      fileId,
      (state) => {
        const file = visibleFile(caller, state);
        size = Number(file.record.sizeBytes);
        return decideDelete(state, { deletedBy: caller.subject, nowMs });
      },
      { actor: caller.subject },
    );
    if (result.events.length === 0) throw fileNotFound();
    await this.#quota.release(caller.orgId, size).catch((err: unknown) => {
      this.#logger.warn({ err }, "could not give back a deleted file's bytes to the quota");
    });
    return { deletedAtMs: nowMs, sequence: result.sequence };
  }

  /** The store (tests). */
  get store(): EventStore {
    return this.#store;
  }
}

async function* emptyStream(): AsyncIterable<Uint8Array> {}

/** SHA-256 of bytes as the blob store keys them (tests and imports). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export { FileOrigin };
