import { setTimeout as sleep } from "node:timers/promises";
import type { DeadLetter } from "../dead-letters.js";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import type { ConsumerStatus } from "../managed.js";
import type { TransactionSql } from "../postgres.js";
import { type Position, ProjectorBase, type ProjectorBaseOptions, type WriterSession } from "./base.js";
import { applyEvents, type ProjectionDefinition, tableNames, validateDefinition } from "./definition.js";
import { errorMessage, FencedError, HaltedError, HandlerFailure, isTransient } from "./errors.js";
import type { Lane } from "./lane.js";
import {
  lockProjectionDdl,
  migrateProjections,
  type ProjectionRow,
  readProjection,
  recordState,
} from "./metadata.js";
import { dropTables, PgSink, pointViews, rebuildConsumer } from "./pg-sink.js";
import type { StreamReader } from "./reader.js";

export type ProjectorOptions = ProjectorBaseOptions;

interface RebuildRun {
  session: WriterSession;
  target: number;
  abort: AbortController;
  reader: StreamReader;
  lane: Lane;
  done: Promise<void>;
}

/**
 * Feeds a PostgreSQL read model from a stream, exactly once in effect: each
 * batch's rows and the checkpoint (last applied stream sequence) commit in
 * one transaction, and messages at or below the checkpoint are skipped. The
 * checkpoint moves by compare-and-set, so even two processes that both
 * believe they write (one whose lock went with its connection) cannot apply
 * a message twice.
 *
 * Tables are versioned and read through views. rebuild() fills version N+1
 * from sequence 1 while version N keeps applying new events and serving
 * reads; once it has caught up, it finishes the tail between two live batches
 * and repoints the views, drops version N and moves the version row, all in
 * one transaction.
 */
