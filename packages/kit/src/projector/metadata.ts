import { advisoryKey, type Executor, migrate, type Sql } from "../postgres.js";

/**
 * One row per projection: which table version serves reads, how far it has
 * applied the stream, and the progress of a rebuild into the next version.
 * Every write to a projection's tables moves its checkpoint here in the same
 * transaction, and by compare-and-set, which fences off a second writer.
 */
export const PROJECTIONS_TABLE = "spool_projections";

export interface ProjectionRow {
  name: string;
  version: number;
  checkpoint: number;
  state: string;
  lastError: string | undefined;
  rebuildVersion: number | undefined;
  rebuildCheckpoint: number | undefined;
  rebuildStartedAt: Date | undefined;
  updatedAt: Date;
}

interface RawRow {
  name: string;
  version: number;
  checkpoint: string;
  state: string;
  last_error: string | null;
  rebuild_version: number | null;
  rebuild_checkpoint: string | null;
  rebuild_started_at: Date | null;
  updated_at: Date;
}

export async function migrateProjections(sql: Sql): Promise<void> {
  await migrate(sql, PROJECTIONS_TABLE, [
    `CREATE TABLE IF NOT EXISTS ${PROJECTIONS_TABLE} (
      name text PRIMARY KEY,
      version integer NOT NULL,
      checkpoint bigint NOT NULL DEFAULT 0,
      state text NOT NULL DEFAULT 'running',
      last_error text,
      rebuild_version integer,
      rebuild_checkpoint bigint,
      rebuild_started_at timestamptz,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`,
  ]);
}

export async function readProjection(
  db: Executor,
  name: string,
  lock = false,
): Promise<ProjectionRow | undefined> {
  const rows = lock
    ? await db<RawRow[]>`SELECT * FROM spool_projections WHERE name = ${name} FOR UPDATE`
    : await db<RawRow[]>`SELECT * FROM spool_projections WHERE name = ${name}`;
  const r = rows[0];
  if (!r) return undefined;
  return {
    name: r.name,
    version: r.version,
    checkpoint: Number(r.checkpoint),
    state: r.state,
    lastError: r.last_error ?? undefined,
    rebuildVersion: r.rebuild_version ?? undefined,
    rebuildCheckpoint: r.rebuild_checkpoint === null ? undefined : Number(r.rebuild_checkpoint),
    rebuildStartedAt: r.rebuild_started_at ?? undefined,
    updatedAt: r.updated_at,
  };
}

/** Serialises DDL on one projection's tables across processes, for the transaction. */
export async function lockProjectionDdl(db: Executor, name: string): Promise<void> {
  await db`SELECT pg_advisory_xact_lock(${advisoryKey(`spool:projection-ddl:${name}`).toString()}::bigint)`;
}

/** Moves the live checkpoint by compare-and-set; false when it was not `from` (another writer). */
export async function moveCheckpoint(
  db: Executor,
  name: string,
  version: number,
  from: number,
  to: number,
): Promise<boolean> {
  const rows = await db`
    UPDATE spool_projections SET checkpoint = ${to}, updated_at = now()
    WHERE name = ${name} AND version = ${version} AND checkpoint = ${from}
    RETURNING 1`;
  return rows.length === 1;
}

/** Moves a rebuild's checkpoint by compare-and-set. */
export async function moveRebuildCheckpoint(
  db: Executor,
  name: string,
  rebuildVersion: number,
  from: number,
  to: number,
): Promise<boolean> {
  const rows = await db`
    UPDATE spool_projections SET rebuild_checkpoint = ${to}, updated_at = now()
    WHERE name = ${name} AND rebuild_version = ${rebuildVersion} AND rebuild_checkpoint = ${from}
    RETURNING 1`;
  return rows.length === 1;
}

export async function recordState(
  db: Executor,
  name: string,
  state: string,
  lastError: string | undefined,
): Promise<void> {
  await db`
    UPDATE spool_projections SET state = ${state}, last_error = ${lastError?.slice(0, 2000) ?? null}, updated_at = now()
    WHERE name = ${name}`;
}
