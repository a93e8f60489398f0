import { setTimeout as sleep } from "node:timers/promises";
import type { DeadLetter, DeadLetterStore } from "../dead-letters.js";
import type { EventStore } from "../event-store.js";
import type { ConsumerState, ConsumerStatus, ManagedConsumer } from "../managed.js";
import type { Sql } from "../postgres.js";
import { errorMessage, FencedError, HaltedError } from "./errors.js";
import { Lane, type Sink } from "./lane.js";
import { StreamReader } from "./reader.js";
import { CheckpointWaiters, Mutex, readHead } from "./shared.js";
import type { ProjectionSource, ProjectorTuning } from "./types.js";
import { WriterLock } from "./writer-lock.js";

export interface ProjectorBaseOptions extends ProjectorTuning {
  store: EventStore;
  /**
   * PostgreSQL pool, for dead letters and (PostgreSQL projector) the read
   * model. The writer lock takes one more connection with the same settings.
   */
  sql: Sql;
  deadLetters: DeadLetterStore;
}

/** What this process holds while it is the projection's writer. */
export interface WriterSession {
  abort: AbortController;
  reader: StreamReader;
  lane: Lane;
  loop: Promise<void>;
}

/** Where the read model stands: the version serving reads and its checkpoint. */
export interface Position {
  version: number;
  checkpoint: number;
}

/** A rebuild the store asks for: the version being filled and how far it got. */
export interface RebuildRequest {
  target: number;
  checkpoint: number;
}

/** A rebuild this process runs while it is the writer. */
interface RebuildRun {
  session: WriterSession;
  target: number;
  abort: AbortController;
  reader: StreamReader;
  lane: Lane;
  done: Promise<void>;
}

/**
 * Writer election, the live lane and rebuilds, shared by the PostgreSQL and
 * Redis projectors. Every replica runs one; a session advisory lock elects
 * the single writer, the others stand by and take over when its session
 * ends. Only the writer reads the stream: from its checkpoint, through an
 * ordered consumer, applying whole batches through the read model's sink.
 *
 * The read model is versioned. rebuild() fills version N+1 from sequence 1
 * while version N keeps applying new events and serving reads; once it has
 * caught up, it finishes the tail between two live batches and switches
 * readers to N+1 in one atomic step of the store (swapVersion).
 */
export abstract class ProjectorBase implements ManagedConsumer {
  readonly name: string;
  protected readonly options: ProjectorBaseOptions;
  protected readonly source: ProjectionSource;
  protected readonly streamName: string;
  protected readonly batchSize: number;
  /** Live batches and a rebuild's final swap take turns through it. */
  protected readonly mutex = new Mutex();
  protected state: ConsumerState = "stopped";
  protected lastError: string | undefined;
  protected writer: WriterSession | undefined;
  #rebuild: RebuildRun | undefined;
  readonly #filter: string | undefined;
  readonly #lock: WriterLock;
  readonly #waiters: CheckpointWaiters;
  #initialized: Promise<void> | undefined;
  #supervisor: Promise<void> | undefined;
  #stopping: AbortController | undefined;

