import { machineBusyJiffies, processJiffiesOf, TICKS_PER_SECOND } from "../lib/cpu.js";

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

export interface Summary {
  count: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
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

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = Float64Array.from(values).sort();
  const arr = Array.from(sorted);
  const sum = arr.reduce((a, b) => a + b, 0);
  return {
    count: arr.length,
    p50: percentile(arr, 0.5),
    p99: percentile(arr, 0.99),
    max: arr.at(-1) ?? Number.NaN,
    mean: arr.length > 0 ? sum / arr.length : Number.NaN,
  };
}

/** CPU seconds (user + system) a process has used, from /proc; undefined elsewhere. */
export function processCpuSeconds(pid: number | "self"): number | undefined {
  const j = processJiffiesOf(pid);
  return j === undefined ? undefined : j / TICKS_PER_SECOND;
}

/** CPU seconds the whole machine has been busy, from /proc/stat. */
export function machineBusySeconds(): number | undefined {
  const j = machineBusyJiffies();
  return j === undefined ? undefined : j / TICKS_PER_SECOND;
}
