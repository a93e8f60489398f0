// Sources and snapshots for ListSources and for the blob collector (which
// snapshots are materialised), fed from files.source.* in FILES.
import { defineProjection, FilesStreams, InvalidArgumentError, type Sql, unreachable } from "@spool/kit";
import { SourceEvents, SourceSubjects } from "./domain/source.js";

export const sourcesProjection = defineProjection({
  name: "sources",
  stream: FilesStreams.FILES.name,
  filterSubject: SourceSubjects.source.all,
  tables: ["sources", "source_snapshots"],
  migrate: async (tx, t) => {
    await tx.unsafe(`CREATE TABLE ${t.sources} (
      source_id text PRIMARY KEY,
      org_id text NOT NULL,
      kind integer NOT NULL,
      display_name text NOT NULL,
      created_at_ms bigint NOT NULL,
      deleted boolean NOT NULL DEFAULT false
    )`);
    await tx.unsafe(
      `CREATE INDEX ON ${t.sources} (org_id, created_at_ms DESC, source_id DESC) WHERE NOT deleted`,
    );
    await tx.unsafe(`CREATE TABLE ${t.source_snapshots} (
      source_id text NOT NULL,
      number integer NOT NULL,
      ref text NOT NULL,
      materialised boolean NOT NULL,
      PRIMARY KEY (source_id, number)
    )`);
    await tx.unsafe(`CREATE INDEX ON ${t.source_snapshots} (ref)`);
  },
  events: SourceEvents,
  apply: async (tx, event, { tables }) => {
    const id = SourceSubjects.source.idOf(event.meta.subject);
    switch (event.type) {
      case "SourceRegistered": {
        const e = event.data;
        await tx.unsafe(
          `INSERT INTO ${tables.sources} (source_id, org_id, kind, display_name, created_at_ms)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
          [id, e.orgId, e.kind, e.displayName, String(e.registeredAtMs)],
        );
        return;
      }
      case "SnapshotTaken":
        await tx.unsafe(
          `INSERT INTO ${tables.source_snapshots} (source_id, number, ref, materialised)
           VALUES ($1, $2, $3, true) ON CONFLICT DO NOTHING`,
          [id, event.data.number, event.data.ref],
        );
        return;
      case "SnapshotPruned":
        await tx.unsafe(
          `UPDATE ${tables.source_snapshots} SET materialised = false WHERE source_id = $1 AND number = $2`,
          [id, event.data.number],
        );
        return;
      case "SourceDeleted":
        await tx.unsafe(`UPDATE ${tables.sources} SET deleted = true WHERE source_id = $1`, [id]);
        return;
      case "SnapshotPinned":
      case "SnapshotUnpinned":
      case "unknown":
        return;
      default:
        unreachable(event);
    }
  },
});

export interface SourceRow {
  source_id: string;
  created_at_ms: string;
}

export function encodeSourcePage(row: SourceRow): string {
  return Buffer.from(JSON.stringify([Number(row.created_at_ms), row.source_id])).toString("base64url");
}

function decodeSourcePage(token: string): { createdAtMs: number; id: string } | undefined {
  if (!token) return undefined;
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString()) as unknown;
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && typeof v[1] === "string")
      return { createdAtMs: v[0] as number, id: v[1] };
  } catch {
    // fall through
  }
  throw new InvalidArgumentError("invalid page token", [
    { field: "page_token", description: "is not a token from this API" },
  ]);
}

export class SourcesReadModel {
  constructor(private readonly sql: Sql) {}

  /** The organisation's live sources, newest first, keyset-paginated; `kind` 0 = any. */
  async list(q: { orgId: string; kind: number; pageToken: string; limit: number }) {
    const after = decodeSourcePage(q.pageToken);
    const rows = await this.sql<SourceRow[]>`
      SELECT source_id, created_at_ms::text AS created_at_ms FROM sources
      WHERE org_id = ${q.orgId} AND NOT deleted
        AND (${q.kind} = 0 OR kind = ${q.kind})
        AND (${after ? 1 : 0} = 0 OR (created_at_ms, source_id) < (${after?.createdAtMs ?? 0}, ${after?.id ?? ""}))
      ORDER BY created_at_ms DESC, source_id DESC
      LIMIT ${q.limit + 1}`;
    return { rows: rows.slice(0, q.limit), more: rows.length > q.limit };
  }

  /**
   * True while a source still needs the blob: it is a snapshot's manifest
   * (kept for good, for diffs), or a file of a materialised snapshot (the
   * caller checks the manifests of `materialisedRefs`).
   */
  async isManifest(sha256: string): Promise<boolean> {
    const [row] = await this.sql`SELECT 1 FROM source_snapshots WHERE ref = ${sha256} LIMIT 1`;
    return row !== undefined;
  }

  /** Refs of every materialised snapshot (distinct). */
  async materialisedRefs(): Promise<string[]> {
    const rows = await this.sql<
      { ref: string }[]
    >`SELECT DISTINCT ref FROM source_snapshots WHERE materialised`;
    return rows.map((r) => r.ref);
  }
}
