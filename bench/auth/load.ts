// The load generator of the auth benchmark, a process of its own: a closed
// loop of `concurrency` unary calls (AdminService.ListProjections) against the
// echo server's guarded and open ports, in rounds. Every call carries a
// bearer token, taken round-robin from the token file, on both ports: the
// requests are byte for byte alike, only the server's work differs.
// Reads its plan from SPOOL_BENCH_AUTH_LOAD_PLAN; prints one result line.
import { readFileSync } from "node:fs";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import { machineBusySeconds, processCpuSeconds, waitForQuiet } from "../lib/cpu.js";
import { summarize } from "../lib/summary.js";
import { bearerMetadata, insecure, type Metadata } from "./grpc.js";
import {
  type CpuCores,
  LOAD_PLAN_ENV,
  LOAD_RESULT_PREFIX,
  type LoadPlan,
  type LoadResult,
  type Mode,
  type RoundResult,
} from "./shared.js";

const raw = process.env[LOAD_PLAN_ENV];
if (!raw) throw new Error(`${LOAD_PLAN_ENV} is not set`);
const plan = JSON.parse(raw) as LoadPlan;
const metadata: Metadata[] = readFileSync(plan.tokensFile, "utf8")
  .split("\n")
  .filter((t) => t.length > 0)
  .map(bearerMetadata);
if (metadata.length === 0) throw new Error(`no tokens in ${plan.tokensFile}`);

// Each client its own HTTP/2 connection (grpc-js shares one between equal clients otherwise).
const connect = (port: number): AdminServiceClient[] =>
  Array.from(
    { length: plan.connections },
    () => new AdminServiceClient(`127.0.0.1:${port}`, insecure(), { "grpc.use_local_subchannel_pool": 1 }),
  );
const clients: Record<Mode, AdminServiceClient[]> = {
  open: connect(plan.ports.open),
  guarded: connect(plan.ports.guarded),
};
const errorSamples: string[] = [];
let nextToken = 0;

function callOnce(client: AdminServiceClient): Promise<Error | null> {
  const md = metadata[nextToken++ % metadata.length] as Metadata;
  return new Promise((resolve) => {
    client.listProjections({}, md, { deadline: Date.now() + plan.callDeadlineMs }, (err) => resolve(err));
  });
}

interface Driven {
  calls: number;
  errors: number;
  seconds: number;
  latencies: number[];
}

/** Runs the closed loop for `ms`; calls in flight at the end finish and count. */
async function drive(mode: Mode, ms: number): Promise<Driven> {
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const end = start + ms;
  const worker = async (w: number) => {
    const client = clients[mode][w % plan.connections] as AdminServiceClient;
    while (performance.now() < end) {
      const t = performance.now();
      const err = await callOnce(client);
      if (err) {
        errors++;
        if (errorSamples.length < 5) errorSamples.push(`${mode}: ${err.message}`);
      } else {
        latencies.push(performance.now() - t);
      }
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency }, (_, w) => worker(w)));
  return { calls: latencies.length, errors, seconds: (performance.now() - start) / 1000, latencies };
}

function cpuSampler(): () => CpuCores | undefined {
  const at = performance.now();
  const server = processCpuSeconds(plan.serverPid);
  const self = process.cpuUsage();
  const busy = machineBusySeconds();
  return () => {
    const seconds = (performance.now() - at) / 1000;
    const server2 = processCpuSeconds(plan.serverPid);
    const busy2 = machineBusySeconds();
    if (server === undefined || server2 === undefined || busy === undefined || busy2 === undefined) {
      return undefined;
    }
    const used = process.cpuUsage(self);
    const load = (used.user + used.system) / 1e6 / seconds;
    const srv = (server2 - server) / seconds;
    const round = (n: number) => Math.round(n * 100) / 100;
    return {
      server: round(srv),
      load: round(load),
      other: round(Math.max(0, (busy2 - busy) / seconds - srv - load)),
    };
  };
}

async function main(): Promise<void> {
  let warmupErrors = 0;
  for (const mode of ["open", "guarded"] as const) warmupErrors += (await drive(mode, plan.warmupMs)).errors;
  const rounds: RoundResult[] = [];
  for (const mode of plan.rounds) {
    // Other jobs on a shared machine only ever slow a round down; give them a moment to pass.
    const otherLoad = await waitForQuiet(plan.quietWaitMs);
    const serverBefore = processCpuSeconds(plan.serverPid);
    const cpu = cpuSampler();
    const d = await drive(mode, plan.roundMs);
    const serverAfter = processCpuSeconds(plan.serverPid);
    rounds.push({
      mode,
      calls: d.calls,
      errors: d.errors,
      seconds: d.seconds,
      rate: d.calls / d.seconds,
      latencyMs: summarize(d.latencies),
      cpu: cpu(),
      otherLoadBefore: otherLoad,
      serverCpuUsPerCall:
        serverBefore !== undefined && serverAfter !== undefined && d.calls > 0
          ? ((serverAfter - serverBefore) * 1e6) / d.calls
          : undefined,
    });
  }
  for (const c of Object.values(clients).flat()) c.close();
  const result: LoadResult = { rounds, warmupErrors, errorSamples };
  process.stdout.write(`${LOAD_RESULT_PREFIX} ${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(
      `load generator failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exit(1);
  },
);
