import { createHash } from "node:crypto";
import postgres from "postgres";

export type Sql = postgres.Sql;
export type TransactionSql = postgres.TransactionSql;
/**
 * What repository functions take: the pool or a transaction. postgres.js types
 * the transaction object narrower than Sql, so code is written against this.
 */
export type Executor = postgres.Sql | postgres.TransactionSql;

export interface PoolOptions {
  url: string;
  /** Pool size; size it deliberately (queries waiting for a slot have no timeout of their own). */
  max?: number;
  applicationName?: string;
  /** Seconds to establish a connection (default 5). */
  connectTimeoutSeconds?: number;
  /** Server-side statement timeout (default 30 s). */
  statementTimeoutMs?: number;
  /** Schema placed first on search_path (a service's own schema). */
  schema?: string;
}

export function createPool(options: PoolOptions): Sql {
  if (options.schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(options.schema)) {
    throw new Error(`invalid schema name ${JSON.stringify(options.schema)}`);
  }
  return postgres(options.url, {
    max: options.max ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    idle_timeout: 60,
    max_lifetime: 60 * 30,
    onnotice: () => {},
    connection: {
      application_name: options.applicationName ?? "spool",
      statement_timeout: options.statementTimeoutMs ?? 30_000,
      ...(options.schema ? { search_path: `${options.schema},public` } : {}),
    },
  });
}

/** A stable 64-bit advisory lock key for a name (first 8 bytes of its sha256, as signed bigint). */
export function advisoryKey(name: string): bigint {
  return createHash("sha256").update(name).digest().readBigInt64BE(0);
}

/**
 * Runs DDL once per database, serialised across processes by an advisory
 * lock so two replicas starting together do not race on CREATE TABLE.
 */
export async function migrate(sql: Sql, name: string, statements: readonly string[]): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${advisoryKey(`migrate:${name}`).toString()}::bigint)`;
    for (const statement of statements) await tx.unsafe(statement);
  });
}
