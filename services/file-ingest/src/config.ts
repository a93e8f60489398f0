import { tmpdir } from "node:os";
import { join } from "node:path";
import { baseConfigShape, ConfigError, envBoolean, loadConfig } from "@spool/kit";
import { z } from "zod";
import { sourcesConfigProblems, sourcesConfigShape } from "./sources/config.js";

const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * The detected content types uploads may have by default: text, images, PDF,
 * office documents and the archive formats ExpandArchive reads. Executables,
 * scripts detected as such and unknown binaries are not in it.
 */
export const DEFAULT_ALLOWED_CONTENT_TYPES = [
  "text/plain",
  "application/pdf",
  "image/png",
  "image/jpeg",
  "image/gif",
  "image/webp",
  "application/zip",
  "application/gzip",
  "application/x-tar",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  "application/vnd.openxmlformats-officedocument.presentationml.presentation",
].join(",");

export const filesConfigShape = {
  ...baseConfigShape,
  GRPC_PORT: int(50063, 0, 65535),
  METRICS_PORT: int(9463, 0, 65535),
  REDIS_PREFIX: z.string().max(64).default("spool:files:"),
  AUTH_ISSUER: z.string().min(1).default("spool-auth"),
  /** This service's audience in access tokens. */
  AUTH_AUDIENCE: z.string().min(1).default("spool.files"),

  // --- blob store ---
  /** "fs": a directory (one replica, or a shared volume); "nats": the JetStream object store (several replicas). */
  BLOB_STORE: z.enum(["fs", "nats"]).default("fs"),
  /** The filesystem store's directory (blobs and their staging area). Required in production with BLOB_STORE=fs. */
  BLOB_DIR: z.string().default(""),
  /** An unreferenced blob is collected only this long after its last commit. */
  BLOB_GC_GRACE_SECONDS: int(86_400, 60, 30 * 86_400),
  BLOB_GC_INTERVAL_SECONDS: int(3_600, 10, 86_400),
  /** Scratch space for archive expansion (emptied after each expansion). */
  WORK_DIR: z.string().default(""),

  // --- uploads ---
  /** Largest file, uploaded, imported or expanded from an archive. */
  UPLOAD_MAX_FILE_BYTES: int(100 * MiB, 1, 64 * GiB),
  /** Largest chunk message of an Upload stream (the gRPC receive limit must exceed it). */
  UPLOAD_MAX_CHUNK_BYTES: int(MiB, 1024, 16 * MiB),
  /** Bytes an organisation may store in files (deleted files no longer count); 0 = no limit. */
  ORG_MAX_STORED_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(2 ** 50)
    .default(10 * GiB),
  /** Uploads (and imports, expansions) per user: a burst of this many, then one per window / this (GCRA). */
  UPLOADS_PER_WINDOW: int(60, 1, 100_000),
  UPLOAD_WINDOW_SECONDS: int(60, 1, 86_400),
  /** Longest display name, in characters (code points) after sanitising. */
  DISPLAY_NAME_MAX_CHARS: int(255, 16, 1_024),
  /** Detected content types allowed (comma-separated; "type/*" allows a family; "*" allows all). */
  ALLOWED_CONTENT_TYPES: z.string().default(DEFAULT_ALLOWED_CONTENT_TYPES),
  /** Longest an upload stream may stay open. */
  UPLOAD_MAX_MS: int(30 * 60_000, 1_000, 24 * 3_600_000),

  // --- scanning ---
  /** "clamd" (production) or "none" (development and test only: every file is clean at once). */
  SCANNER: z.enum(["clamd", "none"]).default("none"),
  /** clamd's unix socket, or its host and port (the socket wins when both are set). */
  CLAMD_SOCKET: z.string().default(""),
  CLAMD_HOST: z.string().default(""),
  CLAMD_PORT: int(3310, 1, 65535),
  CLAMD_TIMEOUT_MS: int(120_000, 100, 3_600_000),
  /** Most bytes sent to clamd; keep at or below clamd's StreamMaxLength. A larger file stays pending. */
  CLAMD_MAX_STREAM_BYTES: int(100 * MiB, 1, 4 * GiB),

  // --- URL imports ---
  IMPORT_MAX_BYTES: int(100 * MiB, 1, 64 * GiB),
  IMPORT_TIMEOUT_MS: int(30_000, 100, 600_000),
  IMPORT_MAX_REDIRECTS: int(3, 0, 10),
  /** Plain http imports (https only when false). */
  IMPORT_ALLOW_HTTP: envBoolean.default(false),
  /** Ports imports may connect to (comma-separated). */
  IMPORT_ALLOWED_PORTS: z.string().default("443,80"),
  /**
   * UNSAFE, tests and local development only (refused in production): exact
   * "address:port" targets exempt from the blocked address ranges, comma-separated.
   */
  IMPORT_UNSAFE_ALLOWED_TARGETS: z.string().default(""),

  // --- archives ---
  ARCHIVE_MAX_ENTRIES: int(10_000, 1, 1_000_000),
  ARCHIVE_MAX_TOTAL_BYTES: int(GiB, 1, 64 * GiB),
  ARCHIVE_MAX_ENTRY_BYTES: int(100 * MiB, 1, 64 * GiB),
  ARCHIVE_MAX_RATIO: int(100, 1, 10_000),
  ARCHIVE_RATIO_GRACE_BYTES: int(MiB, 0, GiB),
  ARCHIVE_MAX_PATH_BYTES: int(1_024, 16, 4_096),
  ARCHIVE_MAX_SEGMENT_BYTES: int(255, 16, 1_024),
  ARCHIVE_MAX_NESTING_DEPTH: int(1, 0, 3),

  // --- reads ---
  /** ListFiles' min_sequence: the longest it waits for the projection. */
  LIST_WAIT_MAX_MS: int(5_000, 0, 60_000),
  /** Bytes per DownloadFile message. */
  DOWNLOAD_CHUNK_BYTES: int(256 * 1024, 1024, 4 * MiB),

  // --- sources and snapshots (src/sources) ---
  ...sourcesConfigShape,
};

