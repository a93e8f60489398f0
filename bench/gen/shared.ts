import { sampleCpuOf } from "../lib/cpu.js";
import type { Summary } from "../lib/summary.js";

/** followers.ts / peer-followers.ts read their plan (JSON) from this variable. */
export const PLAN_ENV = "SPOOL_BENCH_GEN_PLAN";
/** …and print `<RESULT_PREFIX> <JSON result>` once when done. */
export const RESULT_PREFIX = "spool-bench-gen-result";
/** peer-server.ts prints `<PEER_READY_PREFIX> {"port":N}` once listening. */
export const PEER_READY_PREFIX = "spool-bench-gen-peer-ready";
/** …and `<PEER_STATS_PREFIX> <PeerStats>` on SIGUSR2 and SIGTERM. */
export const PEER_STATS_PREFIX = "spool-bench-gen-peer-stats";

export interface PeerStats {
  producers: number;
  resumes: number;
  resumeDone: number;
  resumeMissing: number;
  errors: number;
  unhandled: number;
  errorSamples: string[];
}

/** The vocabulary both producers draw tokens from (the built-in model's words). */
export const WORDS = (
  "the a stream of events carries every token in order while followers resume from any " +
  "sequence and nothing is lost or repeated when a producer fails another takes over its " +
  "lease so output continues durable log keeps what matters model writes slowly clients read"
).split(" ");

/** G generations × F followers, each generation `tokens` long at `tokensPerSecond`. */
export interface ThroughputPlan {
  kind: "throughput";
  /** gRPC address (host:port) or the peer's base URL. */
  target: string;
  /** Bearer token (Spool). */
  token: string;
  /** Unique per step: part of client request ids and stream ids. */
  label: string;
  generations: number;
  followers: number;
  tokensPerSecond: number;
  tokens: number;
  /** gRPC connections the follows are spread over (Spool). */
  connections: number;
  /** Generations start evenly spread over this long, so their tokens are not in lock-step. */
  spreadMs: number;
  /** From every follower having its first event to the start of the measured window. */
  warmupMs: number;
  /** Longest measured window (shortened so it ends before the first generation does). */
  windowMs: number;
  /** Longest wait, after the window, for every stream to end (a saturated producer runs late). */
  endTimeoutMs: number;
  /** Gives up waiting when no stream received anything for this long. */
  stallMs: number;
  /** The server under test, whose CPU is recorded over the window (with its descendants: cluster workers). */
  serverPid: number;
  /** Further replicas under test (SPOOL_BENCH_GEN_REPLICAS), counted as server CPU too. */
  moreServerPids?: number[];
  /** run.ts (auth, idle, and the JetStream-leg observer during Spool steps), recorded too. */
  orchestratorPid: number;
}

/** N long generations, one follower each, cancelled one by one. */
export interface CancelPlan {
  kind: "cancel";
  target: string;
  token: string;
  label: string;
  count: number;
  /** Deltas each follower must have seen before the cancels begin. */
  deltasBeforeCancel: number;
  /** Pause between two cancels. */
  spacingMs: number;
  /** Longest wait for a terminal event after its cancel returned. */
  terminalTimeoutMs: number;
}

export type Plan = ThroughputPlan | CancelPlan;

/** Where the CPUs went over the measured window (average cores busy). */
export interface CpuCores {
  followers: number;
  server: number;
  orchestrator: number;
  natsServer: number;
  redis: number;
  postgres: number;
  /** Everything else on the machine (the orchestrator, other engineers' jobs, the OS). */
  other: number;
  machine: number;
}

/** Stream-by-stream delivery check. */
export interface DeliveryCheck {
  streams: number;
  /** Streams that got every event 1…last once, in order, and ended with the expected terminal event. */
  complete: number;
  delivered: number;
  /** What complete streams would have received: each stream's last sequence (from the server when it says). */
  expected: number;
  gaps: number;
  duplicates: number;
  /** Streams that never got their terminal event (or ended without it). */
  unterminated: number;
  /** Streams that ended with an error. */
  errors: number;
  /** Streams whose terminal event was not the expected kind. */
  wrongTerminal: number;
  errorSamples: string[];
}

export interface ThroughputResult {
  kind: "throughput";
  /** G × F × tokens/s. */
  offeredPerSecond: number;
  /** Starting every generation and opening every follow, ms (until each follower had its first event). */
  setupMs: number;
  window: {
    seconds: number;
    /** Wall-clock bounds of the window (ms since the epoch). */
    startMs: number;
    endMs: number;
    deliveries: number;
    /** Deliveries per second inside the window. */
    rate: number;
    /** Tokens carried by those deliveries per second (a coalesced delta carries several). */
    tokenRate: number;
    /** False when the window had to be cut short (setup took too long) or streams ended inside it. */
    steady: boolean;
    endedInside: number;
  };
  /** Producer append (event time) to follower receipt, deliveries received in the window. */
  delayMs: Summary;
  /** Every delivery over the whole step (window or not). */
  delayAllMs: Summary;
  cpu: CpuCores | undefined;
  check: DeliveryCheck;
  /** Generations whose last sequence the server reported (the others: the most any follower saw end). */
  lastSequencesFromServer: number;
  seconds: number;
}

