import postgres from "postgres";
import type { Sql } from "../postgres.js";

/**
 * One active writer per projection: a session-level advisory lock. The
 * database releases it when the session ends, so a crashed holder (or one
 * cut off from the database) frees it for a standby without any lease to
 * expire.
 *
 * Advisory locks are database-wide while projections live in a schema, so the
 * key is derived from the schema and the name (two services sharing a
 * database may both have a projection called "users").
 *
 * The lock lives on a connection of its own, not on one taken from the pool
 * with sql.reserve(): postgres.js 3.4 keeps using a reserved connection after
 * its socket closed (the query never settles and an uncaught TypeError
 * escapes), hands the dead connection back to the pool on release(), and
 * ends it after the pool's max_lifetime, which would drop the lock silently.
 */
export class WriterLock {
  readonly #pool: Sql;
  readonly #name: string;
  #conn: Sql | undefined;
  #key: string | undefined;

  constructor(pool: Sql, name: string) {
    this.#pool = pool;
    this.#name = name;
  }

  get held(): boolean {
    return this.#key !== undefined;
  }

  /** Takes the lock if free; false when another session holds it. */
  async tryAcquire(): Promise<boolean> {
    if (this.#key !== undefined) return true;
    this.#conn ??= dedicatedConnection(this.#pool);
    const [row] = await this.#conn<{ locked: boolean; key: string }[]>`
      SELECT pg_try_advisory_lock(k) AS locked, k::text AS key
      FROM (SELECT hashtextextended(current_schema() || ':' || ${this.#name}, 0) AS k) AS lock_key`;
    if (!row?.locked) return false;
    this.#key = row.key;
    return true;
  }

  /**
   * False when the lock is gone with its session. (The client reconnects on
   * its own, so the question is whether the session now behind it holds it.)
   */
  async check(): Promise<boolean> {
    if (this.#key === undefined || !this.#conn) return false;
    try {
      const [row] = await this.#conn<{ held: boolean }[]>`
        SELECT EXISTS (
          SELECT 1 FROM pg_locks
          WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid() AND granted
            AND ((classid::bigint << 32) | objid::bigint) = ${this.#key}::bigint) AS held`;
      return row?.held === true;
    } catch {
      return false;
    }
  }

  /** Gives the lock up; the connection stays open for the next attempt. */
  async release(): Promise<void> {
    const key = this.#key;
    this.#key = undefined;
    if (key === undefined || !this.#conn) return;
    try {
      await this.#conn`SELECT pg_advisory_unlock(${key}::bigint)`;
    } catch {
      // The session is gone, and the lock with it; close() discards the connection.
      await this.close();
    }
  }

  /** Releases the lock and closes its connection. */
  async close(): Promise<void> {
    const conn = this.#conn;
    this.#conn = undefined;
    this.#key = undefined;
    await conn?.end({ timeout: 1 });
  }
}

/**
 * A single-connection client with the pool's settings (server, credentials,
 * search_path, timeouts), never closed for idleness or age.
 */
function dedicatedConnection(pool: Sql): Sql {
  // postgres() takes an already parsed options object (one with `shared`) as it is.
  const options = {
    ...pool.options,
    max: 1,
    idle_timeout: 0,
    max_lifetime: 0,
    shared: { retries: 0, typeArrayMap: {} },
    parameters: {},
  };
  return postgres(options as unknown as postgres.Options<Record<string, postgres.PostgresType>>);
}
