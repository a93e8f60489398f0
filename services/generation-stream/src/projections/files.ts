// What generation-stream knows of files: file-ingest's FILES events, projected
// into this service's own schema (services share events, not databases), so
// StartGeneration checks the files it names without calling file-ingest.
import { defineProjection, FileEvents, FilesStreams, type Sql, unreachable } from "@spool/kit";
import { ScanVerdict } from "@spool/proto/spool/files/v1/events.js";

const Files = FilesStreams.FILES.subjects.file;

export type FileScan = "pending" | "clean" | "infected";

/** One file per row: who owns it, its scan verdict, whether it was deleted (kept as a tombstone). */
export const filesProjection = defineProjection({
  name: "files",
  stream: FilesStreams.FILES.name,
  filterSubject: Files.all,
  tables: ["files"],
  // Never skip an event: a skipped FileDeleted or infected verdict would leave a file usable.
  strict: true,
  migrate: async (tx, t) => {
    await tx.unsafe(`CREATE TABLE ${t.files} (
      file_id text PRIMARY KEY,
      org_id text NOT NULL,
      owner_id text NOT NULL,
      scan text NOT NULL DEFAULT 'pending',
      deleted boolean NOT NULL DEFAULT false
    )`);
  },
  events: FileEvents,
  apply: async (tx, event, { tables }) => {
    const t = tables.files;
    const id = Files.idOf(event.meta.subject);
    switch (event.type) {
      case "FileRecorded": {
        const e = event.data;
        // The subject names the file: a payload claiming another id changes nothing else.
        await tx.unsafe(
          `INSERT INTO ${t} (file_id, org_id, owner_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
          [id, e.orgId, e.ownerId],
        );
        return;
      }
      case "FileScanned": {
        const verdict = event.data.verdict;
        // Anything but a clean verdict keeps the file unusable; an unknown verdict is never "clean".
        const scan: FileScan =
          verdict === ScanVerdict.SCAN_VERDICT_CLEAN
            ? "clean"
            : verdict === ScanVerdict.SCAN_VERDICT_INFECTED
              ? "infected"
              : "pending";
        // Infected is final: a later verdict never releases a quarantined file.
        await tx.unsafe(`UPDATE ${t} SET scan = $2 WHERE file_id = $1 AND scan <> 'infected'`, [id, scan]);
        return;
      }
      case "FileDeleted":
        await tx.unsafe(`UPDATE ${t} SET deleted = true WHERE file_id = $1`, [id]);
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
  scan: FileScan;
  deleted: boolean;
}

export class FilesReadModel {
  readonly #sql: Sql;
  constructor(sql: Sql) {
    this.#sql = sql;
  }

  /** The named files of one organisation (another's are never read). */
  async inOrganisation(orgId: string, fileIds: readonly string[]): Promise<FileRow[]> {
    if (fileIds.length === 0) return [];
    return this.#sql<FileRow[]>`
      SELECT file_id, org_id, owner_id, scan, deleted FROM files
      WHERE org_id = ${orgId} AND file_id = ANY(${[...fileIds]})`;
  }
}