export interface CancelResult {
  kind: "cancel";
  count: number;
  /** Cancel returning → follower receiving the terminal event (0 when it came first). */
  latencyMs: Summary;
  /** Cancel sent → terminal received. */
  fromSendMs: Summary;
  /** Terminal event received before the Cancel call returned. */
  terminalBeforeReturn: number;
  /** Cancel call round trip. */
  callMs: Summary;
  notCancelled: number;
  timeouts: number;
  errorSamples: string[];
}

export type Result = ThroughputResult | CancelResult;

export function readPlan<T extends Plan>(kind: T["kind"]): T {
  const raw = process.env[PLAN_ENV];
  if (!raw) throw new Error(`${PLAN_ENV} is not set`);
  const plan = JSON.parse(raw) as Plan;
  if (plan.kind !== kind) throw new Error(`expected a ${kind} plan, got ${plan.kind}`);
  return plan as T;
}

export function printResult(result: Result): void {
  process.stdout.write(`${RESULT_PREFIX} ${JSON.stringify(result)}\n`);
}

/**
 * Wall-clock milliseconds with sub-millisecond resolution: performance.now()
 * anchored on an edge of Date.now(), so it agrees with the producers'
 * Date.now() timestamps (same machine clock) to within microseconds.
 */
export function wallClock(): () => number {
  const first = Date.now();
  let now = Date.now();
  while (now === first) now = Date.now();
  const base = now - performance.now();
  return () => base + performance.now();
}

/** One follower's view of one stream: takes exactly next, next + 1, … */
export class StreamTrack {
  next: number;
  received = 0;
  gaps = 0;
  duplicates = 0;
  terminalSeq: number | undefined;
  terminalKind: string | undefined;
  ended = false;
  error: string | undefined;

  constructor(first: number) {
    this.next = first;
  }

  /** Records the event with this sequence. */
  see(sequence: number): void {
    this.received++;
    if (sequence === this.next) {
      this.next++;
    } else if (sequence < this.next) {
      this.duplicates++;
    } else {
      this.gaps += sequence - this.next;
      this.next = sequence + 1;
    }
  }
}

/**
 * Checks every stream: complete when it received `expected(stream)` events
 * (first…last, no gap, no duplicate) and ended with the terminal event of
 * `terminalKind`.
 */
export function checkStreams(
  tracks: readonly StreamTrack[],
  expected: (t: StreamTrack, i: number) => number,
  terminalKind: string,
): DeliveryCheck {
  const c: DeliveryCheck = {
    streams: tracks.length,
    complete: 0,
    delivered: 0,
    expected: 0,
    gaps: 0,
    duplicates: 0,
    unterminated: 0,
    errors: 0,
    wrongTerminal: 0,
    errorSamples: [],
  };
  tracks.forEach((t, i) => {
    const want = expected(t, i);
    c.delivered += t.received;
    c.expected += want;
    c.gaps += t.gaps;
    c.duplicates += t.duplicates;
    if (t.error !== undefined) {
      c.errors++;
      if (c.errorSamples.length < 5) c.errorSamples.push(t.error);
    }
    if (t.terminalSeq === undefined) c.unterminated++;
    else if (t.terminalKind !== terminalKind) c.wrongTerminal++;
    if (
      t.error === undefined &&
      t.terminalSeq !== undefined &&
      t.terminalKind === terminalKind &&
      t.gaps === 0 &&
      t.duplicates === 0 &&
      t.received === want
    ) {
      c.complete++;
    }
  });
  return c;
}

// ---- CPU accounting (Linux /proc) ----

const COMMS = ["nats-server", "redis-server", "postgres"] as const;

/** Starts a CPU sample; the returned function ends it. */
export function sampleCpu(
  serverPid: number,
  orchestratorPid: number,
  moreServerPids: readonly number[] = [],
): () => CpuCores | undefined {
  const servers = Object.fromEntries(moreServerPids.map((pid, i) => [`server${i + 1}`, pid]));
  const stop = sampleCpuOf(
    // The orchestrator (run.ts) is the parent of the service and of this process: its own CPU only.
    { self: "self", server: serverPid, orchestrator: { own: orchestratorPid }, ...servers },
    COMMS,
  );
  return () => {
    const b = stop();
    if (!b) return undefined;
    const round = (n: number | undefined) => Math.round((n ?? 0) * 100) / 100;
    const r: Omit<CpuCores, "other"> = {
      followers: round(b.pids.self),
      // Every replica (and its cluster workers) under test.
      server: round(
        (b.pids.server ?? 0) + Object.keys(servers).reduce((sum, k) => sum + (b.pids[k] ?? 0), 0),
      ),
      orchestrator: round(b.pids.orchestrator),
      natsServer: round(b.comms["nats-server"]),
      redis: round(b.comms["redis-server"]),
      postgres: round(b.comms.postgres),
      machine: round(b.machine),
    };
    const known = r.followers + r.server + r.orchestrator + r.natsServer + r.redis + r.postgres;
    return { ...r, other: Math.round(Math.max(0, r.machine - known) * 100) / 100 };
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
