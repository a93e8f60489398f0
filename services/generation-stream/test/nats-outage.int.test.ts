// A NATS outage while a generation produces (issue 7, item 13): transient
// errors (timeouts, no responders, disconnection) are retried within the
// lease, so the generation completes; only a lost or lapsed lease stops it.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errors, type NatsConnection } from "@nats-io/transport-node";
import {
  type AppendOptions,
  type AppendResult,
  connectNats,
  createLogger,
  EventStore,
  Namespace,
  NatsDisconnectedError,
  type NewEvent,
  type Principal,
} from "@spool/kit";
import { type GenerationEvent, GenerationStatus } from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, describe, expect, it } from "vitest";
import { Generations } from "../src/app/generations.js";
import { isTerminal, OutputLog } from "../src/app/output-log.js";
import { GenerationWorker } from "../src/app/worker.js";
import {
  GEN_STREAM,
  GenerationFinished,
  GenerationLeaseRenewed,
  OutputEvent,
  outputStream,
  Subjects,
} from "../src/domain/events.js";
import { generationReducer } from "../src/domain/generation.js";
import type { UserLimits } from "../src/limits/user-limits.js";
import { BuiltinModel, type ModelProvider } from "../src/providers/index.js";

type Match = (subject: string, events: readonly NewEvent[]) => boolean;
interface Fault {
  match: Match;
  /** "before": the append never reaches NATS; "after": it is stored but its acknowledgement is lost. */
  when: "before" | "after";
  error: () => Error;
  hit: boolean;
}

/** An event store that fails chosen appends once each, as a NATS outage would. */
class FaultyStore extends EventStore {
  readonly faults: Fault[] = [];

  inject(match: Match, when: Fault["when"], error: () => Error): void {
    this.faults.push({ match, when, error, hit: false });
  }

  override async append(
    subject: string,
    events: readonly NewEvent[],
    options?: AppendOptions,
  ): Promise<AppendResult> {
    const fault = this.faults.find((f) => !f.hit && f.match(subject, events));
    if (fault) fault.hit = true;
    if (fault?.when === "before") throw fault.error();
    const result = await super.append(subject, events, options);
    if (fault?.when === "after") throw fault.error();
    return result;
  }
}

const infra = useInfra("genoutage");
const logger = createLogger({ service: "outage-test", level: "silent" });
const caller: Principal = {
  kind: "user",
  subject: "u-outage",
  sessionId: "s1",
  orgId: "o1",
  roles: ["owner"],
  scopes: [],
  tokenId: "t1",
  expiresAtMs: Date.now() + 3_600_000,
  issuedAtMs: Date.now(),
  issuer: "spool-auth",
  audience: ["spool.generation"],
};
const noLimits = {
  reserve: async () => {},
  release: async () => {},
  refresh: async () => {},
} as unknown as UserLimits;
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const outputOf =
  (...cases: string[]): Match =>
  (subject, events) =>
    subject.startsWith("gen.output.") &&
    events.some((e) => cases.includes(OutputEvent.decode(e.data).event?.$case ?? ""));
const lifecycleOf =
  (type: string): Match =>
  (subject, events) =>
    subject.startsWith("gen.generation.") && events.some((e) => e.type === type);

/** What the model says for the request, read straight from it. */
async function expectedText(model: ModelProvider): Promise<string> {
  let text = "";
  for await (const c of model.stream({
    model: "builtin",
    messages: [{ role: "user", content: "go", toolCalls: [] }],
    params: {},
    signal: new AbortController().signal,
  }))
    if (c.kind === "delta") text += c.text;
  return text;
}

async function stack(store: EventStore, model: ModelProvider, leaseMs: number) {
  await store.ensureStream(GEN_STREAM);
  await store.ensureStream(outputStream(3_600_000));
  const output = new OutputLog(store);
  const generations = new Generations({
    store,
    output,
    limits: noLimits,
  });
  const worker = new GenerationWorker({
    store,
    output,
    limits: noLimits,
    logger,
    lease: { leaseMs, safetyMarginMs: Math.floor(leaseMs / 10) },
    providers: new Map([["builtin", model]]),
    maxConcurrent: 4,
    coalesceWindowMs: 0,
    coalesceMaxChars: 1,
    replica: "outage",
    drainMs: 0,
  });
  await worker.start();
  cleanups.push(() => worker.stop());
  const start = async (requestId: string) =>
    (
      await generations.start(caller, {
        clientRequestId: requestId,
        model: "builtin",
        messages: [{ role: "user", content: "go", toolCalls: [] }],
        parameters: undefined,
        toolIds: [],
        fileIds: [],
        conversationId: "",
        tools: [],
      })
    ).generation.request.generationId;
  return { output, start };
}

