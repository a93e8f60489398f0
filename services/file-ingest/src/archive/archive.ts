// The archive expander's contract: zip, tar and tar.gz expanded into a fresh
// directory, refusing every shape in DESIGN.md §7 with a typed reason naming
// the entry. On any refusal or error the target directory is left empty.

export type ArchiveFormat = "zip" | "tar" | "tar.gz";

export interface ArchiveLimits {
  /** Entries (files and directories) in one archive, nested ones included. */
  maxEntries: number;
  /** Total expanded bytes. */
  maxTotalBytes: number;
  /** Expanded bytes of one entry. */
  maxEntryBytes: number;
  /** Expanded/compressed ratio of an entry or the whole archive, checked beyond ratioGraceBytes. */
  maxRatio: number;
  ratioGraceBytes: number;
  /** UTF-8 bytes of one path, and of one segment. */
  maxPathBytes: number;
  maxSegmentBytes: number;
  /** Archives inside the archive: expanded up to this depth (1 = the top archive's own entries may be archives that are expanded once); deeper is refused. */
  maxNestingDepth: number;
}

export interface ExpandedEntry {
  /** Normalised (NFC), "/"-separated, relative; never absolute, never "..". */
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

/** Stable refusal codes; the proto enum ArchiveRefusalReason mirrors them (ARCHIVE_REFUSAL_REASON_<CODE>, proto/spool/files/v1/archive.proto). */
export type ArchiveRefusalReason =
  | "ABSOLUTE_PATH"
  | "DRIVE_PATH"
  | "UNC_PATH"
  | "PARENT_SEGMENT"
  | "BACKSLASH"
  | "LINK"
  | "DEVICE"
  | "DUPLICATE_NAME"
  | "FORBIDDEN_CHARACTER"
  | "RESERVED_NAME"
  | "NAME_TOO_LONG"
  | "HEADER_MISMATCH"
  | "OVERLAPPING_ENTRIES"
  | "RATIO_EXCEEDED"
  | "TOO_MANY_ENTRIES"
  | "TOO_LARGE"
  | "SIZE_MISMATCH"
  | "ENCRYPTED"
  | "NESTING_TOO_DEEP"
  | "CORRUPT"
  | "UNSUPPORTED_FORMAT";

export class ArchiveRefusedError extends Error {
  constructor(
    readonly reason: ArchiveRefusalReason,
    /** The offending entry's name as the archive spells it (escaped for display), or "" for the archive itself. */
    readonly entry: string,
    detail?: string,
  ) {
    super(`archive refused (${reason})${entry ? `: ${entry}` : ""}${detail ? `: ${detail}` : ""}`);
    this.name = "ArchiveRefusedError";
  }
}

export type ExpandArchive = (
  input: { path: string; format?: ArchiveFormat },
  targetDir: string,
  limits: ArchiveLimits,
  options?: { signal?: AbortSignal },
) => Promise<ExpandedEntry[]>;

/**
 * Defaults (docs/SECURITY.md "file-ingest: archives"): generous for source
 * trees and document bundles, small enough that one archive cannot fill a
 * disk or keep a core busy for long.
 */
export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxEntries: 10_000,
  maxTotalBytes: 1024 * 1024 * 1024,
  maxEntryBytes: 512 * 1024 * 1024,
  maxRatio: 100,
  ratioGraceBytes: 1024 * 1024,
  maxPathBytes: 1024,
  maxSegmentBytes: 255,
  maxNestingDepth: 1,
});
