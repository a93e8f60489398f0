import type { DeadLetterStore } from "../dead-letters.js";
import type { EventMessage, RecordedEvent } from "../events.js";
import type { Sql, TransactionSql } from "../postgres.js";
import { type ApplyContext, applyEvents, type ProjectionDefinition, tableNames } from "./definition.js";
import { FencedError, HandlerFailure } from "./errors.js";
import type { Sink } from "./lane.js";
import { moveCheckpoint, moveRebuildCheckpoint } from "./metadata.js";

/** Dead letters of a rebuild are kept apart from the live ones until the swap adopts them. */
export function rebuildConsumer(projection: string, version: number): string {
  return `${projection}@v${version}`;
}

/**
 * One version of a projection's tables as a lane's sink: the handler's writes
 * and the checkpoint move share one transaction. The checkpoint row is written
 * last, so the row lock every writer of this projection needs is held only
 * for the commit.
 */
export class PgSink<T extends string> implements Sink {
  readonly version: number;
  readonly rebuild: boolean;
  readonly #sql: Sql;
  readonly #def: ProjectionDefinition<T>;
  readonly #deadLetters: DeadLetterStore;
  readonly #stream: string;
  readonly #context: ApplyContext<T>;

  constructor(options: {
    sql: Sql;
    definition: ProjectionDefinition<T>;
    deadLetters: DeadLetterStore;
    stream: string;
    version: number;
    rebuild: boolean;
  }) {
    this.#sql = options.sql;
    this.#def = options.definition;
    this.#deadLetters = options.deadLetters;
    this.#stream = options.stream;
    this.version = options.version;
    this.rebuild = options.rebuild;
    this.#context = {
      tables: tableNames(options.definition.tables, options.version),
      version: options.version,
      rebuild: options.rebuild,
    };
  }

  async commit(events: readonly RecordedEvent[], from: number, last: number): Promise<void> {
    await this.#sql.begin(async (tx) => {
      try {
        await applyEvents(this.#def, tx, events, this.#context);
      } catch (e) {
        throw new HandlerFailure(e);
      }
      await this.#move(tx, from, last);
    });
  }

  async deadLetter(message: EventMessage, from: number, attempts: number, error: string): Promise<void> {
    const consumer = this.rebuild ? rebuildConsumer(this.#def.name, this.version) : this.#def.name;
    await this.#sql.begin(async (tx) => {
      await this.#deadLetters.add({ consumer, stream: this.#stream, message, attempts, error }, tx);
      await this.#move(tx, from, message.seq);
    });
  }

  async #move(tx: TransactionSql, from: number, to: number): Promise<void> {
    const moved = this.rebuild
      ? await moveRebuildCheckpoint(tx, this.#def.name, this.version, from, to)
      : await moveCheckpoint(tx, this.#def.name, this.version, from, to);
    if (!moved)
      throw new FencedError(this.#def.name, this.rebuild ? "the rebuild checkpoint" : "the checkpoint");
  }
}

/**
 * Points each logical name (a view) at a version's tables. CREATE OR REPLACE
 * keeps the view's identity, so queries and prepared statements of readers
 * carry on; when the new version's columns differ, the view is dropped and
 * created again, still inside the caller's transaction, so readers see the
 * switch atomically either way.
 */
export async function pointViews(
  tx: TransactionSql,
  tables: readonly string[],
  names: Readonly<Record<string, string>>,
): Promise<void> {
  for (const t of tables) {
    const physical = names[t];
    if (!physical) throw new Error(`no physical table for ${t}`);
    try {
      await tx.savepoint((sp) => sp.unsafe(`CREATE OR REPLACE VIEW ${t} AS SELECT * FROM ${physical}`));
    } catch {
      await tx.unsafe(`DROP VIEW IF EXISTS ${t}`);
      await tx.unsafe(`CREATE VIEW ${t} AS SELECT * FROM ${physical}`);
    }
  }
}

export async function dropTables(tx: TransactionSql, names: Readonly<Record<string, string>>): Promise<void> {
  for (const physical of Object.values(names)) await tx.unsafe(`DROP TABLE IF EXISTS ${physical}`);
}

/**
 * At a rebuild's swap: the old version's pending entries are settled by the
 * rebuild, which applied each of them or dead-lettered it again under its
 * own name; the rebuild's entries become the projection's.
 */
export async function adoptRebuildDeadLetters(
  tx: TransactionSql,
  projection: string,
  target: number,
): Promise<void> {
  const fromRebuild = rebuildConsumer(projection, target);
  await tx`
    DELETE FROM spool_dead_letters d
    WHERE d.consumer = ${projection} AND EXISTS (
      SELECT 1 FROM spool_dead_letters r
      WHERE r.consumer = ${fromRebuild} AND r.stream = d.stream AND r.stream_sequence = d.stream_sequence)`;
  await tx`
    UPDATE spool_dead_letters
    SET replayed_at = now(), error = left('superseded by rebuild to v' || ${target}::text || ': ' || error, 2000)
    WHERE consumer = ${projection} AND replayed_at IS NULL`;
  await tx`UPDATE spool_dead_letters SET consumer = ${projection} WHERE consumer = ${fromRebuild}`;
}
