// A replica on every core: node:cluster workers, each a full copy of the
// service (its own NATS connection, follow hub, producer, gRPC server), all
// accepting on one shared gRPC port (see docs/adr/0009-generation-stream-multicore.md).
// The primary only forks, restarts and stops them; it holds no connection.
import cluster, { type Worker } from "node:cluster";
import { availableParallelism } from "node:os";
import { createLogger } from "../logger.js";
import { EXIT_CONFIG } from "./run-service.js";

export interface WorkersOptions {
  /** Workers to run; 0 means one per core (os.availableParallelism()). 1 runs the service in this process. */
  workers: number;
  /**
   * Extra environment of worker `index` (0-based), e.g. its own metrics port.
   * The worker's index is also in SPOOL_WORKER_INDEX.
   */
  envOf?: (index: number) => Record<string, string>;
  /** A worker that ran less than this before dying is restarted after a growing pause (default 10 s). */
  stableAfterMs?: number;
  /** Exit anyway this long after the stop signal if workers hang (default 70 s: a worker's own limit is 60 s). */
  hardTimeoutMs?: number;
}

/** How many workers `workers` asks for (0: one per core). */
export function workerCount(workers: number): number {
  return workers === 0 ? availableParallelism() : workers;
}

/**
 * Runs `service` (which calls runService) in this process when one worker is
 * asked for, and in `n` cluster workers otherwise. In the primary: a worker
 * that dies is logged and replaced (its followers resume elsewhere; the
 * others are untouched, being other processes); SIGTERM or SIGINT stops every
 * worker with SIGTERM and exits 0 when all stopped cleanly, 1 otherwise. A
 * worker exiting with EXIT_CONFIG (unusable configuration) is not restarted:
 * the primary stops the rest and exits with it.
 */
export function runWorkers(name: string, options: WorkersOptions, service: () => void): void {
  const n = workerCount(options.workers);
  if (cluster.isWorker) {
    // Node ends a worker whose primary is gone; should that not happen (the worker busy in its own
    // shutdown when the primary went), it ends itself shortly after.
    process.once("disconnect", () => {
      setTimeout(() => process.kill(process.pid, "SIGKILL"), 5_000).unref();
    });
    service();
    return;
  }
  if (n <= 1) {
    service();
    return;
  }
  const logger = createLogger({ service: name });
  const stableAfterMs = options.stableAfterMs ?? 10_000;
  const slots = new Map<Worker, { index: number; startedAt: number }>();
  const failures = new Map<number, number>();
  let stopping = false;
  let exitCode = 0;

  const fork = (index: number) => {
    const worker = cluster.fork({ ...options.envOf?.(index), SPOOL_WORKER_INDEX: String(index) });
    slots.set(worker, { index, startedAt: Date.now() });
    logger.info({ worker: index, workerPid: worker.process.pid }, "worker started");
  };

  const stopAll = (code: number) => {
    exitCode = Math.max(exitCode, code);
    if (stopping) return;
    stopping = true;
    setTimeout(() => {
      // Never leave a worker behind: a stuck one would keep serving with nobody supervising it.
      logger.error({ left: slots.size }, "workers did not stop in time; killing them and exiting");
      for (const w of slots.keys()) w.process.kill("SIGKILL");
      process.exit(1);
    }, options.hardTimeoutMs ?? 70_000).unref();
    for (const w of slots.keys()) w.process.kill("SIGTERM");
    if (slots.size === 0) process.exit(exitCode);
  };

  cluster.on("exit", (worker, code, signal) => {
    const slot = slots.get(worker);
    slots.delete(worker);
    if (!slot) return;
    if (stopping) {
      if (code !== 0) exitCode = Math.max(exitCode, 1);
      if (slots.size === 0) process.exit(exitCode);
      return;
    }
    if (code === EXIT_CONFIG) {
      logger.fatal({ worker: slot.index }, "worker refused its configuration; stopping");
      stopAll(EXIT_CONFIG);
      return;
    }
    const lived = Date.now() - slot.startedAt;
    const streak = lived < stableAfterMs ? (failures.get(slot.index) ?? 0) + 1 : 0;
    failures.set(slot.index, streak);
    const delayMs = streak === 0 ? 0 : Math.min(250 * 2 ** streak, 30_000);
    logger.error(
      { worker: slot.index, workerPid: worker.process.pid, code, signal, restartInMs: delayMs },
      "worker died; its followers resume on the other workers or replicas; restarting it",
    );
    setTimeout(() => {
      if (!stopping) fork(slot.index);
    }, delayMs);
  });

  process.on("SIGTERM", () => stopAll(0));
  process.on("SIGINT", () => stopAll(0));
  logger.info({ workers: n }, "starting workers");
  for (let i = 0; i < n; i++) fork(i);
}
