import type { Summary } from "../lib/summary.js";

/** echo-server.ts prints `<READY_PREFIX> {"guarded":port,"open":port}` once listening. */
export const READY_PREFIX = "spool-bench-echo";
/** echo-server.ts prints `<STATS_PREFIX> <EchoStats>` on SIGUSR2 and at shutdown. */
export const STATS_PREFIX = "spool-bench-echo-stats";
/** load.ts prints `<LOAD_RESULT_PREFIX> <LoadResult>` when done. */
export const LOAD_RESULT_PREFIX = "spool-bench-load-result";
/** load.ts reads its plan (JSON LoadPlan) from this variable. */
export const LOAD_PLAN_ENV = "SPOOL_BENCH_AUTH_LOAD_PLAN";

export interface EchoStats {
  /** 1, 2, … per SIGUSR2; 0 at shutdown. */
  seq: number;
  hits: number;
  misses: number;
  /** Sessions in the revocation set. */
  revoked: number;
}

export type Mode = "open" | "guarded";

export interface LoadPlan {
  ports: Record<Mode, number>;
  /** The echo server's pid, for its CPU time (Linux /proc). */
  serverPid: number;
  /** A file with one access token per line. */
  tokensFile: string;
  /** Calls in flight at once (closed loop). */
  concurrency: number;
  /** HTTP/2 connections per port the calls are spread over. */
  connections: number;
  /** Unmeasured load on each port before the first round. */
  warmupMs: number;
  roundMs: number;
  /** Measured rounds in order, e.g. open, guarded, guarded, open. */
  rounds: Mode[];
  /** Deadline of each call. */
  callDeadlineMs: number;
  /** Longest wait before each round for the rest of the machine to go quiet. */
  quietWaitMs: number;
}

export interface CpuCores {
  /** Average CPUs busy with the echo server process. */
  server: number;
  /** … with the load generator. */
  load: number;
  /** … with everything else (NATS, PostgreSQL, the idle auth service, other jobs). */
  other: number;
}

export interface RoundResult {
  mode: Mode;
  calls: number;
  errors: number;
  seconds: number;
  /** Completed calls per second. */
  rate: number;
  latencyMs: Summary;
  cpu: CpuCores | undefined;
  /** CPUs busy outside the load generator just before the round (after waiting for quiet). */
  otherLoadBefore: number | undefined;
  /** Echo-server CPU time per completed call, µs. */
  serverCpuUsPerCall: number | undefined;
}

export interface LoadResult {
  rounds: RoundResult[];
  /** Failed calls during the unmeasured warm-up. */
  warmupErrors: number;
  /** A few error messages, when calls failed (warm-up included). */
  errorSamples: string[];
}
