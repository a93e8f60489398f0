// The Spool side's clients, a process of their own: starts generations with
// the built-in model and follows each with F FollowGeneration streams spread
// over a few gRPC connections, counting every event, checking each stream's
// sequence (no gap, no duplicate, ends with its terminal event) and recording
// the delay from the event's producer append time (GenerationEvent.timeMs) to
// receipt. A cancel plan measures Cancel returning → terminal `cancelled`
// event received instead. Reads its plan from SPOOL_BENCH_GEN_PLAN, prints
// one result line.
import { type ClientReadableStream, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import {
  type FollowGenerationResponse,
  GenerationServiceClient,
  GenerationStatus,
  type StartGenerationRequest,
} from "@spool/proto/spool/generation/v1/generation.js";
import { summarize } from "../lib/summary.js";
import { type Driver, driveThroughput, type Sink } from "./drive.js";
import {
  type CancelPlan,
  type CancelResult,
  errorText,
  PLAN_ENV,
  type Plan,
  printResult,
  type StreamTrack,
  sleep,
  type ThroughputPlan,
  wallClock,
} from "./shared.js";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function bearer(token: string): Metadata {
  const m = new Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}

function connect(target: string, count: number): GenerationServiceClient[] {
  // Each client its own HTTP/2 connection (grpc-js shares one between equal clients otherwise).
  return Array.from(
    { length: count },
    () =>
      new GenerationServiceClient(target, credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      }),
  );
}

/** Tokens in a delta's text: the built-in model writes "word", then " word" per token. */
function tokensIn(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 32) n++;
  return n === 0 ? 1 : n;
}

function unary<Req, Res>(
  method: (
    req: Req,
    md: Metadata,
    options: { deadline: number },
    cb: (err: ServiceError | null, res: Res) => void,
  ) => unknown,
  client: GenerationServiceClient,
  req: Req,
  md: Metadata,
  deadlineMs = 30_000,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, req, md, { deadline: Date.now() + deadlineMs }, (err, res) =>
      err ? reject(err) : resolve(res),
    );
  });
}

function startRequest(label: string, g: number, maxTokens?: number): StartGenerationRequest {
  return {
    clientRequestId: `${label}-${g}`,
    model: "builtin",
    messages: [{ role: "user", content: `bench ${label} generation ${g}`, toolCalls: [] }],
    parameters: maxTokens === undefined ? undefined : { maxTokens },
    toolIds: [],
    fileIds: [],
    conversationId: label,
    tools: [],
  };
}

function pick<T>(xs: readonly T[], i: number): T {
  const x = xs[i % xs.length];
  if (x === undefined) throw new Error("empty list");
  return x;
}

class SpoolDriver implements Driver {
  readonly firstSequence = 1;
  readonly terminalKind = "completed";
  readonly #plan: ThroughputPlan;
  readonly #clients: GenerationServiceClient[];
  readonly #md: Metadata;
  readonly #ids = new Map<number, string>();
  readonly #calls = new Set<ClientReadableStream<FollowGenerationResponse>>();

  constructor(plan: ThroughputPlan) {
    this.#plan = plan;
    this.#clients = connect(plan.target, plan.connections);
    this.#md = bearer(plan.token);
  }

