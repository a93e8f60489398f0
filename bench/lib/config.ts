// Benchmark settings from the environment. Every knob has a default sized so
// the whole run stays within a few minutes on a 2-core machine.

import { envFlag, envInt } from "./env.js";

export interface BenchConfig {
  /** Events per scenario (each scenario writes or reads this many). */
  events: number;
  /** Aggregates the events are spread over (subjects `ex.counter.<i>`, Emmett streams `counter-<i>`). */
  aggregates: number;
  /** Appends (or publishes) in flight at once. */
  inFlight: number;
  /** Events per projection batch (kit projector and Emmett's puller alike). */
  batchSize: number;
  /** Events appended before each timed write scenario, so every contender starts with a warm JIT. */
  warmup: number;
  /**
   * Rounds of each JetStream-side scenario (and of the rebuilds), interleaved;
   * the best round is the figure. Emmett's append, slow, runs once.
   */
  rounds: number;
  natsUrl: string;
  /** Maintenance database URL; the bench creates (and drops) its own databases from it. */
  adminDatabaseUrl: string;
  /** Name of the kit's database; the peer gets `<name>_emmett`. */
  databaseName: string;
  /** Keep streams and databases after the run, for inspection. */
  keep: boolean;
  /** Longest wait before each round for the rest of the machine to go quiet (0: do not wait). */
  quietWaitMs: number;
  /** Skip the Emmett peer (its append dominates the run time). */
  skipPeer: boolean;
  /**
   * Experiment: connect with nats.js `noAsyncTraces` (no Error objects built
   * per request for stack traces) instead of the kit's connectNats settings.
   */
  noAsyncTraces: boolean;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): BenchConfig {
  const events = envInt("SPOOL_BENCH_EVENTS", 100_000, 1, env);
  const aggregates = envInt("SPOOL_BENCH_AGGREGATES", 1_000, 1, env);
  const inFlight = envInt("SPOOL_BENCH_IN_FLIGHT", 1_000, 1, env);
  if (inFlight > aggregates) {
    // Each in-flight slot owns its aggregates, so it always knows their expected version.
    throw new Error(
      `SPOOL_BENCH_IN_FLIGHT (${inFlight}) must not exceed SPOOL_BENCH_AGGREGATES (${aggregates})`,
    );
  }
  const databaseName = env.SPOOL_BENCH_DATABASE ?? "spool_bench";
  if (!/^[a-z_][a-z0-9_]{0,40}$/.test(databaseName)) {
    throw new Error(`SPOOL_BENCH_DATABASE must match [a-z_][a-z0-9_]{0,40}, got ${databaseName}`);
  }
  return {
    events,
    aggregates,
    inFlight,
    batchSize: envInt("SPOOL_BENCH_BATCH", 1_000, 1, env),
    warmup: envInt("SPOOL_BENCH_WARMUP", 20_000, 0, env),
    rounds: envInt("SPOOL_BENCH_ROUNDS", 3, 1, env),
    natsUrl: env.SPOOL_BENCH_NATS_URL ?? env.SPOOL_TEST_NATS_URL ?? "nats://127.0.0.1:4222",
    adminDatabaseUrl:
      env.SPOOL_BENCH_DATABASE_URL ??
      env.SPOOL_TEST_DATABASE_URL ??
      "postgres://postgres@127.0.0.1:5432/postgres",
    databaseName,
    keep: envFlag("SPOOL_BENCH_KEEP", env),
    quietWaitMs: envInt("SPOOL_BENCH_QUIET_WAIT_MS", 5_000, 0, env),
    skipPeer: envFlag("SPOOL_BENCH_SKIP_PEER", env),
    noAsyncTraces: envFlag("SPOOL_BENCH_NO_ASYNC_TRACES", env),
  };
}
