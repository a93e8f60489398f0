import { InvalidArgumentError } from "@spool/kit";
import { type File, ScanStatus } from "@spool/proto/spool/files/v1/files.js";
import type { ExistingFile } from "../domain/file.js";
import type { FileRow } from "../projections/files.js";

const STATUS_OF_SCAN = {
  pending: ScanStatus.SCAN_STATUS_PENDING,
  clean: ScanStatus.SCAN_STATUS_CLEAN,
  infected: ScanStatus.SCAN_STATUS_INFECTED,
} as const;

export const ROW_SCAN_OF: Partial<Record<ScanStatus, FileRow["scan_status"]>> = {
  [ScanStatus.SCAN_STATUS_PENDING]: "pending",
  [ScanStatus.SCAN_STATUS_CLEAN]: "clean",
  [ScanStatus.SCAN_STATUS_INFECTED]: "infected",
};

/** From the aggregate (always current). */
export function fromState(f: ExistingFile): File {
  const r = f.record;
  return {
    fileId: r.fileId,
    orgId: r.orgId,
    ownerId: r.ownerId,
    displayName: r.displayName,
    sizeBytes: r.sizeBytes,
    sha256: r.sha256,
    declaredContentType: r.declaredContentType,
    detectedContentType: r.detectedContentType,
    scanStatus: STATUS_OF_SCAN[f.scan.status],
    scanSignature: f.scan.status === "infected" ? f.scan.signature : "",
    origin: r.origin,
    sourceUrl: r.sourceUrl,
    archiveFileId: r.archiveFileId,
    archivePath: r.archivePath,
    createdAtMs: r.recordedAtMs,
    scannedAtMs: BigInt(f.scan.status === "pending" ? 0 : f.scan.scannedAtMs),
  };
}

/** From the projection (lists). */
export function fromRow(r: FileRow): File {
  return {
    fileId: r.file_id,
    orgId: r.org_id,
    ownerId: r.owner_id,
    displayName: r.display_name,
    sizeBytes: BigInt(r.size_bytes),
    sha256: r.sha256,
    declaredContentType: r.declared_content_type,
    detectedContentType: r.detected_content_type,
    scanStatus: STATUS_OF_SCAN[r.scan_status],
    scanSignature: r.scan_signature,
    origin: r.origin,
    sourceUrl: r.source_url,
    archiveFileId: r.archive_file_id,
    archivePath: r.archive_path,
    createdAtMs: BigInt(r.created_at.getTime()),
    scannedAtMs: BigInt(r.scanned_at?.getTime() ?? 0),
  };
}

/** Opaque to clients: the position after the last row of a page. */
export function encodePageToken(createdAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([createdAt.getTime(), id])).toString("base64url");
}

export function decodePageToken(token: string): { createdAt: Date; id: string } | undefined {
  if (!token) return undefined;
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString()) as unknown;
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && typeof v[1] === "string")
      return { createdAt: new Date(v[0] as number), id: v[1] };
  } catch {
    // fall through
  }
  throw new InvalidArgumentError("invalid page token", [
    { field: "page_token", description: "is not a token from this API" },
  ]);
}