async function outputEvents(store: EventStore, id: string): Promise<GenerationEvent[]> {
  const events: GenerationEvent[] = [];
  for await (const batch of store.readSubject(Subjects.output(id)))
    for (const e of batch) events.push(OutputEvent.decode(e.data));
  return events;
}

/** Completed, with the model's whole text, one terminal event at the lifecycle's last sequence. */
async function assertCompleted(store: EventStore, id: string, text: string): Promise<void> {
  store.forget(Subjects.generation(id));
  const { state } = await store.load(Subjects.generation(id), generationReducer);
  const events = await outputEvents(store, id);
  const kinds = events.map((e) => e.event?.$case);
  expect(state.kind, kinds.join(",")).toBe("finished");
  if (state.kind !== "finished") return;
  expect(state.outcome?.status, state.outcome?.failureMessage).toBe(
    GenerationStatus.GENERATION_STATUS_COMPLETED,
  );
  expect(state.outcome?.text).toBe(text);
  expect(kinds[0]).toBe("created");
  expect(kinds.filter((k) => k === "started")).toHaveLength(1);
  expect(events.map((e) => Number(e.sequence))).toEqual(events.map((_, i) => i + 1));
  expect(events.filter((e) => isTerminal(e.event)).map((e) => e.event?.$case)).toEqual(["completed"]);
  expect(state.outcome?.lastSequence).toBe(Number(events.at(-1)?.sequence));
  expect(events.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("")).toBe(text);
}

async function finished(store: EventStore, id: string): Promise<void> {
  await eventually(
    async () => {
      try {
        store.forget(Subjects.generation(id));
        return (await store.load(Subjects.generation(id), generationReducer)).state.kind === "finished";
      } catch {
        return false; // NATS still away
      }
    },
    { timeoutMs: 60_000, what: "the generation finished" },
  );
}

describe("transient NATS errors while a generation produces", () => {
  it("appends, renewals and the finish that time out, find no responders or meet a reconnect are retried within the lease: the generation completes", async () => {
    const slice = infra();
    const nc = await connectNats({ url: slice.natsUrl, name: "outage-test" });
    cleanups.push(() => nc.close());
    const store = new FaultyStore(nc, { namespace: new Namespace(`${slice.streamPrefix}_f`) });
    const model = new BuiltinModel({ tokensPerSecond: 40, length: 60 });
    const timeout = () => new errors.TimeoutError();
    const noResponders = () =>
      new errors.RequestError("no responders", { cause: new errors.NoRespondersError("$JS.API") });
    // Output appends: lost on the way, refused, stored with the acknowledgement lost, refused while reconnecting.
    store.inject(outputOf("delta"), "before", timeout);
    store.inject(outputOf("delta"), "before", noResponders);
    store.inject(outputOf("delta"), "after", timeout);
    store.inject(outputOf("delta"), "before", () => new NatsDisconnectedError());
    store.inject(outputOf("usage"), "after", timeout);
    store.inject(outputOf("completed"), "after", timeout);
    // The lease renewals and the lifecycle's finish.
    store.inject(lifecycleOf(GenerationLeaseRenewed.type), "before", timeout);
    store.inject(lifecycleOf(GenerationLeaseRenewed.type), "after", timeout);
    store.inject(lifecycleOf(GenerationFinished.type), "before", noResponders);
    const { start } = await stack(store, model, 1_500);
    const id = await start("flaky");
    await finished(store, id);
    expect(store.faults.map((f) => f.hit)).toEqual(store.faults.map(() => true));
    await assertCompleted(store, id, await expectedText(model));
  });

  it("a NATS server restart while a generation produces: it completes without failing", async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "spool-nats-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    let server = startNats(port, dir);
    cleanups.push(() => void server.kill("SIGKILL"));
    const url = `nats://127.0.0.1:${port}`;
    await eventually(async () => {
      const probe = await connectNats({ url, name: "probe" }).catch(() => undefined);
      await probe?.close();
      return probe !== undefined;
    });
    const nc: NatsConnection = await connectNats({ url, name: "outage-test" });
    cleanups.push(() => nc.close());
    const store = new EventStore(nc, { namespace: new Namespace("restart") });
    const model = new BuiltinModel({ tokensPerSecond: 25, length: 100 });
    const { start } = await stack(store, model, 6_000);
    const id = await start("restart");
    // Some output is out, then NATS goes away mid-generation and comes back within the lease.
    await eventually(
      async () => (await outputEvents(store, id)).filter((e) => e.event?.$case === "delta").length >= 5,
      { timeoutMs: 20_000, what: "output before the restart" },
    );
    server.kill("SIGKILL");
    await new Promise((r) => server.once("exit", r));
    await new Promise((r) => setTimeout(r, 1_000));
    server = startNats(port, dir);
    await finished(store, id);
    await assertCompleted(store, id, await expectedText(model));
  });
});

function startNats(port: number, dir: string): ChildProcess {
  return spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dir], {
    stdio: "ignore",
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
