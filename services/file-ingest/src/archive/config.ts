// The archive limits as service configuration: file-ingest's config spreads
// archiveLimitsConfigShape into its own shape (variables SPOOL_ARCHIVE_…)
// and passes archiveLimitsFromConfig(config) to expandArchive.
import { z } from "zod";
import { type ArchiveLimits, DEFAULT_ARCHIVE_LIMITS } from "./archive.js";

const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);
const GiB = 1024 * 1024 * 1024;
const d = DEFAULT_ARCHIVE_LIMITS;

export const archiveLimitsConfigShape = {
  /** Entries (files, directories) in one archive, nested archives' included. */
  ARCHIVE_MAX_ENTRIES: int(d.maxEntries, 1, 10_000_000),
  /** Bytes one archive may expand to in all. */
  ARCHIVE_MAX_TOTAL_BYTES: int(d.maxTotalBytes, 1, 1024 * GiB),
  /** Bytes one entry may expand to. */
  ARCHIVE_MAX_ENTRY_BYTES: int(d.maxEntryBytes, 1, 1024 * GiB),
  /** Expanded/compressed ratio of an entry, a tar.gz stream or the whole archive. */
  ARCHIVE_MAX_RATIO: int(d.maxRatio, 1, 100_000),
  /** Expanded bytes before the ratio limit applies. */
  ARCHIVE_RATIO_GRACE_BYTES: int(d.ratioGraceBytes, 0, 1024 * GiB),
  /** UTF-8 bytes of an entry's path, and of one segment. */
  ARCHIVE_MAX_PATH_BYTES: int(d.maxPathBytes, 1, 4096),
  ARCHIVE_MAX_SEGMENT_BYTES: int(d.maxSegmentBytes, 1, 255),
  /** Nested archives expanded up to this depth; deeper is refused (0 = none). */
  ARCHIVE_MAX_NESTING_DEPTH: int(d.maxNestingDepth, 0, 8),
};

type ArchiveLimitsConfig = { [K in keyof typeof archiveLimitsConfigShape]: number };

export function archiveLimitsFromConfig(config: ArchiveLimitsConfig): ArchiveLimits {
  return {
    maxEntries: config.ARCHIVE_MAX_ENTRIES,
    maxTotalBytes: config.ARCHIVE_MAX_TOTAL_BYTES,
    maxEntryBytes: config.ARCHIVE_MAX_ENTRY_BYTES,
    maxRatio: config.ARCHIVE_MAX_RATIO,
    ratioGraceBytes: config.ARCHIVE_RATIO_GRACE_BYTES,
    maxPathBytes: config.ARCHIVE_MAX_PATH_BYTES,
    maxSegmentBytes: config.ARCHIVE_MAX_SEGMENT_BYTES,
    maxNestingDepth: config.ARCHIVE_MAX_NESTING_DEPTH,
  };
}
