// Auth benchmark, one run on one machine:
//   1. an authenticated unary RPC against the same RPC unauthenticated, 64
//      calls in flight (goal: authentication costs ≤ 15% of throughput);
//   2. the verifier's cache hit rate under that load;
//   3. revocation propagation: Logout returning → another process refusing
//      the token (goal: p99 < 1 s);
//   4. login latency and the share of it argon2id verification takes.
// The auth service runs in this process (startAuth); the guarded/open echo
// server (echo-server.ts) and the load generator (load.ts) are processes of
// their own. Everything runs on an isolated slice (stream prefix, database,
// Redis prefix) removed at the end.
//
//   node --conditions=@spool/source --import tsx bench/auth/run.ts
//
// Settings (environment): SPOOL_BENCH_AUTH_TOKENS, _SESSIONS, _CONCURRENCY,
// _CONNECTIONS, _WARMUP_MS, _ROUND_MS, _ROUNDS, _ROUND_QUIET_WAIT_MS,
// _REVOCATIONS, _LOGINS, _POLL_MS, _REVOCATION_BOUND_MS, _QUIET_WAIT_MS;
// server URLs from SPOOL_TEST_{NATS,DATABASE,REDIS}_URL, loopback defaults
// otherwise. Writes bench/results/auth-<timestamp>.json.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import {
  ARGON2_OPTIONS,
  call,
  hashPassword,
  startTestAuth,
  type TestAuth,
  verifyPassword,
} from "@spool/auth/testing";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import { type Child, type Isolated, isolate, runTs } from "@spool/testing";
import { waitForQuiet } from "../lib/cpu.js";
import { envInt, infraUrls, progressLog } from "../lib/env.js";
import { describeMachine, gitCommit, type Machine, machineText } from "../lib/infra.js";
import { RESULTS_DIR, writeResultFile } from "../lib/report.js";
import { type Summary, summarize } from "../lib/summary.js";
import { fmtCount, fmtMs, fmtPct, markdownTable } from "../lib/table.js";
import { bearerMetadata, insecure, type ServiceError, UNAUTHENTICATED } from "./grpc.js";
import { type GuardCost, measureGuardCost } from "./guard-cost.js";
import {
  type EchoStats,
  LOAD_PLAN_ENV,
  LOAD_RESULT_PREFIX,
  type LoadPlan,
  type LoadResult,
  type Mode,
  READY_PREFIX,
  type RoundResult,
  STATS_PREFIX,
} from "./shared.js";

const log = progressLog("bench:auth");
const here = path.dirname(fileURLToPath(import.meta.url));
const ECHO = path.join(here, "echo-server.ts");
const LOAD = path.join(here, "load.ts");
/** The audience the echo server accepts (one of auth's default AUTH_AUDIENCES). */
const ECHO_AUDIENCE = "spool.generation";

/** The goals from the issue. */
const GOALS = {
  /** Authenticated throughput at least this fraction of unauthenticated (overhead ≤ 15%). */
  minGuardedRatio: 0.85,
  /** Revocation propagation p99 below this. */
  maxRevocationP99Ms: 1_000,
} as const;

function settings() {
  return {
    tokens: envInt("SPOOL_BENCH_AUTH_TOKENS", 1_000, 1),
    sessions: envInt("SPOOL_BENCH_AUTH_SESSIONS", 25, 1),
    concurrency: envInt("SPOOL_BENCH_AUTH_CONCURRENCY", 64, 1),
    /** HTTP/2 connections per port (a service hears from several clients; one connection ping-pongs). */
    connections: envInt("SPOOL_BENCH_AUTH_CONNECTIONS", 4, 1),
    warmupMs: envInt("SPOOL_BENCH_AUTH_WARMUP_MS", 2_000, 0),
    roundMs: envInt("SPOOL_BENCH_AUTH_ROUND_MS", 1_500, 100),
    /** Measured rounds per mode, interleaved open, guarded, guarded, open, …; the best round counts. */
    roundsPerMode: envInt("SPOOL_BENCH_AUTH_ROUNDS", 8, 1),
    /** Longest wait for quiet before each round. */
    roundQuietWaitMs: envInt("SPOOL_BENCH_AUTH_ROUND_QUIET_WAIT_MS", 2_500, 0),
    revocations: envInt("SPOOL_BENCH_AUTH_REVOCATIONS", 50, 1),
    logins: envInt("SPOOL_BENCH_AUTH_LOGINS", 30, 1),
    pollMs: envInt("SPOOL_BENCH_AUTH_POLL_MS", 2, 0),
    /** A revocation not seen within this is recorded as this (and fails the goal). */
    revocationBoundMs: envInt("SPOOL_BENCH_AUTH_REVOCATION_BOUND_MS", 5_000, 100),
    quietWaitMs: envInt("SPOOL_BENCH_AUTH_QUIET_WAIT_MS", 10_000, 0),
  };
}
type Settings = ReturnType<typeof settings>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `count` tasks, at most `width` at a time. */
async function pool<T>(count: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, worker));
  return out;
}

