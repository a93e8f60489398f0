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
  /**
   * The service's own schema: the whole search_path, so every unqualified
   * table (projections, checkpoints, dead letters) lives there and nothing of
   * another service's is visible. Created by the first `migrate` if missing.
   */
  schema?: string;
}

/**
 * Why a schema name is refused, or undefined when it is fine. The name goes
 * into search_path and DDL unquoted, so only plain lowercase identifiers; the
 * system schemas and `public` (where services shared one namespace) are not
 * a service's own.
 */
export function schemaNameProblem(name: string): string | undefined {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
    return "a lowercase identifier: a-z, 0-9 and '_', not starting with a digit, at most 63 characters";
  }
  if (name.startsWith("pg_") || name === "information_schema" || name === "public") {
    return "public, pg_* and information_schema are not a service's own schema";
  }
  return undefined;
}

/** The schema each pool was created for, so migrate() can create it on first use. */
const poolSchemas = new WeakMap<Sql, string>();

export function createPool(options: PoolOptions): Sql {
  const problem = options.schema === undefined ? undefined : schemaNameProblem(options.schema);
  if (problem) throw new Error(`invalid schema name ${JSON.stringify(options.schema)}: ${problem}`);
  const sql = postgres(options.url, {
    max: options.max ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    idle_timeout: 60,
    max_lifetime: 60 * 30,
    onnotice: () => {},
    connection: {
      application_name: options.applicationName ?? "spool",
      statement_timeout: options.statementTimeoutMs ?? 30_000,
      // Only the service's schema: with `public` as a fallback, a table missing from it would
      // silently resolve to a shared one (another service's, or a pre-schema deployment's).
      ...(options.schema ? { search_path: options.schema } : {}),
    },
  });
  if (options.schema) poolSchemas.set(sql, options.schema);
  return sql;
}

/** A stable 64-bit advisory lock key for a name (first 8 bytes of its sha256, as signed bigint). */
export function advisoryKey(name: string): bigint {
  return createHash("sha256").update(name).digest().readBigInt64BE(0);
}

/**
 * Runs DDL once per database, serialised across processes by an advisory
 * lock so two replicas starting together do not race on CREATE TABLE. For a
 * pool with a schema, the schema is created first if missing (every table a
 * service creates goes through a migration before its first use).
 */
export async function migrate(sql: Sql, name: string, statements: readonly string[]): Promise<void> {
  const schema = poolSchemas.get(sql);
  if (schema) await ensureSchema(sql, schema);
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${advisoryKey(`migrate:${name}`).toString()}::bigint)`;
    for (const statement of statements) await tx.unsafe(statement);
  });
}

/**
 * Creates a schema unless it exists. The existence check comes first so a
 * role without CREATE on the database runs fine in a schema an operator made
 * for it; the lock keeps two services or replicas from racing on the name.
 */
async function ensureSchema(sql: Sql, schema: string): Promise<void> {
  const exists = async (db: Executor) =>
    (await db`SELECT 1 FROM pg_namespace WHERE nspname = ${schema}`).length > 0;
  if (await exists(sql)) return;
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${advisoryKey(`schema:${schema}`).toString()}::bigint)`;
    if (!(await exists(tx))) await tx.unsafe(`CREATE SCHEMA ${schema}`);
  });
}
