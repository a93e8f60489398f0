import { setTimeout as sleep } from "node:timers/promises";
import type { DeadLetter } from "../dead-letters.js";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import type { ConsumerStatus } from "../managed.js";
import type { TransactionSql } from "../postgres.js";
import { type Position, ProjectorBase, type ProjectorBaseOptions, type RebuildRequest } from "./base.js";
import { applyEvents, type ProjectionDefinition, tableNames, validateDefinition } from "./definition.js";
import { errorMessage, FencedError, HandlerFailure, isTransient } from "./errors.js";
import {
  lockProjectionDdl,
  migrateProjections,
  type ProjectionRow,
  readProjection,
  recordState,
} from "./metadata.js";
import { adoptRebuildDeadLetters, dropTables, PgSink, pointViews, rebuildConsumer } from "./pg-sink.js";

export type ProjectorOptions = ProjectorBaseOptions;

/**
 * Feeds a PostgreSQL read model from a stream, exactly once in effect: each
 * batch's rows and the checkpoint (last applied stream sequence) commit in
 * one transaction, and messages at or below the checkpoint are skipped. The
 * checkpoint moves by compare-and-set, so even two processes that both
 * believe they write (one whose lock went with its connection) cannot apply
 * a message twice.
 *
 * Tables are versioned and read through views. A rebuild (ProjectorBase)
 * fills version N+1's tables; its swap repoints the views, drops version N
 * and moves the version row, all in one transaction.
 */
export class Projector<T extends string = string> extends ProjectorBase {
  readonly definition: ProjectionDefinition<T>;

  constructor(definition: ProjectionDefinition<T>, options: ProjectorOptions) {
    validateDefinition(definition);
    super(definition, options, `spool:projection:${definition.name}`);
    this.definition = definition;
  }

  /** The logical (view) names readers query. */
  get tables(): readonly T[] {
    return this.definition.tables;
  }

  async status(): Promise<ConsumerStatus> {
    const [row, head, deadLetters] = await Promise.all([this.#row(), this.head(), this.pendingDeadLetters()]);
    const checkpoint = this.writer?.lane.checkpoint ?? row.checkpoint;
    const rebuilding = row.rebuildVersion !== undefined;
    return {
      name: this.name,
      stream: this.streamName,
      state: this.state === "running" && rebuilding ? "rebuilding" : this.state,
      checkpoint,
      head,
      lag: Math.max(0, head - checkpoint),
      version: row.version,
      strict: this.definition.strict ?? false,
      deadLetters,
      lastError: this.lastError ?? row.lastError,
      rebuild:
        row.rebuildVersion !== undefined
          ? {
              targetVersion: row.rebuildVersion,
              applied: row.rebuildCheckpoint ?? 0,
              head,
              startedAt: row.rebuildStartedAt ?? row.updatedAt,
            }
          : undefined,
    };
  }

  /**
   * Applies a dead-lettered message once, to the table version it is missing
   * from, in a transaction that also marks the entry replayed: a second (or
   * concurrent) replay fails with FAILED_PRECONDITION and changes nothing. A
   * handler that still fails leaves the entry pending, with the new error.
   */
  async replay(entry: DeadLetter): Promise<void> {
    const entryVersion = this.#entryVersion(entry);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.options.sql.begin((tx) => this.#replayIn(tx, entry, entryVersion));
        return;
      } catch (e) {
        if (isTransient(e) && attempt < 5) {
          await sleep(100 * attempt);
          continue;
        }
        if (e instanceof HandlerFailure) {
          await this.options.deadLetters.recordReplayFailure(entry.id, errorMessage(e.cause));
          throw e.cause;
        }
        throw e;
      }
    }
  }

  // --- ProjectorBase ----------------------------------------------------------

  /** Creates the metadata tables and version 1 of the projection's tables, once per database. */
  protected async setUp(): Promise<void> {
    await migrateProjections(this.options.sql);
    await this.options.deadLetters.migrate();
    await this.options.sql.begin(async (tx) => {
      await lockProjectionDdl(tx, this.name);
      if (await readProjection(tx, this.name)) return;
      const names = tableNames(this.definition.tables, 1);
      await this.definition.migrate(tx, names);
      await pointViews(tx, this.definition.tables, names);
      await tx`INSERT INTO spool_projections (name, version, checkpoint) VALUES (${this.name}, 1, 0)`;
    });
  }

  protected async readPosition(): Promise<Position> {
    const row = await this.#row();
    return { version: row.version, checkpoint: row.checkpoint };
  }

  protected newSink(version: number, rebuild: boolean): PgSink<T> {
    return new PgSink({
      sql: this.options.sql,
      definition: this.definition,
      deadLetters: this.options.deadLetters,
      stream: this.streamName,
      version,
      rebuild,
    });
  }

  protected recordState(state: "running" | "halted", error: string | undefined): Promise<void> {
    return recordState(this.options.sql, this.name, state, error);
  }

  /**
   * The request is a row, checked and written in one transaction under the
   * projection's DDL lock, with the target version's tables created empty.
   */
  protected async requestRebuild(): Promise<number> {
    return this.options.sql.begin(async (tx) => {
      await lockProjectionDdl(tx, this.name);
      const row = await readProjection(tx, this.name, true);
      if (!row) throw new FailedPreconditionError(`projection ${this.name} is not set up`);
      if (row.rebuildVersion !== undefined) {
        throw new FailedPreconditionError(
          `projection ${this.name} is already rebuilding to version ${row.rebuildVersion}; ` +
            "wait for it to finish (GetProjection shows its progress)",
        );
      }
      const target = row.version + 1;
      const names = tableNames(this.definition.tables, target);
      // Leftovers of an abandoned rebuild to the same version.
      await dropTables(tx, names);
      await tx`DELETE FROM spool_dead_letters WHERE consumer = ${rebuildConsumer(this.name, target)}`;
      await this.definition.migrate(tx, names);
      await tx`
        UPDATE spool_projections
        SET rebuild_version = ${target}, rebuild_checkpoint = 0, rebuild_started_at = now(), updated_at = now()
        WHERE name = ${this.name}`;
      return target;
    });
  }

