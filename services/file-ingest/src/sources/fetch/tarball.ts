// Fetching a tarball source: downloaded with the kit's SSRF-safe client
// (https only, every resolved address judged at connect time, redirects
// re-validated per hop and never from https to http, certificates always
// verified, size and time limits), written to a scratch file, expanded by
// the archive expander (every archive shape of DESIGN.md §7 refused), and
// each file stored in the blob store.
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { isSafeFetchError, type SafeFetchError, safeFetch } from "@spool/kit";
import {
  type ArchiveLimits,
  ArchiveRefusedError,
  DEFAULT_ARCHIVE_LIMITS,
  expandArchive,
} from "../../archive/index.js";
import type { ManifestEntry } from "../domain/manifest.js";
import type { TargetPolicy } from "./target.js";
import {
  type FetchContext,
  type FetchedTree,
  SOURCE_REFUSAL_REASONS,
  SourceFetchError,
  type SourceRefusalReason,
} from "./types.js";

export interface TarballFetchOptions extends FetchContext {
  target: TargetPolicy;
  /** PEM of a CA trusted besides the system's (private hosts; tests). */
  ca?: string;
  /** Redirects followed, each re-validated (https to http is always refused). */
  maxRedirects: number;
}

/** The archive limits of a source: its file, size and path limits; ratio, segment and nesting as for archives. */
export function sourceArchiveLimits(limits: FetchContext["limits"]): ArchiveLimits {
  return {
    ...DEFAULT_ARCHIVE_LIMITS,
    maxEntries: limits.maxFiles,
    maxTotalBytes: limits.maxTotalBytes,
    maxEntryBytes: limits.maxFileBytes,
    maxPathBytes: limits.maxPathBytes,
  };
}

export async function fetchTarball(url: string, options: TarballFetchOptions): Promise<FetchedTree> {
  await mkdir(options.workDir, { recursive: true });
  const dir = await mkdtemp(join(options.workDir, "tarball-"));
  try {
    const archive = join(dir, "source.archive");
    await download(url, archive, options);
    let expanded: Awaited<ReturnType<typeof expandArchive>>;
    try {
      expanded = await expandArchive(
        { path: archive },
        join(dir, "tree"),
        sourceArchiveLimits(options.limits),
        options.signal ? { signal: options.signal } : {},
      );
    } catch (e) {
      if (e instanceof ArchiveRefusedError)
        throw new SourceFetchError(
          "ARCHIVE_REFUSED",
          `${e.reason}${e.entry ? ` at ${JSON.stringify(e.entry)}` : ""}`,
        );
      throw e;
    }
    const entries: ManifestEntry[] = [];
    for (const entry of expanded) {
      const staged = await options.blobs.stage(
        createReadStream(join(dir, "tree", ...entry.path.split("/"))),
        {
          maxBytes: options.limits.maxFileBytes,
          ...(options.signal ? { signal: options.signal } : {}),
        },
      );
      if (staged.sha256 !== entry.sha256) {
        await staged.discard();
        throw new SourceFetchError("FETCH_FAILED", "an expanded file changed before it was stored");
      }
      await staged.commit();
      entries.push({ path: entry.path, size: staged.size, sha256: staged.sha256 });
    }
    return { entries, commit: "", skippedLinks: 0 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function download(url: string, path: string, options: TarballFetchOptions): Promise<void> {
  const { target, limits } = options;
  const lookup = target.lookup;
  try {
    const response = await safeFetch(url, {
      allowedPorts: [...target.allowedPorts],
      maxRedirects: options.maxRedirects,
      maxResponseBytes: limits.maxFetchBytes,
      maxDecompressedBytes: limits.maxFetchBytes,
      timeoutMs: limits.timeoutMs,
      unsafeAllowedTargets: [...target.unsafeAllowedTargets],
      ...(options.ca ? { ca: options.ca } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(lookup
        ? {
            lookup: async (host: string) =>
              (await lookup(host)).map((address) => ({ address, family: isIP(address) === 6 ? 6 : 4 })),
          }
        : {}),
    });
    if (response.status !== 200) {
      response.cancel();
      throw new SourceFetchError("FETCH_FAILED", `the server answered HTTP ${response.status}`);
    }
    await pipeline(response.body, createWriteStream(path, { flags: "wx", mode: 0o600 }));
  } catch (e) {
    if (isSafeFetchError(e)) throw fromSafeFetch(e);
    throw e;
  }
}

const SAME_NAME = new Set<string>(SOURCE_REFUSAL_REASONS);
const RENAMED: Record<string, SourceRefusalReason> = {
  TOO_MANY_REDIRECTS: "REDIRECT_REFUSED",
  ABORTED: "TIMEOUT",
  RESPONSE_TOO_LARGE: "FETCH_TOO_LARGE",
  DECOMPRESSION_LIMIT: "FETCH_TOO_LARGE",
};

/** The SSRF-safe client's reason as a source refusal (same names where they exist). */
function fromSafeFetch(e: SafeFetchError): SourceFetchError {
  // A redirect to http (or any scheme but https) is refused by the client at
  // that hop as a scheme; for a source it is an insecure redirect.
  if (e.reason === "SCHEME_NOT_ALLOWED" && e.hop > 0)
    return new SourceFetchError("INSECURE_REDIRECT", "a redirect to a scheme other than https is refused");
  const reason = SAME_NAME.has(e.reason)
    ? (e.reason as SourceRefusalReason)
    : (RENAMED[e.reason] ?? "FETCH_FAILED");
  return new SourceFetchError(reason, e.message.slice(e.reason.length + 2) || e.reason);
}
