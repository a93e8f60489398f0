// ExpandArchive: a CLEAN archive the caller may read, expanded (file-archive's
// expander: every DESIGN.md §7 shape refused with a typed reason) into a
// scratch directory, then each regular entry recorded as a file of the caller
// (origin ARCHIVE). Everything that can refuse an entry (name, content type,
// size) is checked for all entries before the first is recorded, and the
// entries' total is reserved against the organisation's limit in one step, so
// a refusal records nothing. The scratch directory is removed in every case.
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { FailedPreconditionError, InvalidArgumentError, type Principal, type SpoolError } from "@spool/kit";
import { ArchiveRefusal, ArchiveRefusalReason } from "@spool/proto/spool/files/v1/archive.js";
import { FileOrigin } from "@spool/proto/spool/files/v1/events.js";
import type { ArchiveLimits, ExpandArchive } from "../archive/archive.js";
import { ArchiveRefusedError } from "../archive/archive.js";
import type { BlobStore } from "../blobs/blob-store.js";
import { allowedType, detectContentType, SNIFF_BYTES } from "../upload/content-type.js";
import type { Files, IngestRequest, Recorded } from "./files.js";

export interface ExpandSettings {
  workDir: string;
  limits: ArchiveLimits;
}

/** Reasons that are about the archive the caller chose (its bytes), as opposed to our limits. */
const LIMIT_REASONS = new Set(["TOO_MANY_ENTRIES", "TOO_LARGE", "RATIO_EXCEEDED", "NESTING_TOO_DEEP"]);

/** The gRPC error for a refused archive: INVALID_ARGUMENT (its shape) or FAILED_PRECONDITION (our limits), with an ArchiveRefusal detail. */
export function refusalError(e: ArchiveRefusedError): SpoolError {
  const reason =
    (ArchiveRefusalReason as unknown as Record<string, ArchiveRefusalReason>)[
      `ARCHIVE_REFUSAL_REASON_${e.reason}`
    ] ?? ArchiveRefusalReason.ARCHIVE_REFUSAL_REASON_UNSPECIFIED;
  const message = `archive refused (${e.reason})${e.entry ? `: ${e.entry}` : ""}`;
  const error = LIMIT_REASONS.has(e.reason)
    ? new FailedPreconditionError(message)
    : new InvalidArgumentError(message, [{ field: "file_id", description: message }]);
  return error.withDetail({
    typeUrl: "type.googleapis.com/spool.files.v1.ArchiveRefusal",
    value: ArchiveRefusal.encode({ reason, entry: e.entry, detail: "" }).finish(),
  });
}

async function sniff(path: string): Promise<Uint8Array> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

export async function expandArchiveFile(
  d: { files: Files; blobs: BlobStore; expand: ExpandArchive; settings: ExpandSettings },
  caller: Principal,
  fileId: string,
  signal: AbortSignal,
): Promise<Recorded[]> {
  const archive = await d.files.get(caller, fileId);
  if (archive.scan.status === "pending")
    throw new FailedPreconditionError("the archive has not been scanned yet; try again once it is CLEAN");
  if (archive.scan.status === "infected")
    throw new FailedPreconditionError("the archive is quarantined: the scanner found a threat in it");
  await d.files.takeUploadSlot(caller);
  await mkdir(d.settings.workDir, { recursive: true, mode: 0o700 });
  const scratch = await mkdtemp(join(d.settings.workDir, "expand-"));
  try {
    const source = join(scratch, "archive");
    await pipeline(d.blobs.read(archive.record.sha256), createWriteStream(source, { mode: 0o600 }), {
      signal,
    });
    const target = join(scratch, "out");
    const entries = await d
      .expand({ path: source }, target, d.settings.limits, { signal })
      .catch((e: unknown) => {
        throw e instanceof ArchiveRefusedError ? refusalError(e) : e;
      });
    // Every refusal an entry can meet, before anything is recorded.
    const planned: { request: IngestRequest; path: string; size: number }[] = [];
    for (const entry of entries) {
      const path = join(target, ...entry.path.split("/"));
      const request: IngestRequest = {
        displayName: entry.path,
        displayNameField: "file_id",
        declaredContentType: "",
        contentTypeField: "file_id",
        expectedSize: entry.size,
        expectedSha256: entry.sha256,
        origin: FileOrigin.FILE_ORIGIN_ARCHIVE,
        archiveFileId: fileId,
        archivePath: entry.path,
      };
      d.files.precheck(request);
      const detected = await detectContentType(await sniff(path));
      if (!allowedType(d.files.limits.allowedContentTypes, detected))
        throw new InvalidArgumentError(
          `archive entry ${entry.path} is ${detected}, which is not accepted here`,
          [
            {
              field: "file_id",
              description: `entry ${entry.path}: ${detected} is not an allowed content type`,
            },
          ],
        );
      planned.push({ request, path, size: entry.size });
    }
    const total = planned.reduce((sum, p) => sum + p.size, 0);
    const reservation = d.files.reservation(caller.orgId);
    await reservation.ensure(total, true);
    const recorded: Recorded[] = [];
    try {
      for (const p of planned) {
        recorded.push(
          await d.files.ingest(
            caller,
            { ...p.request, quotaReserved: true },
            createReadStream(p.path),
            signal,
          ),
        );
        reservation.transfer(p.size);
      }
    } finally {
      await reservation.releaseAll();
    }
    return recorded;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
