// What a fetcher produces and how it refuses. A fetcher stores every file's
// bytes in the blob store and returns the manifest; the app records the
// snapshot. Refusals carry a stable reason (docs/SECURITY.md, "Sources").
import type { BlobStore } from "../../blobs/blob-store.js";
import type { ManifestEntry } from "../domain/manifest.js";

export interface SourceLimits {
  /** Regular files in one snapshot. */
  maxFiles: number;
  /** Bytes of one file. */
  maxFileBytes: number;
  /** Bytes of all files of one snapshot. */
  maxTotalBytes: number;
  /** Bytes a git fetch may write (packs, objects) before it is killed. */
  maxFetchBytes: number;
  /** UTF-8 bytes of one path. */
  maxPathBytes: number;
  /** Whole fetch, from the first connection to the last blob stored. */
  timeoutMs: number;
}

export interface FetchedTree {
  /** In any order; the manifest sorts them. */
  entries: ManifestEntry[];
  /** Git: the commit the ref resolved to. */
  commit: string;
  /** Symbolic links and submodules left out. */
  skippedLinks: number;
}

export interface FetchContext {
  blobs: BlobStore;
  limits: SourceLimits;
  /** Scratch space (a fresh directory is made under it and removed after). */
  workDir: string;
  signal?: AbortSignal;
}

export const SOURCE_REFUSAL_REASONS = [
  "INVALID_URL",
  "SCHEME_NOT_ALLOWED",
  "USERINFO_NOT_ALLOWED",
  "PORT_NOT_ALLOWED",
  "ADDRESS_BLOCKED",
  "DNS_FAILED",
  "INVALID_REF",
  "REF_NOT_FOUND",
  "REDIRECT_REFUSED",
  "INSECURE_REDIRECT",
  "TLS_ERROR",
  "AUTH_REQUIRED",
  "CONNECT_FAILED",
  "TOO_MANY_FILES",
  "FILE_TOO_LARGE",
  "TOO_LARGE",
  "FETCH_TOO_LARGE",
  "INVALID_PATH",
  "DUPLICATE_PATH",
  "TIMEOUT",
  "FETCH_FAILED",
  "ARCHIVE_REFUSED",
] as const;
export type SourceRefusalReason = (typeof SOURCE_REFUSAL_REASONS)[number];

/** A fetch refused or failed; `reason` is stable, the message never holds a server path or remote output. */
export class SourceFetchError extends Error {
  constructor(
    readonly reason: SourceRefusalReason,
    message: string,
  ) {
    super(`${reason}: ${message}`);
    this.name = "SourceFetchError";
  }
}
