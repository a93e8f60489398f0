import { defineProjection, type Sql, unreachable } from "@spool/kit";
import { ScanVerdict } from "@spool/proto/spool/files/v1/events.js";
import { FileEvents, FilesStreams, Subjects } from "../domain/events.js";

/** Files for ListFiles, the organisation's stored bytes, and the blob collector's references. */
export const filesProjection = defineProjection({
  name: "files",
  stream: FilesStreams.FILES.name,
  filterSubject: Subjects.file.all,
  tables: ["files"],
  migrate: async (tx, t) => {
    await tx.unsafe(`CREATE TABLE ${t.files} (
      file_id text PRIMARY KEY,
      org_id text NOT NULL,
      owner_id text NOT NULL,
      display_name text NOT NULL,
      size_bytes bigint NOT NULL,
      sha256 text NOT NULL,
      declared_content_type text NOT NULL,
      detected_content_type text NOT NULL,
      origin integer NOT NULL,
      source_url text NOT NULL DEFAULT '',
      archive_file_id text NOT NULL DEFAULT '',
      archive_path text NOT NULL DEFAULT '',
      scan_status text NOT NULL DEFAULT 'pending',
      scan_signature text NOT NULL DEFAULT '',
      scanner text NOT NULL DEFAULT '',
      created_at timestamptz NOT NULL,
      scanned_at timestamptz,
      deleted_at timestamptz
    )`);
    await tx.unsafe(
      `CREATE INDEX ON ${t.files} (org_id, created_at DESC, file_id DESC) WHERE deleted_at IS NULL`,
    );
    await tx.unsafe(
      `CREATE INDEX ON ${t.files} (org_id, owner_id, created_at DESC, file_id DESC) WHERE deleted_at IS NULL`,
    );
    await tx.unsafe(`CREATE INDEX ON ${t.files} (sha256) WHERE deleted_at IS NULL`);
  },
  events: FileEvents,
  apply: async (tx, event, { tables }) => {
    const t = tables.files;
    const id = Subjects.file.idOf(event.meta.subject);
    switch (event.type) {
      case "FileRecorded": {
        const e = event.data;
        await tx.unsafe(
          `INSERT INTO ${t} (file_id, org_id, owner_id, display_name, size_bytes, sha256, declared_content_type,
             detected_content_type, origin, source_url, archive_file_id, archive_path, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, to_timestamp($13::double precision / 1000))
           ON CONFLICT DO NOTHING`,
          [
            id,
            e.orgId,
            e.ownerId,
            e.displayName,
            Number(e.sizeBytes),
            e.sha256,
            e.declaredContentType,
            e.detectedContentType,
            e.origin,
            e.sourceUrl,
            e.archiveFileId,
            e.archivePath,
            Number(e.recordedAtMs),
          ],
        );
        return;
      }
      case "FileScanned": {
        const e = event.data;
        const status =
          e.verdict === ScanVerdict.SCAN_VERDICT_INFECTED
            ? "infected"
            : e.verdict === ScanVerdict.SCAN_VERDICT_CLEAN
              ? "clean"
              : undefined;
        if (!status) return;
        // The first verdict counts (as in the aggregate).
        await tx.unsafe(
          `UPDATE ${t} SET scan_status = $2, scan_signature = $3, scanner = $4,
             scanned_at = to_timestamp($5::double precision / 1000)
           WHERE file_id = $1 AND scan_status = 'pending'`,
          [id, status, status === "infected" ? e.signature : "", e.scanner, Number(e.scannedAtMs)],
        );
        return;
      }
      case "FileDeleted":
        await tx.unsafe(
          `UPDATE ${t} SET deleted_at = to_timestamp($2::double precision / 1000)
           WHERE file_id = $1 AND deleted_at IS NULL`,
          [id, Number(event.data.deletedAtMs)],
        );
        return;
      case "unknown":
        return;
      default:
        unreachable(event);
    }
  },
});

export interface FileRow {
  file_id: string;
  org_id: string;
  owner_id: string;
  display_name: string;
  size_bytes: string;
  sha256: string;
  declared_content_type: string;
  detected_content_type: string;
  origin: number;
  source_url: string;
  archive_file_id: string;
  archive_path: string;
  scan_status: "pending" | "clean" | "infected";
  scan_signature: string;
  created_at: Date;
  scanned_at: Date | null;
}

export interface ListQuery {
  orgId: string;
  ownerId?: string;
  scanStatus?: FileRow["scan_status"];
  contentType?: string;
  origin?: number;
  namePrefix?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  limit: number;
  after?: { createdAt: Date; id: string };
}

/** LIKE's wildcards and escape character, escaped, so a prefix matches literally. */
const likePrefix = (s: string) => `${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

export class FilesReadModel {
  readonly #sql: Sql;
  constructor(sql: Sql) {
    this.#sql = sql;
  }

  /** Live files of one organisation, newest first; filters independent, combined with AND; keyset pagination. */
  async list(q: ListQuery): Promise<{ rows: FileRow[]; more: boolean }> {
    const rows = await this.#sql<FileRow[]>`
      SELECT * FROM files
      WHERE org_id = ${q.orgId} AND deleted_at IS NULL
        AND (${q.ownerId ?? null}::text IS NULL OR owner_id = ${q.ownerId ?? null})
        AND (${q.scanStatus ?? null}::text IS NULL OR scan_status = ${q.scanStatus ?? null})
        AND (${q.contentType ?? null}::text IS NULL OR detected_content_type = ${q.contentType ?? null})
        AND (${q.origin ?? null}::integer IS NULL OR origin = ${q.origin ?? null})
        AND (${q.namePrefix ?? null}::text IS NULL
             OR display_name LIKE ${q.namePrefix ? likePrefix(q.namePrefix) : null})
        AND (${q.createdAfter ?? null}::timestamptz IS NULL OR created_at >= ${q.createdAfter ?? null})
        AND (${q.createdBefore ?? null}::timestamptz IS NULL OR created_at < ${q.createdBefore ?? null})
        AND (${q.after?.createdAt ?? null}::timestamptz IS NULL
             OR (created_at, file_id) < (${q.after?.createdAt ?? new Date(0)}, ${q.after?.id ?? ""}))
      ORDER BY created_at DESC, file_id DESC
      LIMIT ${q.limit + 1}`;
    return { rows: rows.slice(0, q.limit), more: rows.length > q.limit };
  }

  /** Bytes of the organisation's live files (each file counts, identical contents too). */
  async storedBytes(orgId: string): Promise<number> {
    const [row] = await this.#sql<{ total: string | null }[]>`
      SELECT sum(size_bytes) AS total FROM files WHERE org_id = ${orgId} AND deleted_at IS NULL`;
    return Number(row?.total ?? 0);
  }

  /** Whether a live file still needs the blob (the blob collector's question). */
  async isReferenced(sha256: string): Promise<boolean> {
    const rows = await this.#sql`SELECT 1 FROM files WHERE sha256 = ${sha256} AND deleted_at IS NULL LIMIT 1`;
    return rows.length > 0;
  }
}