export function loadFilesConfig(env: NodeJS.ProcessEnv = process.env) {
  const config = loadConfig(filesConfigShape, env);
  const problems: string[] = [];
  const production = config.ENV === "production";
  if (production && config.SCANNER === "none")
    problems.push("SPOOL_SCANNER: 'none' is for development and test; production scans (clamd)");
  if (config.SCANNER === "clamd" && !config.CLAMD_SOCKET && !config.CLAMD_HOST)
    problems.push("SPOOL_SCANNER=clamd needs SPOOL_CLAMD_SOCKET or SPOOL_CLAMD_HOST");
  if (production && config.BLOB_STORE === "fs" && !config.BLOB_DIR)
    problems.push("SPOOL_BLOB_DIR: required in production with SPOOL_BLOB_STORE=fs");
  if (config.UPLOAD_MAX_CHUNK_BYTES + 1024 > config.GRPC_MAX_RECEIVE_BYTES)
    problems.push("SPOOL_UPLOAD_MAX_CHUNK_BYTES: must be at least 1 KiB below SPOOL_GRPC_MAX_RECEIVE_BYTES");
  if (config.DOWNLOAD_CHUNK_BYTES + 16 * 1024 > config.GRPC_MAX_SEND_BYTES)
    problems.push("SPOOL_DOWNLOAD_CHUNK_BYTES: must be at least 16 KiB below SPOOL_GRPC_MAX_SEND_BYTES");
  const allowedContentTypes = list(config.ALLOWED_CONTENT_TYPES).map((t) => t.toLowerCase());
  for (const t of allowedContentTypes)
    if (t !== "*" && !/^[a-z0-9][a-z0-9!#$&^_.+-]*\/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$/.test(t))
      problems.push(`SPOOL_ALLOWED_CONTENT_TYPES: ${JSON.stringify(t)} is not a media type`);
  const importPorts = list(config.IMPORT_ALLOWED_PORTS).map(Number);
  if (importPorts.some((p) => !Number.isInteger(p) || p < 1 || p > 65535))
    problems.push("SPOOL_IMPORT_ALLOWED_PORTS: comma-separated ports 1-65535");
  const importUnsafeTargets = list(config.IMPORT_UNSAFE_ALLOWED_TARGETS);
  if (production && importUnsafeTargets.length > 0)
    problems.push("SPOOL_IMPORT_UNSAFE_ALLOWED_TARGETS: not allowed in production");
  problems.push(...sourcesConfigProblems(config));
  if (problems.length > 0) throw new ConfigError(problems);
  const scratch = join(tmpdir(), "spool-file-ingest");
  return {
    ...config,
    blobDir: config.BLOB_DIR || join(scratch, "blobs"),
    workDir: config.WORK_DIR || join(scratch, "work"),
    allowedContentTypes,
    importPorts,
    importUnsafeTargets,
  };
}

export type FilesConfig = ReturnType<typeof loadFilesConfig>;

function list(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The upload limits, in the units the app takes. */
export function uploadLimits(config: FilesConfig) {
  return {
    maxFileBytes: config.UPLOAD_MAX_FILE_BYTES,
    maxChunkBytes: config.UPLOAD_MAX_CHUNK_BYTES,
    maxOrgStoredBytes: config.ORG_MAX_STORED_BYTES,
    uploadsPerWindow: config.UPLOADS_PER_WINDOW,
    windowMs: config.UPLOAD_WINDOW_SECONDS * 1000,
    displayNameMaxChars: config.DISPLAY_NAME_MAX_CHARS,
    allowedContentTypes: config.allowedContentTypes,
  };
}

/** The archive expander's limits (archive/archive.ts). */
export function archiveLimits(config: FilesConfig) {
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
