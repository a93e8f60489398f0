// The sources' settings (SPOOL_SOURCE_*), spread into the service's config
// schema; defaults documented in docs/SECURITY.md and docs/OPERATIONS.md.
import { z } from "zod";
import type { SourceLimits } from "./fetch/types.js";

const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export const sourcesConfigShape = {
  /** Snapshots per source kept materialised (older ones keep only their manifest). */
  SOURCE_KEEP_SNAPSHOTS: int(3, 1, 1_000),
  /** Regular files in one snapshot. */
  SOURCE_MAX_FILES: int(10_000, 1, 1_000_000),
  SOURCE_MAX_FILE_BYTES: int(100 * MiB, 1, 64 * GiB),
  /** Bytes of every file of one snapshot together. */
  SOURCE_MAX_TOTAL_BYTES: int(GiB, 1, 1024 * GiB),
  /** Bytes a git fetch (or tarball download) may bring in before it is stopped. */
  SOURCE_MAX_FETCH_BYTES: int(2 * GiB, 1, 1024 * GiB),
  SOURCE_MAX_PATH_BYTES: int(1_024, 16, 4_096),
  /**
   * One whole fetch. TakeSnapshot fetches inside the call, so this stays
   * below SPOOL_GRPC_MAX_UNARY_MS (default 30 s): raise both for large sources.
   */
  SOURCE_FETCH_TIMEOUT_MS: int(25_000, 1_000, 600_000),
  /** Redirects a tarball download follows, each re-validated (never https to http); git follows none. */
  SOURCE_MAX_REDIRECTS: int(3, 0, 10),
  /** Holders pinning one snapshot. */
  SOURCE_MAX_PINS: int(100, 1, 10_000),
  /** Ports source URLs may name (comma-separated). */
  SOURCE_ALLOWED_PORTS: z.string().default("443"),
  /**
   * UNSAFE, tests and local development only (refused in production): exact
   * "address:port" targets exempt from the SSRF address policy.
   */
  SOURCE_UNSAFE_ALLOWED_TARGETS: z.string().default(""),
  /** A PEM CA file trusted for source fetches instead of the system's (private git hosts; tests). */
  SOURCE_CA_FILE: z.string().default(""),
  /** The git program. */
  SOURCE_GIT_BINARY: z.string().min(1).default("git"),
};

type SourcesConfig = { [K in keyof typeof sourcesConfigShape]: z.output<(typeof sourcesConfigShape)[K]> } & {
  ENV: string;
  GRPC_MAX_UNARY_MS: number;
};

function list(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Problems of the sources' settings (for the service's config loader). */
export function sourcesConfigProblems(config: SourcesConfig): string[] {
  const problems: string[] = [];
  const ports = list(config.SOURCE_ALLOWED_PORTS).map(Number);
  if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535))
    problems.push("SPOOL_SOURCE_ALLOWED_PORTS: comma-separated ports 1-65535");
  if (config.SOURCE_FETCH_TIMEOUT_MS >= config.GRPC_MAX_UNARY_MS)
    problems.push(
      "SPOOL_SOURCE_FETCH_TIMEOUT_MS: must be below SPOOL_GRPC_MAX_UNARY_MS (TakeSnapshot fetches inside the call)",
    );
  if (config.ENV === "production" && config.SOURCE_UNSAFE_ALLOWED_TARGETS)
    problems.push("SPOOL_SOURCE_UNSAFE_ALLOWED_TARGETS: tests and development only, never in production");
  for (const t of list(config.SOURCE_UNSAFE_ALLOWED_TARGETS))
    if (!/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$/.test(t))
      problems.push(`SPOOL_SOURCE_UNSAFE_ALLOWED_TARGETS: ${JSON.stringify(t)} is not "address:port"`);
  return problems;
}

export interface SourceSettings {
  keep: number;
  maxPins: number;
  maxRedirects: number;
  limits: SourceLimits;
  allowedPorts: ReadonlySet<number>;
  unsafeAllowedTargets: ReadonlySet<string>;
  caFile: string | undefined;
  gitBinary: string;
}

export function sourceSettings(config: SourcesConfig): SourceSettings {
  const problems = sourcesConfigProblems(config);
  if (problems.length > 0) throw new Error(problems.join("; "));
  return {
    keep: config.SOURCE_KEEP_SNAPSHOTS,
    maxPins: config.SOURCE_MAX_PINS,
    maxRedirects: config.SOURCE_MAX_REDIRECTS,
    limits: {
      maxFiles: config.SOURCE_MAX_FILES,
      maxFileBytes: config.SOURCE_MAX_FILE_BYTES,
      maxTotalBytes: config.SOURCE_MAX_TOTAL_BYTES,
      maxFetchBytes: config.SOURCE_MAX_FETCH_BYTES,
      maxPathBytes: config.SOURCE_MAX_PATH_BYTES,
      timeoutMs: config.SOURCE_FETCH_TIMEOUT_MS,
    },
    allowedPorts: new Set(list(config.SOURCE_ALLOWED_PORTS).map(Number)),
    unsafeAllowedTargets: new Set(list(config.SOURCE_UNSAFE_ALLOWED_TARGETS)),
    caFile: config.SOURCE_CA_FILE || undefined,
    gitBinary: config.SOURCE_GIT_BINARY,
  };
}