  constructor(source: ProjectionSource, options: ProjectorBaseOptions, lockName: string) {
    this.name = source.name;
    this.source = source;
    this.options = options;
    this.streamName = options.store.namespace.stream(source.stream);
    this.#filter = source.filterSubject ? options.store.namespace.subject(source.filterSubject) : undefined;
    this.batchSize = options.batchSize ?? 500;
    if (this.batchSize < 1) throw new Error("batchSize must be at least 1");
    if ((options.maxAttempts ?? 3) < 1) throw new Error("maxAttempts must be at least 1");
    this.#lock = new WriterLock(options.sql, lockName);
    this.#waiters = new CheckpointWaiters({
      projection: source.name,
      checkpoint: () => this.checkpoint(),
      head: () => this.head(),
    });
  }

  // --- what a read model provides -------------------------------------------

  /** Creates whatever the read model needs before the first start (idempotent). */
  protected abstract setUp(): Promise<void>;
  /** The stored position, read when this process becomes the writer. */
  protected abstract readPosition(): Promise<Position>;
  protected abstract newSink(version: number, rebuild: boolean): Sink;
  /** Persists the projection's state for other replicas and operators (best effort). */
  protected abstract recordState(state: "running" | "halted", error: string | undefined): Promise<void>;
  abstract status(): Promise<ConsumerStatus>;
  abstract replay(entry: DeadLetter): Promise<void>;
  /**
   * Records a rebuild request into a new version (prepared, empty) and
   * returns that version; FAILED_PRECONDITION when one is already under way.
   * Check and request are one atomic step, so of two concurrent requests
   * exactly one starts a rebuild.
   */
  protected abstract requestRebuild(): Promise<number>;
  /** The rebuild the store asks for, if any. */
  protected abstract rebuildRequest(): Promise<RebuildRequest | undefined>;
  /**
   * Switches readers to the rebuilt version in one atomic step, retiring the
   * old one, by compare-and-set on both positions (FencedError when either
   * moved). Runs with the live lane paused.
   */
  protected abstract swapVersion(
    target: number,
    checkpoint: number,
    live: { version: number; checkpoint: number },
  ): Promise<void>;
  /** Drops a rebuild's version and its request (if it is still the one asked for). */
  protected abstract abandonRebuild(target: number, reason: string): Promise<void>;

  // --- lifecycle -------------------------------------------------------------

  /** Prepares the read model and starts writing, or standing by when another process writes. */
  async start(): Promise<void> {
    if (this.#supervisor) return;
    await this.init();
    this.#stopping = new AbortController();
    this.state = "standby";
    await this.#tick();
    this.#supervisor = this.#supervise(this.#stopping.signal);
  }

  /** Finishes the batch in flight, stops reading and releases the writer lock. */
  async stop(): Promise<void> {
    if (!this.#stopping) return;
    this.#stopping.abort();
    await this.#supervisor;
    this.#supervisor = undefined;
    this.#stopping = undefined;
    const w = this.writer;
    if (w) await this.demote(w, undefined);
    await this.#lock.close();
    this.#waiters.close();
    this.state = "stopped";
  }

  /** True while it can do its job: writing or ready to take over; false when halted or stopped. */
  healthy(): boolean {
    return this.state === "running" || this.state === "rebuilding" || this.state === "standby";
  }

  /** Resumes a halted strict projection (after a fix) from its checkpoint. */
  async resume(): Promise<void> {
    const w = this.writer;
    if (this.state !== "halted" || !w) return;
    this.lastError = undefined;
    await this.recordState("running", undefined);
    w.reader = this.newReader(w.lane.checkpoint + 1);
    this.state = "running";
    w.loop = this.#runLive(w);
  }

  /**
   * Resolves once the projection has applied the given stream sequence (a
   * command's write), so a query can read its own writes; rejects with
   * DEADLINE_EXCEEDED after timeoutMs. Works on every replica: a standby
   * reads the checkpoint the writer stores. A sequence the projection's
   * subject filter does not cover resolves once the projection is caught up.
   */
  waitFor(sequence: number, timeoutMs = 5_000): Promise<void> {
    return this.#waiters.wait(sequence, timeoutMs);
  }

  /**
   * Requests a rebuild into the next version and returns that version. Any
   * replica may call it: the request is stored, and the writer picks it up
   * (at once when it is this process). A rebuild already under way is
   * refused with FAILED_PRECONDITION (admin.proto's contract). A writer
   * change mid-rebuild resumes from its checkpoint.
   */
  async rebuild(): Promise<{ targetVersion: number }> {
    await this.init();
    const targetVersion = await this.requestRebuild();
    this.options.logger.info({ projection: this.name, targetVersion }, "projection rebuild requested");
    const w = this.writer;
    if (w) await this.#pickUpRebuild(w);
    return { targetVersion };
  }

  /** Abandons a rebuild under way: its version and dead letters are dropped; the live version is untouched. */
  async cancelRebuild(reason = "rebuild cancelled"): Promise<void> {
    const run = this.#rebuild;
    if (run) {
      run.abort.abort();
      await run.done;
    }
    const request = await this.rebuildRequest();
    if (request) await this.abandonRebuild(request.target, reason);
  }

  /** Runs setUp once per instance (again after a failure). */
  protected init(): Promise<void> {
    this.#initialized ??= this.setUp().catch((e) => {
      this.#initialized = undefined;
      throw e;
    });
    return this.#initialized;
  }

  // --- writer election ---------------------------------------------------------

  async #supervise(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const interval = this.writer
        ? (this.options.pollIntervalMs ?? 1_000)
        : (this.options.standbyRetryMs ?? 2_000);
      try {
        await sleep(interval, undefined, { signal });
      } catch {
        return;
      }
      await this.#tick();
    }
  }

  async #tick(): Promise<void> {
    try {
      const w = this.writer;
      if (!w) {
        if (await this.#lock.tryAcquire()) await this.#becomeWriter();
        return;
      }
      if (!(await this.#lock.check())) {
        await this.demote(w, "lost the writer lock (its database session ended)");
        return;
      }
      await this.#pickUpRebuild(w);
      await this.#watch(w);
    } catch (e) {
      this.lastError = errorMessage(e);
      this.options.logger.warn({ projection: this.name, err: e }, "projector supervision failed; retrying");
    }
  }

  async #becomeWriter(): Promise<void> {
    try {
      const { version, checkpoint } = await this.readPosition();
      const abort = new AbortController();
      const w: WriterSession = {
        abort,
        reader: this.newReader(checkpoint + 1),
        lane: this.newLane(version, false, checkpoint, abort.signal),
        loop: Promise.resolve(),
      };
      this.writer = w;
      this.state = "running";
      await this.recordState("running", undefined);
      w.loop = this.#runLive(w);
      this.options.logger.info({ projection: this.name, version, checkpoint }, "projection writer active");
      await this.#pickUpRebuild(w);
    } catch (e) {
      const w = this.writer;
      if (w) await this.demote(w, errorMessage(e));
      else await this.#lock.release();
      throw e;
    }
  }

  /** Gives up the writer role: stops the lanes (after the batch in flight), then releases the lock. */
  protected async demote(w: WriterSession, reason: string | undefined): Promise<void> {
    if (this.writer !== w) return;
    this.writer = undefined;
    w.abort.abort();
    const run = this.#rebuild;
    await Promise.allSettled([w.loop, run?.session === w ? run.done : undefined]);
    await w.reader.close();
    await this.#lock.release();
    if (reason) {
      this.lastError = reason;
      this.options.logger.warn({ projection: this.name, reason }, "projection writer stepped down");
    }
    if (this.#stopping && !this.#stopping.signal.aborted) this.state = "standby";
  }

  /** Refreshes the lag metric and recreates a consumer that went quiet while there is more to read. */
  async #watch(w: WriterSession): Promise<void> {
    const head = await this.head();
    this.options.metrics?.lag?.(this.name, Math.max(0, head - w.lane.checkpoint));
    const stallMs = this.options.stallTimeoutMs ?? 15_000;
    const run = this.#rebuild;
    const readers = run?.session === w ? [w.reader, run.reader] : [w.reader];
    for (const reader of readers) {
      if (head >= reader.nextSequence && reader.idleMs > stallMs) {
        this.options.logger.warn({ projection: this.name }, "stream consumer stalled; recreating it");
        reader.restart();
      }
    }
  }

  // --- the live lane -------------------------------------------------------------

  async #runLive(w: WriterSession): Promise<void> {
    const { signal } = w.abort;
    try {
      while (!signal.aborted) {
        const batch = await w.reader.take(this.batchSize, signal);
        if (batch.length === 0) continue;
        await this.mutex.run(() => w.lane.apply(batch));
        this.#waiters.poke();
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof HaltedError) {
        await this.#halt(w, e);
        return;
      }
      this.options.logger.error({ projection: this.name, err: e }, "projection writer failed");
      // Not awaited: demote waits for this very loop to end.
      void this.demote(w, errorMessage(e)).catch(() => {});
    }
  }

  /**
   * A strict projection stops at the event and keeps the writer lock, so no
   * standby takes over only to halt at the same event; a restart (with the
   * fix) or resume() tries again.
   */
  async #halt(w: WriterSession, e: HaltedError): Promise<void> {
    this.state = "halted";
    this.lastError = e.message;
    await w.reader.close();
    this.options.logger.error(
      { projection: this.name, seq: e.sequence, err: e.cause },
      "strict projection halted at an event that keeps failing; fix it, then resume or restart",
    );
    await this.recordState("halted", e.message).catch(() => {});
  }

  // --- rebuild -------------------------------------------------------------------

  /** Starts (or resumes, after a restart or takeover) the rebuild the store asks for. */
  async #pickUpRebuild(w: WriterSession): Promise<void> {
    if (this.#rebuild || this.writer !== w) return;
    const request = await this.rebuildRequest();
    if (!request || this.#rebuild || this.writer !== w || w.abort.signal.aborted) return;
    const { target, checkpoint: from } = request;
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
        const checkpoint = run.lane.checkpoint;
        await this.swapVersion(run.target, checkpoint, {
          version: live.sink.version,
          checkpoint: live.checkpoint,
        });
        // The live lane skips what the rebuild already applied past the old checkpoint.
        live.retarget(this.newSink(run.target, false), checkpoint);
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
        await this.abandonRebuild(run.target, this.lastError).catch(() => {});
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

  // --- plumbing --------------------------------------------------------------------

  /** The live checkpoint: this process's own when it writes, the stored one otherwise. */
  protected async checkpoint(): Promise<number> {
    return this.writer?.lane.checkpoint ?? (await this.readPosition()).checkpoint;
  }

  protected head(): Promise<number> {
    return readHead(this.options.store, this.streamName, this.#filter);
  }

  /** Count of dead letters waiting for a replay. */
  protected pendingDeadLetters(): Promise<number> {
    return this.options.deadLetters.countPending(this.name);
  }

  protected newReader(from: number): StreamReader {
    return new StreamReader({
      js: this.options.store.js,
      stream: this.streamName,
      filterSubject: this.#filter,
      from,
      capacity: Math.max(this.batchSize * 2, 100),
      onError: (e) => {
        this.lastError = errorMessage(e);
        this.options.logger.warn({ projection: this.name, err: e }, "stream consumer failed; recreating it");
      },
    }).start();
  }

  protected newLane(version: number, rebuild: boolean, checkpoint: number, signal: AbortSignal): Lane {
    return new Lane({
      projection: this.name,
      sink: this.newSink(version, rebuild),
      checkpoint,
      decode: (m) => this.options.store.decode(this.streamName, m),
      maxAttempts: this.options.maxAttempts ?? 3,
      strict: this.source.strict ?? false,
      signal,
      logger: this.options.logger,
      metrics: this.options.metrics,
      onBatchCommitted: this.options.onBatchCommitted,
      onTransient: (e) => {
        this.lastError = errorMessage(e);
      },
    });
  }
}
