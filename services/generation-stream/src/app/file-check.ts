import {
  FailedPreconditionError,
  FilesStreams,
  NotFoundError,
  type Principal,
  UnavailableError,
} from "@spool/kit";
import { type FileAccess, fileAccess } from "../domain/files.js";
import type { FileRow } from "../projections/files.js";

export interface FileCheckDeps {
  /** The caller's organisation's rows for these ids (FilesReadModel.inOrganisation). */
  read(orgId: string, fileIds: readonly string[]): Promise<FileRow[]>;
  /** The FILES stream's last sequence now. */
  head(): Promise<number>;
  /** Resolves once the files projection applied `sequence`; rejects after `timeoutMs`. */
  waitFor(sequence: number, timeoutMs: number): Promise<void>;
  /** How long a start waits for the projection to catch up before answering UNAVAILABLE. */
  catchUpMs: number;
}

export const FILES_STREAM = FilesStreams.FILES.name;

/**
 * Whether the caller may attach these files to a generation, decided from the
 * service's own FILES projection (no call to file-ingest). A file not usable
 * at first sight may just not have reached the projection yet (uploaded and
 * scanned a moment ago): the check then waits, within `catchUpMs`, for the
 * projection to reach the FILES stream's head, and decides on what it holds
 * then. Throws NOT_FOUND (unknown, foreign, deleted, quarantined, or not the
 * caller's), FAILED_PRECONDITION (the caller's file still pending its scan) or
 * UNAVAILABLE (the projection could not catch up in time).
 */
export async function checkFiles(
  deps: FileCheckDeps,
  caller: Principal,
  fileIds: readonly string[],
): Promise<void> {
  if (fileIds.length === 0) return;
  let verdicts = await verdictsOf(deps, caller, fileIds);
  if (verdicts.every((v) => v.access === "usable")) return;
  const head = await deps.head();
  try {
    await deps.waitFor(head, deps.catchUpMs);
  } catch {
    throw new UnavailableError("file records are catching up; retry shortly");
  }
  verdicts = await verdictsOf(deps, caller, fileIds);
  const missing = verdicts.find((v) => v.access === "not_found");
  if (missing) throw new NotFoundError(`file ${missing.fileId} not found`);
  const pending = verdicts.find((v) => v.access === "pending");
  if (pending)
    throw new FailedPreconditionError(
      `file ${pending.fileId} is still being scanned; retry once it is clean`,
    );
}

async function verdictsOf(
  deps: FileCheckDeps,
  caller: Principal,
  fileIds: readonly string[],
): Promise<{ fileId: string; access: FileAccess }[]> {
  const rows = new Map((await deps.read(caller.orgId, fileIds)).map((r) => [r.file_id, r]));
  return fileIds.map((fileId) => {
    const r = rows.get(fileId);
    return {
      fileId,
      access: fileAccess(
        caller,
        r && { orgId: r.org_id, ownerId: r.owner_id, scan: r.scan, deleted: r.deleted },
      ),
    };
  });
}