/** `count` distinct access tokens: a few logins, each session refreshed repeatedly. */
async function issueTokens(auth: TestAuth, count: number, sessions: number): Promise<string[]> {
  const email = auth.env.SPOOL_BOOTSTRAP_ADMIN_EMAIL ?? "";
  const password = auth.env.SPOOL_BOOTSTRAP_ADMIN_PASSWORD ?? "";
  const perSession = Math.ceil(count / sessions);
  const chains = await pool(sessions, 5, async () => {
    const login = await call(auth.client.login, auth.client, { email, password });
    const tokens = [login.tokens?.accessToken ?? ""];
    let refresh = login.tokens?.refreshToken ?? "";
    while (tokens.length < perSession) {
      const r = await call(auth.client.refreshToken, auth.client, { refreshToken: refresh });
      tokens.push(r.tokens?.accessToken ?? "");
      refresh = r.tokens?.refreshToken ?? "";
    }
    return tokens;
  });
  const all = chains.flat().slice(0, count);
  if (new Set(all).size !== count || all.some((t) => t === "")) {
    throw new Error("token issuing produced empty or repeated tokens");
  }
  return all;
}

async function echoStats(echo: Child, seq: number): Promise<EchoStats> {
  echo.proc.kill("SIGUSR2");
  const line = await echo.waitFor(new RegExp(`${STATS_PREFIX} \\{"seq":${seq},[^\\n]*`), 10_000);
  return JSON.parse(line.slice(STATS_PREFIX.length + 1)) as EchoStats;
}