  protected async rebuildRequest(): Promise<RebuildRequest | undefined> {
    const row = await this.#row();
    if (row.rebuildVersion === undefined) return undefined;
    return { target: row.rebuildVersion, checkpoint: row.rebuildCheckpoint ?? 0 };
  }

  /**
   * The switch to the rebuilt version, atomic for readers: views repointed,
   * old tables dropped, the old version's dead letters superseded by the
   * rebuild's own, and the version row moved, in one transaction. It runs
   * with the live lane paused, so the live checkpoint it checks is final.
   */
  protected async swapVersion(
    target: number,
    checkpoint: number,
    live: { version: number; checkpoint: number },
  ): Promise<void> {
    const oldVersion = live.version;
    const liveCheckpoint = live.checkpoint;
    await this.options.sql.begin(async (tx) => {
      // The lock order every writer of this projection follows: dead letters,
      // tables, the projection row last.
      await adoptRebuildDeadLetters(tx, this.name, target);
      await pointViews(tx, this.definition.tables, tableNames(this.definition.tables, target));
      await dropTables(tx, tableNames(this.definition.tables, oldVersion));
      const rows = await tx`
        UPDATE spool_projections
        SET version = ${target}, checkpoint = ${checkpoint}, rebuild_version = NULL,
            rebuild_checkpoint = NULL, rebuild_started_at = NULL, updated_at = now()
        WHERE name = ${this.name} AND version = ${oldVersion} AND checkpoint = ${liveCheckpoint}
          AND rebuild_version = ${target} AND rebuild_checkpoint = ${checkpoint}
        RETURNING 1`;
      if (rows.length !== 1) throw new FencedError(this.name, "the version row");
    });
  }

  protected async abandonRebuild(target: number, reason: string): Promise<void> {
    await this.options.sql.begin(async (tx) => {
      await lockProjectionDdl(tx, this.name);
      const row = await readProjection(tx, this.name, true);
      if (row?.rebuildVersion !== target) return;
      await dropTables(tx, tableNames(this.definition.tables, target));
      await tx`DELETE FROM spool_dead_letters WHERE consumer = ${rebuildConsumer(this.name, target)}`;
      await tx`
        UPDATE spool_projections
        SET rebuild_version = NULL, rebuild_checkpoint = NULL, rebuild_started_at = NULL,
            last_error = ${reason.slice(0, 2000)}, updated_at = now()
        WHERE name = ${this.name}`;
    });
  }

  // --- replay ------------------------------------------------------------------

  /** The table version an entry is missing from: "live", or the rebuild version in its consumer name. */
  #entryVersion(entry: DeadLetter): "live" | number {
    if (entry.stream !== this.streamName) {
      throw new InvalidArgumentError(
        `dead letter ${entry.id} is from stream ${entry.stream}, not ${this.streamName}`,
      );
    }
    if (entry.consumer === this.name) return "live";
    const m = /^(.+)@v(\d+)$/.exec(entry.consumer);
    if (m && m[1] === this.name) return Number(m[2]);
    throw new InvalidArgumentError(`dead letter ${entry.id} belongs to ${entry.consumer}, not ${this.name}`);
  }

  async #replayIn(tx: TransactionSql, entry: DeadLetter, entryVersion: "live" | number): Promise<void> {
    // The entry's row first: a concurrent or repeated replay stops here.
    if (!(await this.options.deadLetters.markReplayed(entry.id, tx))) {
      throw new FailedPreconditionError(`dead letter ${entry.id} was already replayed`);
    }
    const row = await readProjection(tx, this.name);
    if (!row) throw new FailedPreconditionError(`projection ${this.name} is not set up`);
    const version = entryVersion === "live" ? row.version : entryVersion;
    if (version !== row.version && version !== row.rebuildVersion) {
      throw new FailedPreconditionError(
        `dead letter ${entry.id} is for table version ${version}, which is gone`,
      );
    }
    try {
      const events = this.options.store.decode(entry.stream, entry.message);
      await applyEvents(this.definition, tx, events, {
        tables: tableNames(this.definition.tables, version),
        version,
        rebuild: version === row.rebuildVersion,
      });
    } catch (e) {
      throw new HandlerFailure(e);
    }
    // Last, like every writer: a swap that retired this version meanwhile fails the replay.
    const still = await tx`
      UPDATE spool_projections SET updated_at = now()
      WHERE name = ${this.name} AND (version = ${version} OR rebuild_version = ${version})
      RETURNING 1`;
    if (still.length !== 1) {
      throw new FailedPreconditionError(`table version ${version} was swapped out during the replay; retry`);
    }
    this.options.logger.info(
      { projection: this.name, id: entry.id, seq: entry.streamSequence, version },
      "dead letter replayed",
    );
  }

  async #row(): Promise<ProjectionRow> {
    const row = await readProjection(this.options.sql, this.name);
    if (!row) throw new FailedPreconditionError(`projection ${this.name} is not set up; call start() first`);
    return row;
  }
}