  async open(g: number, tracks: StreamTrack[], sink: Sink): Promise<void> {
    const starter = pick(this.#clients, g);
    const res = await unary(
      starter.startGeneration,
      starter,
      startRequest(this.#plan.label, g, this.#plan.tokens),
      this.#md,
    );
    const id = res.generation?.generationId;
    if (!id) throw new Error("StartGeneration returned no generation");
    this.#ids.set(g, id);
    tracks.forEach((t, f) => {
      const client = pick(this.#clients, g * tracks.length + f);
      const call = client.followGeneration({ generationId: id, afterSequence: 0n }, this.#md);
      this.#calls.add(call);
      call.on("data", (r: FollowGenerationResponse) => {
        if (r.item?.$case !== "event") return;
        const e = r.item.value;
        const body = e.event;
        sink.delivery(
          t,
          Number(e.sequence),
          Number(e.timeMs),
          body?.$case === "delta" ? tokensIn(body.value.text) : 0,
        );
        if (body && TERMINAL.has(body.$case)) sink.terminal(t, body.$case);
      });
      call.on("end", () => {
        this.#calls.delete(call);
        sink.ended(t);
      });
      call.on("error", (err: ServiceError) => {
        this.#calls.delete(call);
        sink.ended(t, `follow ${err.code}: ${err.details || err.message}`);
      });
    });
  }

  async lastSequences(): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    const entries = [...this.#ids.entries()];
    let next = 0;
    const worker = async () => {
      while (next < entries.length) {
        const [g, id] = entries[next++] ?? [];
        if (g === undefined || id === undefined) continue;
        const client = pick(this.#clients, g);
        try {
          const r = await unary(client.getGeneration, client, { generationId: id }, this.#md, 10_000);
          const st = r.generation?.status;
          if (
            st === GenerationStatus.GENERATION_STATUS_COMPLETED ||
            st === GenerationStatus.GENERATION_STATUS_FAILED ||
            st === GenerationStatus.GENERATION_STATUS_CANCELLED
          ) {
            out.set(g, Number(r.generation?.lastSequence ?? 0));
          }
        } catch {
          // unknown: the check falls back to what the followers saw
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    return out;
  }

  close(): void {
    for (const c of this.#calls) c.cancel();
    for (const c of this.#clients) c.close();
  }
}

async function cancelLatency(plan: CancelPlan): Promise<CancelResult> {
  const clock = wallClock();
  const clients = connect(plan.target, 2);
  const md = bearer(plan.token);
  const errorSamples: string[] = [];
  const note = (s: string) => {
    if (errorSamples.length < 5) errorSamples.push(s);
  };
  interface Item {
    id: string;
    deltas: number;
    terminalAt: number | undefined;
    terminalKind: string | undefined;
    call: ClientReadableStream<FollowGenerationResponse>;
  }
  const items: Item[] = [];
  const terminalSeen = new Map<number, () => void>();
  // Start every generation and follow each (the model runs until cancelled).
  for (let g = 0; g < plan.count; g++) {
    const client = pick(clients, g);
    const res = await unary(client.startGeneration, client, startRequest(plan.label, g), md);
    const id = res.generation?.generationId ?? "";
    const call = client.followGeneration({ generationId: id, afterSequence: 0n }, md);
    const item: Item = { id, deltas: 0, terminalAt: undefined, terminalKind: undefined, call };
    call.on("data", (r: FollowGenerationResponse) => {
      if (r.item?.$case !== "event") return;
      const kind = r.item.value.event?.$case;
      if (kind === "delta") item.deltas++;
      else if (kind && TERMINAL.has(kind)) {
        item.terminalAt = clock();
        item.terminalKind = kind;
        terminalSeen.get(g)?.();
      }
    });
    call.on("error", (e: ServiceError) => note(`follow ${e.code}: ${e.details}`));
    items.push(item);
  }
  const until = Date.now() + 30_000;
  while (items.some((i) => i.deltas < plan.deltasBeforeCancel) && Date.now() < until) await sleep(20);
  const sent: number[] = [];
  const returned: number[] = [];
  const waits: Promise<void>[] = [];
  for (let g = 0; g < items.length; g++) {
    const item = items[g];
    if (!item) continue;
    await sleep(plan.spacingMs);
    const done = Promise.withResolvers<void>();
    if (item.terminalAt !== undefined) done.resolve();
    else terminalSeen.set(g, done.resolve);
    waits.push(Promise.race([done.promise, sleep(plan.terminalTimeoutMs)]));
    const client = pick(clients, g);
    sent[g] = clock();
    try {
      await unary(client.cancelGeneration, client, { generationId: item.id }, md, 10_000);
    } catch (e) {
      note(`cancel: ${errorText(e)}`);
    }
    returned[g] = clock();
  }
  await Promise.all(waits);
  const latency: number[] = [];
  const fromSend: number[] = [];
  const call: number[] = [];
  let before = 0;
  let timeouts = 0;
  let notCancelled = 0;
  items.forEach((item, g) => {
    const s = sent[g] ?? Number.NaN;
    const r = returned[g] ?? Number.NaN;
    call.push(r - s);
    if (item.terminalAt === undefined) {
      timeouts++;
      latency.push(plan.terminalTimeoutMs);
      fromSend.push(plan.terminalTimeoutMs);
      return;
    }
    if (item.terminalKind !== "cancelled") notCancelled++;
    if (item.terminalAt < r) before++;
    latency.push(Math.max(0, item.terminalAt - r));
    fromSend.push(item.terminalAt - s);
  });
  for (const item of items) item.call.cancel();
  for (const c of clients) c.close();
  return {
    kind: "cancel",
    count: items.length,
    latencyMs: summarize(latency),
    fromSendMs: summarize(fromSend),
    terminalBeforeReturn: before,
    callMs: summarize(call),
    notCancelled,
    timeouts,
    errorSamples,
  };
}

async function main(): Promise<void> {
  const raw = process.env[PLAN_ENV];
  if (!raw) throw new Error(`${PLAN_ENV} is not set`);
  const plan = JSON.parse(raw) as Plan;
  if (plan.kind === "throughput") printResult(await driveThroughput(plan, new SpoolDriver(plan)));
  else printResult(await cancelLatency(plan));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`followers failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