/** One authenticated call to the guarded port; fails unless the token is accepted. */
async function primeGuarded(port: number, token: string): Promise<void> {
  const client = new AdminServiceClient(`127.0.0.1:${port}`, insecure());
  try {
    await new Promise<void>((resolve, reject) => {
      client.listProjections({}, bearerMetadata(token), { deadline: Date.now() + 10_000 }, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  } finally {
    client.close();
  }
}

async function runLoad(plan: LoadPlan): Promise<LoadResult> {
  const load = runTs(LOAD, { env: { [LOAD_PLAN_ENV]: JSON.stringify(plan) } });
  const code = await load.exited;
  const line = new RegExp(`${LOAD_RESULT_PREFIX} ([^\\n]*)`).exec(load.output());
  if (code !== 0 || !line?.[1]) {
    throw new Error(`load generator exited with ${code}:\n${load.output().slice(-4000)}`);
  }
  return JSON.parse(line[1]) as LoadResult;
}

interface ModeFigure {
  mode: Mode;
  /** Failed calls over every round of the mode. */
  errors: number;
  /** Calls per second of the best round: noise on a shared machine only ever slows a round down. */
  rate: number;
  /** Every round's rate, in order. */
  roundRates: number[];
  /** Calls per second over every round (total calls / total time), for comparison. */
  pooledRate: number;
  /** Latency of the best round. */
  latencyMs: Summary;
  /** CPUs busy outside the echo server and load generator during the best round. */
  otherCpuInBest: number | undefined;
  /**
   * The echo server's CPU time per call, µs: the median over the quiet rounds
   * (other jobs under QUIET_CPUS; contention inflates CPU per call too), or
   * over all rounds when none was quiet.
   */
  serverCpuUsPerCall: number | undefined;
  /** Rounds the CPU figure is the median of. */
  cpuRounds: number;
  cpuRoundsQuiet: boolean;
}

/** A round counts as quiet when other jobs kept fewer CPUs than this busy. */
const QUIET_CPUS = 0.3;

function figureFor(rounds: RoundResult[], mode: Mode): ModeFigure {
  const mine = rounds.filter((r) => r.mode === mode);
  const best = mine.reduce((a, b) => (b.rate > a.rate ? b : a));
  const withCpu = mine.filter((r) => r.serverCpuUsPerCall !== undefined);
  const quiet = withCpu.filter((r) => r.cpu !== undefined && r.cpu.other < QUIET_CPUS);
  const cpuFrom = quiet.length > 0 ? quiet : withCpu;
  const cpu = cpuFrom.map((r) => r.serverCpuUsPerCall ?? 0);
  return {
    mode,
    errors: mine.reduce((a, r) => a + r.errors, 0),
    rate: best.rate,
    roundRates: mine.map((r) => r.rate),
    pooledRate: mine.reduce((a, r) => a + r.calls, 0) / mine.reduce((a, r) => a + r.seconds, 0),
    latencyMs: best.latencyMs,
    otherCpuInBest: best.cpu?.other,
    serverCpuUsPerCall: cpu.length === 0 ? undefined : summarize(cpu).p50,
    cpuRounds: cpu.length,
    cpuRoundsQuiet: quiet.length > 0,
  };
}

/**
 * guarded/open of each adjacent pair of rounds (the plan alternates open,
 * guarded | guarded, open | …): a second view of the ratio, less exposed to one
 * lucky round, with the pairs where other jobs stayed quiet in both rounds.
 */
function pairRatios(rounds: RoundResult[]): { all: number[]; quiet: number[] } {
  const all: number[] = [];
  const quiet: number[] = [];
  for (let i = 0; i + 1 < rounds.length; i += 2) {
    const a = rounds[i];
    const b = rounds[i + 1];
    if (!a || !b || a.mode === b.mode) continue;
    const [open, guarded] = a.mode === "open" ? [a, b] : [b, a];
    const r = guarded.rate / open.rate;
    all.push(r);
    if ((a.cpu?.other ?? 1) < QUIET_CPUS && (b.cpu?.other ?? 1) < QUIET_CPUS) quiet.push(r);
  }
  return { all, quiet };
}

/** Logout returning → the echo server's first refusal of the session's access token, per session. */
async function revocationDelays(
  auth: TestAuth,
  guardedPort: number,
  s: Settings,
): Promise<{ delaysMs: number[]; polls: number[]; timeouts: number }> {
  const email = auth.env.SPOOL_BOOTSTRAP_ADMIN_EMAIL ?? "";
  const password = auth.env.SPOOL_BOOTSTRAP_ADMIN_PASSWORD ?? "";
  const probe = new AdminServiceClient(`127.0.0.1:${guardedPort}`, insecure());
  const probeCall = (token: string) =>
    new Promise<number | undefined>((resolve) => {
      probe.listProjections({}, bearerMetadata(token), { deadline: Date.now() + 5_000 }, (err) =>
        resolve(err ? (err as ServiceError).code : undefined),
      );
    });
  const delaysMs: number[] = [];
  const polls: number[] = [];
  let timeouts = 0;
  try {
    for (let i = 0; i < s.revocations; i++) {
      const login = await call(auth.client.login, auth.client, { email, password });
      const access = login.tokens?.accessToken ?? "";
      const before = await probeCall(access);
      if (before !== undefined) throw new Error(`the echo server refused a fresh token (code ${before})`);
      await call(auth.client.logout, auth.client, {}, access);
      const t0 = performance.now();
      let n = 0;
      for (;;) {
        const code = await probeCall(access);
        n++;
        const elapsed = performance.now() - t0;
        if (code === UNAUTHENTICATED) {
          delaysMs.push(elapsed);
          break;
        }
        if (code !== undefined) throw new Error(`unexpected status ${code} while polling`);
        if (elapsed > s.revocationBoundMs) {
          timeouts++;
          delaysMs.push(elapsed);
          break;
        }
        if (s.pollMs > 0) await sleep(s.pollMs);
      }
      polls.push(n);
    }
  } finally {
    probe.close();
  }
  return { delaysMs, polls, timeouts };
}

async function loginLatency(auth: TestAuth, s: Settings): Promise<{ login: Summary; argon2: Summary }> {
  const email = auth.env.SPOOL_BOOTSTRAP_ADMIN_EMAIL ?? "";
  const password = auth.env.SPOOL_BOOTSTRAP_ADMIN_PASSWORD ?? "";
  const login: number[] = [];
  for (let i = 0; i < s.logins; i++) {
    const t = performance.now();
    await call(auth.client.login, auth.client, { email, password });
    login.push(performance.now() - t);
  }
  // argon2id alone, in the process the auth service runs in, with its parameters.
  const hash = await hashPassword(password);
  if (!(await verifyPassword(hash, password))) throw new Error("argon2 verify failed");
  const argon2: number[] = [];
  for (let i = 0; i < s.logins; i++) {
    const t = performance.now();
    await verifyPassword(hash, password);
    argon2.push(performance.now() - t);
  }
  return { login: summarize(login), argon2: summarize(argon2) };
}

interface Row {
  figure: string;
  value: string;
  goal: string;
  result: "PASS" | "FAIL" | "—";
}

function renderTable(rows: Row[]): string {
  return markdownTable(
    ["Figure", "Value", "Goal", "Result"],
    rows.map((r) => [r.figure, r.value, r.goal, r.result]),
  );
}

async function main(): Promise<number> {
  const s = settings();
  const urls = infraUrls();
  const startedAt = new Date().toISOString();
  const nc = await connect({ servers: urls.natsUrl, name: "spool-bench-auth" });
  let machine: Machine;
  try {
    machine = await describeMachine(nc, urls.databaseUrl);
  } finally {
    await nc.close();
  }
  log(`machine: ${machineText(machine)}`);

  const slice = await isolate(urls, "benchauth");
  const tmp = await mkdtemp(path.join(os.tmpdir(), "spool-bench-auth-"));
  let auth: TestAuth | undefined;
  let echo: Echo | undefined;
  try {
    log(`slice ${slice.id}: starting auth (in this process) and the echo server`);
    auth = await startTestAuth(slice);
    echo = await startEcho(slice);
    // 1. Throughput, authenticated against unauthenticated (and the verifier's cache under that load).
    const throughput = await measureThroughput(auth, echo, tmp, s);
    // 2. Revocation propagation.
    const revocation = await measureRevocation(auth, echo.ports.guarded, s);
    // The guard's own cost per call, in-process: the cross-check of the throughput ratio.
    const guard = await measureGuard(slice, throughput);
    // 3. Login latency and argon2's share.
    const logins = await measureLogins(auth, s);
    const m: Measured = { throughput, revocation, guard, logins, statsEnd: await echoStats(echo.child, 3) };

    const rows = tableRows(m, s);
    process.stdout.write(`\n${renderTable(rows)}\n\n`);
    const notes = reportNotes(m);
    const report = {
      startedAt,
      commit: gitCommit(),
      machine,
      settings: { ...s, argon2: ARGON2_OPTIONS },
      ...reportBody(m, s),
      table: rows,
      notes,
    };
    const file = await writeResultFile(RESULTS_DIR, "auth", startedAt, report);
    log(`wrote ${path.relative(process.cwd(), file)}`);
    for (const n of notes) log(`note: ${n}`);
    // Missing a goal is a finding, not a failed run; failed calls or a lost revocation are.
    const { open, guarded } = throughput;
    return guarded.errors + open.errors === 0 && revocation.raw.timeouts === 0 ? 0 : 1;
  } finally {
    if (echo) {
      echo.child.kill("SIGTERM");
      const exited = await Promise.race([echo.child.exited, sleep(10_000).then(() => "timeout")]);
      if (exited === "timeout") echo.child.kill("SIGKILL");
    }
    await auth?.stop();
    await slice.cleanup();
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The guarded/open echo server, a process of its own. */
interface Echo {
  child: Child;
  ports: Record<Mode, number>;
  pid: number;
}

async function startEcho(slice: Isolated): Promise<Echo> {
  const child = runTs(ECHO, {
    env: { ...slice.env, SPOOL_LOG_LEVEL: "warn", SPOOL_BENCH_AUTH_AUDIENCE: ECHO_AUDIENCE },
  });
  const ready = await child.waitFor(new RegExp(`${READY_PREFIX} \\{[^\\n]*\\}`), 60_000);
  const ports = JSON.parse(ready.slice(READY_PREFIX.length + 1)) as Record<Mode, number>;
  const pid = child.proc.pid;
  if (pid === undefined) throw new Error("echo server has no pid");
  return { child, ports, pid };
}

interface Throughput {
  tokens: string[];
  load: LoadResult;
  open: ModeFigure;
  guarded: ModeFigure;
  bestRatio: number;
  pairs: { all: number[]; quiet: number[] };
  pairsAll: Summary;
  pairsQuiet: Summary;
  /** The figure judged against the goal (see measureThroughput). */
  ratio: number;
  cpuRatio: number | undefined;
  hits: number;
  misses: number;
  hitRate: number;
  statsBefore: EchoStats;
  statsAfter: EchoStats;
}

async function measureThroughput(auth: TestAuth, echo: Echo, tmp: string, s: Settings): Promise<Throughput> {
  const t = performance.now();
  const tokens = await issueTokens(auth, s.tokens, s.sessions);
  log(
    `${tokens.length} access tokens from ${s.sessions} sessions in ${((performance.now() - t) / 1000).toFixed(1)} s`,
  );
  const tokensFile = path.join(tmp, "tokens.txt");
  await writeFile(tokensFile, `${tokens.join("\n")}\n`, { mode: 0o600 });
  const rounds: Mode[] = [];
  for (let i = 0; i < s.roundsPerMode; i++) {
    rounds.push(...((i % 2 === 0 ? ["open", "guarded"] : ["guarded", "open"]) as Mode[]));
  }
  const quiet = await waitForQuiet(s.quietWaitMs);
  if (quiet !== undefined && quiet > 0.3) {
    log(`(still ${quiet.toFixed(2)} CPUs busy outside the bench after waiting; measuring anyway)`);
  }
  log(
    `load: ${s.concurrency} in flight over ${s.connections} connection(s), ${s.warmupMs} ms warm-up per port, rounds ${rounds.join(", ")} ` +
      `of ${s.roundMs} ms`,
  );
  // One call first, so the echo server has fetched the signing keys before the burst: a cold
  // KvJwksSource answers callers that arrive while its first fetch is in flight with
  // "unknown key" (they do not wait for the fetch) — a cold-start effect, not the steady state.
  await primeGuarded(echo.ports.guarded, tokens[0] ?? "");
  const statsBefore = await echoStats(echo.child, 1);
  const load = await runLoad({
    ports: echo.ports,
    serverPid: echo.pid,
    tokensFile,
    concurrency: s.concurrency,
    connections: s.connections,
    warmupMs: s.warmupMs,
    roundMs: s.roundMs,
    rounds,
    callDeadlineMs: 10_000,
    quietWaitMs: s.roundQuietWaitMs,
  });
  const statsAfter = await echoStats(echo.child, 2);
  for (const r of load.rounds) {
    log(
      `  ${r.mode.padEnd(7)} ${fmtCount(r.rate).padStart(7)} calls/s  p50 ${fmtMs(r.latencyMs.p50)} ms  ` +
        `p99 ${fmtMs(r.latencyMs.p99)} ms  server ${r.serverCpuUsPerCall?.toFixed(0) ?? "?"} µs CPU/call  ` +
        `cpu server ${r.cpu?.server ?? "?"} load ${r.cpu?.load ?? "?"} other ${r.cpu?.other ?? "?"}` +
        (r.errors > 0 ? `  ${r.errors} ERRORS` : ""),
    );
  }
  if (load.warmupErrors > 0) log(`  ${load.warmupErrors} calls failed during warm-up`);
  for (const e of load.errorSamples) log(`  error: ${e}`);
  const open = figureFor(load.rounds, "open");
  const guarded = figureFor(load.rounds, "guarded");
  const pairs = pairRatios(load.rounds);
  const pairsAll = summarize(pairs.all);
  const pairsQuiet = summarize(pairs.quiet);
  const hits = statsAfter.hits - statsBefore.hits;
  const misses = statsAfter.misses - statsBefore.misses;
  return {
    tokens,
    load,
    open,
    guarded,
    bestRatio: guarded.rate / open.rate,
    pairs,
    pairsAll,
    pairsQuiet,
    // The figure judged against the goal: the median guarded/open ratio of adjacent rounds where
    // the rest of the machine stayed quiet (of every pair when fewer than 3 were). The ratio of
    // the two best rounds is shown beside it; one lucky round can move it either way.
    ratio: pairsQuiet.count >= 3 ? pairsQuiet.p50 : pairsAll.p50,
    // The echo server's measured CPU per call, open over guarded: recorded, but on a shared 2-core
    // machine it moves by ±15% from round to round (contention, batching at different rates), more
    // than the guard costs; the in-process guard cost below is the cross-check in the table.
    cpuRatio:
      open.serverCpuUsPerCall !== undefined && guarded.serverCpuUsPerCall !== undefined
        ? open.serverCpuUsPerCall / guarded.serverCpuUsPerCall
        : undefined,
    hits,
    misses,
    hitRate: hits / Math.max(1, hits + misses),
    statsBefore,
    statsAfter,
  };
}

interface Revocation {
  raw: Awaited<ReturnType<typeof revocationDelays>>;
  rev: Summary;
  polls: Summary;
  /** Refused at the first poll: revoked by the time Logout's answer reached the client. */
  firstPoll: number;
}

async function measureRevocation(auth: TestAuth, guardedPort: number, s: Settings): Promise<Revocation> {
  const t = performance.now();
  log(`revocation: ${s.revocations} × login, accepted, Logout, poll every ${s.pollMs} ms until refused`);
  const raw = await revocationDelays(auth, guardedPort, s);
  const rev = summarize(raw.delaysMs);
  log(
    `  p50 ${fmtMs(rev.p50)} ms, p99 ${fmtMs(rev.p99)} ms, max ${fmtMs(rev.max)} ms` +
      ` (${((performance.now() - t) / 1000).toFixed(1)} s)`,
  );
  return { raw, rev, polls: summarize(raw.polls), firstPoll: raw.polls.filter((n) => n === 1).length };
}

interface Guard {
  cost: GuardCost;
  /** What a server-bound service would keep: its CPU per call, plus the guard's. */
  serverBound: number | undefined;
}

async function measureGuard(slice: Isolated, { tokens, open }: Throughput): Promise<Guard> {
  log("guard cost: the same handler direct and through guarded(), in-process, cached tokens");
  const cost = await measureGuardCost({ env: slice.env, tokens, audience: ECHO_AUDIENCE });
  log(
    `  ${(cost.plainNsPerCall / 1000).toFixed(2)} µs direct, ` +
      `${(cost.guardedNsPerCall / 1000).toFixed(2)} µs guarded: +${cost.guardUsPerCall.toFixed(2)} µs/call`,
  );
  const serverBound =
    open.serverCpuUsPerCall === undefined
      ? undefined
      : open.serverCpuUsPerCall / (open.serverCpuUsPerCall + cost.guardUsPerCall);
  return { cost, serverBound };
}

interface Logins {
  login: Summary;
  argon2: Summary;
  /** argon2's share of the login p50. */
  share: number;
}

async function measureLogins(auth: TestAuth, s: Settings): Promise<Logins> {
  log(`login: ${s.logins} sequential logins, then ${s.logins} argon2id verifications alone`);
  const { login, argon2 } = await loginLatency(auth, s);
  const share = argon2.p50 / login.p50;
  log(
    `  login p50 ${fmtMs(login.p50)} ms p99 ${fmtMs(login.p99)} ms; ` +
      `argon2id p50 ${fmtMs(argon2.p50)} ms (${fmtPct(share, 0)} of login)`,
  );
  return { login, argon2, share };
}

interface Measured {
  throughput: Throughput;
  revocation: Revocation;
  guard: Guard;
  logins: Logins;
  statsEnd: EchoStats;
}

const overheadPass = ({ throughput: t }: Measured) =>
  t.ratio >= GOALS.minGuardedRatio && t.guarded.errors === 0 && t.open.errors === 0;
const revocationPass = ({ revocation: r }: Measured) =>
  r.rev.p99 < GOALS.maxRevocationP99Ms && r.raw.timeouts === 0;

function tableRows(m: Measured, s: Settings): Row[] {
  const { open, guarded, ratio, pairsAll, pairsQuiet, bestRatio, hits, misses, hitRate, tokens } =
    m.throughput;
  const { rev, raw, firstPoll } = m.revocation;
  const { cost: guardCost, serverBound } = m.guard;
  const { login, argon2, share } = m.logins;
  const roundsText = (f: ModeFigure) => f.roundRates.map(fmtCount).join(", ");
  const modeValue = (f: ModeFigure) =>
    `${fmtCount(f.rate)} calls/s (best of ${f.roundRates.length}: ${roundsText(f)}); ` +
    `p50 ${fmtMs(f.latencyMs.p50)} ms, p99 ${fmtMs(f.latencyMs.p99)} ms` +
    (f.serverCpuUsPerCall === undefined
      ? ""
      : `; server ${f.serverCpuUsPerCall.toFixed(0)} µs CPU/call ` +
        `(median of ${f.cpuRounds} ${f.cpuRoundsQuiet ? "quiet" : "(none quiet)"} rounds)`);
  const failed = guarded.errors + open.errors;
  return [
    {
      figure: `Unary RPC, unauthenticated (raw limit), ${s.concurrency} in flight`,
      value: modeValue(open),
      goal: "—",
      result: "—",
    },
    {
      figure: `Same RPC, authenticated (guarded + verifier), ${s.concurrency} in flight`,
      value: modeValue(guarded),
      goal: "—",
      result: "—",
    },
    {
      figure: "Authenticated / unauthenticated throughput (median of adjacent round pairs)",
      value:
        `${fmtPct(ratio, 1)} (overhead ${fmtPct(1 - ratio, 1)}); ` +
        (pairsQuiet.count >= 3
          ? `${pairsQuiet.count} quiet pairs of ${pairsAll.count}`
          : `all ${pairsAll.count} pairs, ${pairsQuiet.count} quiet`) +
        `; best rounds ${fmtPct(bestRatio, 1)}` +
        (failed > 0 ? `; ${failed} failed calls` : ""),
      goal: `≥ ${fmtPct(GOALS.minGuardedRatio, 0)} (overhead ≤ ${fmtPct(1 - GOALS.minGuardedRatio, 0)})`,
      result: overheadPass(m) ? "PASS" : "FAIL",
    },
    {
      figure: "Guard's own CPU per call (in-process, cache hit) → server-bound throughput",
      value:
        `+${guardCost.guardUsPerCall.toFixed(2)} µs/call (${(guardCost.plainNsPerCall / 1000).toFixed(2)} → ` +
        `${(guardCost.guardedNsPerCall / 1000).toFixed(2)} µs)` +
        (serverBound === undefined
          ? ""
          : `; on ${open.serverCpuUsPerCall?.toFixed(0)} µs server CPU/call: ${fmtPct(serverBound, 1)} ` +
            `(overhead ${fmtPct(1 - serverBound, 1)})`),
      goal: `≥ ${fmtPct(GOALS.minGuardedRatio, 0)} (cross-check)`,
      result: serverBound === undefined ? "—" : serverBound >= GOALS.minGuardedRatio ? "PASS" : "FAIL",
    },
    {
      figure: "Verified-token cache hit rate under load",
      value: `${fmtPct(hitRate, 2)} (${hits.toLocaleString("en-US")} hits, ${misses.toLocaleString("en-US")} misses; ${tokens.length} distinct tokens)`,
      goal: "— (reported)",
      result: "—",
    },
    {
      figure: "Revocation propagation, Logout returned → other process refuses",
      value:
        `p50 ${fmtMs(rev.p50)} ms, p99 ${fmtMs(rev.p99)} ms, max ${fmtMs(rev.max)} ms (n = ${rev.count}; ` +
        `refused at the first poll ${firstPoll}/${rev.count}` +
        `${raw.timeouts > 0 ? `; ${raw.timeouts} not seen within ${s.revocationBoundMs} ms` : ""})`,
      goal: `p99 < ${GOALS.maxRevocationP99Ms} ms`,
      result: revocationPass(m) ? "PASS" : "FAIL",
    },
    {
      figure: "Login latency (client-observed, sequential)",
      value: `p50 ${fmtMs(login.p50)} ms, p99 ${fmtMs(login.p99)} ms (n = ${login.count})`,
      goal: "— (reported)",
      result: "—",
    },
    {
      figure: "argon2id verify alone (m = 19 MiB, t = 2, p = 1)",
      value: `p50 ${fmtMs(argon2.p50)} ms, p99 ${fmtMs(argon2.p99)} ms; share of login p50 ${fmtPct(share, 0)}`,
      goal: "— (reported)",
      result: "—",
    },
  ];
}

function reportNotes(m: Measured): string[] {
  const { ratio, pairs } = m.throughput;
  const { serverBound } = m.guard;
  const { rev } = m.revocation;
  const notes: string[] = [];
  if (!overheadPass(m)) {
    notes.push(
      `Authenticated throughput is ${fmtPct(ratio, 1)} of unauthenticated, below the ${fmtPct(GOALS.minGuardedRatio, 0)} goal.`,
    );
  }
  if (serverBound !== undefined && serverBound >= GOALS.minGuardedRatio !== overheadPass(m)) {
    notes.push(
      `The measured throughput ratio (${fmtPct(ratio, 1)}) and the server-bound estimate from the guard's ` +
        `own cost (${fmtPct(serverBound, 1)}) disagree about the goal: other jobs on the machine set the pace.`,
    );
  }
  if (pairs.quiet.length < 3) {
    notes.push(
      `Only ${pairs.quiet.length} pair(s) of rounds ran with the rest of the machine quiet: ` +
        "the throughput ratio is the median of all pairs and carries their noise.",
    );
  }
  if (!revocationPass(m)) notes.push(`Revocation p99 ${fmtMs(rev.p99)} ms misses the < 1 s goal.`);
  return notes;
}

/** The measurements as the JSON report records them. */
function reportBody(m: Measured, s: Settings) {
  const t = m.throughput;
  const r = m.revocation;
  return {
    throughput: {
      open: t.open,
      guarded: t.guarded,
      ratio: t.ratio,
      overhead: 1 - t.ratio,
      bestRoundsRatio: t.bestRatio,
      pairRatios: t.pairs,
      serverCpuRatio: t.cpuRatio,
      guardCost: m.guard.cost,
      serverBoundRatio: m.guard.serverBound,
      goalMinRatio: GOALS.minGuardedRatio,
    },
    rounds: t.load.rounds,
    warmupErrors: t.load.warmupErrors,
    errorSamples: t.load.errorSamples,
    cache: {
      hits: t.hits,
      misses: t.misses,
      hitRate: t.hitRate,
      distinctTokens: t.tokens.length,
      before: t.statsBefore,
      after: t.statsAfter,
    },
    echoStatsAtEnd: m.statsEnd,
    revocation: {
      delayMs: r.rev,
      polls: r.polls,
      refusedAtFirstPoll: r.firstPoll,
      timeouts: r.raw.timeouts,
      pollMs: s.pollMs,
      goalP99Ms: GOALS.maxRevocationP99Ms,
      samplesMs: r.raw.delaysMs,
    },
    login: { latencyMs: m.logins.login, argon2Ms: m.logins.argon2, argon2ShareOfP50: m.logins.share },
    results: { overhead: overheadPass(m) ? "PASS" : "FAIL", revocation: revocationPass(m) ? "PASS" : "FAIL" },
  };
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    log(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  },
);