export class Projector<T extends string = string> extends ProjectorBase {
  readonly definition: ProjectionDefinition<T>;
  #rebuild: RebuildRun | undefined;

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
   * Requests a rebuild into the next table version and returns that version.
   * Any replica may call it: the request is a row, and the writer picks it up
   * (at once when it is this process). A rebuild already under way is
   * refused with FAILED_PRECONDITION (admin.proto's contract): the check and
   * the request are one transaction under the projection's DDL lock, so of
   * two concurrent requests exactly one starts a rebuild. A writer change
   * mid-rebuild resumes from its checkpoint.
   */
  async rebuild(): Promise<{ targetVersion: number }> {
    await this.init();
    const targetVersion = await this.options.sql.begin(async (tx) => {
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
    this.options.logger.info({ projection: this.name, targetVersion }, "projection rebuild requested");
    const w = this.writer;
    if (w) await this.#pickUpRebuild(w);
    return { targetVersion };
  }

  /** Abandons a rebuild under way: its tables and dead letters are dropped; the live version is untouched. */
  async cancelRebuild(reason = "rebuild cancelled"): Promise<void> {
    const run = this.#rebuild;
    if (run) {
      run.abort.abort();
      await run.done;
    }
    const row = await this.#row();
    if (row.rebuildVersion !== undefined) await this.#abandonRebuild(row.rebuildVersion, reason);
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

  protected override async onBecameWriter(w: WriterSession): Promise<void> {
    await this.#pickUpRebuild(w);
  }

  protected override async onWriterTick(w: WriterSession): Promise<void> {
    await this.#pickUpRebuild(w);
  }

  protected override async onWriterEnded(w: WriterSession): Promise<void> {
    const run = this.#rebuild;
    if (run?.session === w) await run.done;
  }

  protected override readers(w: WriterSession): StreamReader[] {
    const run = this.#rebuild;
    return run?.session === w ? [w.reader, run.reader] : [w.reader];
  }

  // --- rebuild ---------------------------------------------------------------

  /** Starts (or resumes, after a restart or takeover) the rebuild the projection row asks for. */
  async #pickUpRebuild(w: WriterSession): Promise<void> {
    if (this.#rebuild || this.writer !== w) return;
    const row = await this.#row();
    const target = row.rebuildVersion;
    if (target === undefined || this.#rebuild || this.writer !== w || w.abort.signal.aborted) return;
    const from = row.rebuildCheckpoint ?? 0;
    const abort = new AbortController();
    w.abort.signal.addEventListener("abort", () => abort.abort(), { once: true });
    const run: RebuildRun = {
      session: w,
      target,
      abort,
      reader: this.newReader(from + 1),
      lane: this.newLane(target, true, from, abort.signal),
      done: Promise.resolve(),
    };
    this.#rebuild = run;
    this.options.logger.info(
      { projection: this.name, targetVersion: target, from },
      "projection rebuild running",
    );
    run.done = this.#runRebuild(run).finally(async () => {
      await run.reader.close();
      if (this.#rebuild === run) this.#rebuild = undefined;
    });
  }

  async #runRebuild(run: RebuildRun): Promise<void> {
    const { signal } = run.abort;
    const live = run.session.lane;
    const started = Date.now();
    const from = run.lane.checkpoint;
    try {
      // Catch up without holding up the live lane.
      while (!signal.aborted && run.lane.checkpoint + this.batchSize < live.checkpoint) {
        await run.lane.apply(await run.reader.take(this.batchSize, signal));
      }
      // The tail and the swap run between two live batches, so the live
      // checkpoint stands still until the new version takes over.
      const swapped = await this.mutex.run(async () => {
        while (!signal.aborted && run.lane.checkpoint < live.checkpoint) {
          await run.lane.apply(await run.reader.take(this.batchSize, signal));
        }
        if (signal.aborted || this.writer !== run.session) return false;
        await this.#swap(run);
        return true;
      });
      if (swapped) {
        const seconds = Math.max((Date.now() - started) / 1000, 0.001);
        this.options.logger.info(
          {
            projection: this.name,
            version: run.target,
            checkpoint: run.lane.checkpoint,
            messagesPerSecond: Math.round((run.lane.checkpoint - from) / seconds),
          },
          "projection rebuilt; now serving the new version",
        );
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof HaltedError) {
        this.lastError = `rebuild to v${run.target} abandoned: ${e.message}`;
        this.options.logger.error({ projection: this.name, err: e }, "strict projection's rebuild abandoned");
        await this.#abandonRebuild(run.target, this.lastError).catch(() => {});
        return;
      }
      this.lastError = `rebuild to v${run.target}: ${errorMessage(e)}`;
      this.options.logger.error(
        { projection: this.name, err: e },
        "projection rebuild failed; it resumes shortly",
      );
      if (e instanceof FencedError) void this.demote(run.session, e.message).catch(() => {});
    }
  }

  /**
   * The switch to the rebuilt version, atomic for readers: views repointed,
   * old tables dropped, the old version's dead letters superseded by the
   * rebuild's own, and the version row moved, in one transaction. It runs
   * with the live lane paused, so the live checkpoint it checks is final.
   */
  async #swap(run: RebuildRun): Promise<void> {
    const live = run.session.lane;
    const oldVersion = live.sink.version;
    const liveCheckpoint = live.checkpoint;
    const checkpoint = run.lane.checkpoint;
    const { target } = run;
    await this.options.sql.begin(async (tx) => {
      // The lock order every writer of this projection follows: dead letters,
      // tables, the projection row last.
      await this.#adoptDeadLetters(tx, target);
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
    // The live lane skips what the rebuild already applied past the old checkpoint.
    live.retarget(this.newSink(target, false), checkpoint);
  }

  /**
   * The old version's pending entries are settled by the rebuild, which
   * applied each of them or dead-lettered it again under its own name; the
   * rebuild's entries become the projection's.
   */
  async #adoptDeadLetters(tx: TransactionSql, target: number): Promise<void> {
    const fromRebuild = rebuildConsumer(this.name, target);
    await tx`
      DELETE FROM spool_dead_letters d
      WHERE d.consumer = ${this.name} AND EXISTS (
        SELECT 1 FROM spool_dead_letters r
        WHERE r.consumer = ${fromRebuild} AND r.stream = d.stream AND r.stream_sequence = d.stream_sequence)`;
    await tx`
      UPDATE spool_dead_letters
      SET replayed_at = now(), error = left('superseded by rebuild to v' || ${target}::text || ': ' || error, 2000)
      WHERE consumer = ${this.name} AND replayed_at IS NULL`;
    await tx`UPDATE spool_dead_letters SET consumer = ${this.name} WHERE consumer = ${fromRebuild}`;
  }

  async #abandonRebuild(target: number, reason: string): Promise<void> {
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
