// Fencing and finishing under every interleaving (issue 7, items 10–12): a
// producer frozen at its lease's edge, the lease sweeper, a cancel and a
// start, paused at chosen points by a gated event store and a fake clock, so
// each interleaving is reproduced exactly rather than hoped for by timing.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AppendOptions,
  type AppendResult,
  connectNats,
  createLogger,
  EventStore,
  FailedPreconditionError,
  Namespace,
  type NewEvent,
  type Principal,
} from "@spool/kit";
import {
  FailureReason,
  type GenerationEvent,
  GenerationStatus,
} from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Generations } from "../src/app/generations.js";
import { isTerminal, OutputLog } from "../src/app/output-log.js";
import { type LeasePolicy, ProducerSession } from "../src/app/producer.js";
import { LeaseSweeper } from "../src/app/sweeper.js";
import { GEN_STREAM, GenerationFinished, OutputEvent, outputStream, Subjects } from "../src/domain/events.js";
import { generationReducer, type Producer, StaleLeaseError } from "../src/domain/generation.js";
import type { UserLimits } from "../src/limits/user-limits.js";

type Match = (subject: string, events: readonly NewEvent[]) => boolean;
interface Gate {
  /** Resolves when a matching append is about to be published (it waits for release). */
  reached: Promise<void>;
  release(): void;
  /** Disarms the gate if nothing reached it. */
  cancel(): void;
}

/** An event store whose next append matching a gate waits until the test releases it. */
class GatedStore extends EventStore {
  readonly #gates: { match: Match; reached: () => void; released: Promise<void> }[] = [];

  pauseNext(match: Match): Gate {
    let reached!: () => void;
    let release!: () => void;
    const gate = {
      match,
      reached: () => reached(),
      released: new Promise<void>((r) => {
        release = r;
      }),
    };
    const reachedP = new Promise<void>((r) => {
      reached = r;
    });
    this.#gates.push(gate);
    return {
      reached: reachedP,
      release,
      cancel: () => {
        const i = this.#gates.indexOf(gate);
        if (i >= 0) this.#gates.splice(i, 1);
        release();
      },
    };
  }

  override async append(
    subject: string,
    events: readonly NewEvent[],
    options?: AppendOptions,
  ): Promise<AppendResult> {
    const i = this.#gates.findIndex((g) => g.match(subject, events));
    if (i >= 0) {
      const [gate] = this.#gates.splice(i, 1);
      gate?.reached();
      await gate?.released;
    }
    return super.append(subject, events, options);
  }
}

const infra = useInfra("genfence");
const LEASE = 1_000;
/** Producers stop appending this close to their lease's end... */
const MARGIN = 3;
/** ...and the sweeper settles a lease only this long after it: the offsets below straddle both. */
const GRACE = 6;
const OFFSETS = Array.from({ length: 11 }, (_, i) => i - 5); // lease expiry −5 ms … +5 ms
const ROUNDS = Number(process.env.SPOOL_FENCING_ROUNDS ?? 5);

/** The producers' clock (wall and monotonic alike), moved by hand. The sweeper is given its own "now". */
const clock = { t: 1_000_000, wallMs: () => clock.t, monoMs: () => clock.t };
const policy: LeasePolicy = { leaseMs: LEASE, safetyMarginMs: MARGIN, clock };
const producer: Producer = { kind: "platform", id: "builtin:fencing" };
const caller: Principal = {
  kind: "user",
  subject: "u-fencing",
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

let nc: NatsConnection;
let store: GatedStore;
let output: OutputLog;
let generations: Generations;
let sweeper: LeaseSweeper;
const deps = () => ({ store, output, policy });

beforeAll(async () => {
  const slice = infra();
  nc = await connectNats({ url: slice.natsUrl, name: "fencing-test" });
  store = new GatedStore(nc, { namespace: new Namespace(slice.streamPrefix) });
  await store.ensureStream(GEN_STREAM);
  await store.ensureStream(outputStream(3_600_000));
  output = new OutputLog(store);
  generations = new Generations({
    store,
    output,
    limits: noLimits,
  });
  sweeper = new LeaseSweeper({
    store,
    output,
    generations: { expiredLeases: async () => [] },
    limits: noLimits,
    logger: createLogger({ service: "fencing-test", level: "silent" }),
    intervalMs: 60_000,
    graceMs: GRACE,
    clock: { wallMs: () => Number.NaN, monoMs: () => Number.NaN }, // every settle below names its "now"
  });
});
afterAll(async () => {
  await nc?.close();
});

let n = 0;
async function start(): Promise<string> {
  const { generation } = await generations.start(caller, {
    clientRequestId: `fence-${n++}`,
    model: "builtin",
    messages: [{ role: "user", content: "go", toolCalls: [] }],
    parameters: undefined,
    toolIds: [],
    fileIds: [],
    conversationId: "",
    tools: [],
  });
  return generation.request.generationId;
}

/** A running generation (optionally with some output) and when its lease expires. */
async function running(withOutput: boolean) {
  clock.t += 100_000;
  const id = await start();
  const session = await ProducerSession.claim(deps(), id, producer);
  const expiry = clock.t + LEASE;
  if (withOutput) await session.delta("first ");
  return { id, session, expiry };
}

const outputAppend =
  (id: string, ...cases: string[]): Match =>
  (subject, events) =>
    subject === Subjects.output(id) &&
    events.some((e) => cases.includes(OutputEvent.decode(e.data).event?.$case ?? ""));
const TERMINAL = ["completed", "failed", "cancelled"];
const lifecycleFinish =
  (id: string): Match =>
  (subject, events) =>
    subject === Subjects.generation(id) && events.some((e) => e.type === GenerationFinished.type);

const settled = <T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );

/** Whether the append reached the gate (true) or was refused before publishing (false). */
async function reachedOrRefused(gate: Gate, attempt: Promise<unknown>): Promise<boolean> {
  const paused = await Promise.race([gate.reached.then(() => true), attempt.then(() => false)]);
  if (!paused) gate.cancel();
  return paused;
}

async function outputEvents(id: string): Promise<GenerationEvent[]> {
  const events: GenerationEvent[] = [];
  for await (const batch of store.readSubject(Subjects.output(id)))
    for (const e of batch) events.push(OutputEvent.decode(e.data));
  return events;
}

async function lifecycle(id: string) {
  store.forget(Subjects.generation(id));
  return (await store.load(Subjects.generation(id), generationReducer)).state;
}

/** A generation left queued (its lease lapsed with nothing produced) is taken and completed by a new producer. */
async function finishUp(id: string): Promise<void> {
  if ((await lifecycle(id)).kind !== "queued") return;
  clock.t += 10_000;
  const next = await settled(ProducerSession.claim(deps(), id, producer));
  if (next.ok) {
    await next.value.delta("second ");
    await next.value.complete();
  } else {
    // The claim found the lapsed producer's late output or terminal, and ended the generation from it.
    expect(next.error).toBeInstanceOf(FailedPreconditionError);
  }
}

/**
 * The invariant: the output starts with `created`, is gap-free, and ends with
 * exactly one terminal event whose sequence is the lifecycle's lastSequence;
 * the lifecycle's status and text are what the output says.
 */
async function assertInvariant(id: string, context: string): Promise<GenerationEvent> {
  const events = await outputEvents(id);
  const kinds = events.map((e) => e.event?.$case).join(",");
  expect(events[0]?.event?.$case, `${context}: ${kinds}`).toBe("created");
  expect(
    events.map((e) => Number(e.sequence)),
    `${context}: ${kinds}`,
  ).toEqual(events.map((_, i) => i + 1));
  const terminals = events.filter((e) => isTerminal(e.event));
  expect(terminals, `${context}: ${kinds}`).toHaveLength(1);
  const last = events.at(-1)!;
  expect(isTerminal(last.event), `${context}: ${kinds}`).toBe(true);
  const state = await lifecycle(id);
  expect(state.kind, `${context}: ${kinds}`).toBe("finished");
  if (state.kind !== "finished") throw new Error("unreachable");
  expect(state.outcome?.lastSequence, `${context}: ${kinds}`).toBe(Number(last.sequence));
  const status = {
    completed: GenerationStatus.GENERATION_STATUS_COMPLETED,
    failed: GenerationStatus.GENERATION_STATUS_FAILED,
    cancelled: GenerationStatus.GENERATION_STATUS_CANCELLED,
  }[last.event!.$case as "completed"];
  expect(state.outcome?.status, context).toBe(status);
  const text = events.map((e) => (e.event?.$case === "delta" ? e.event.value.text : "")).join("");
  expect(state.outcome?.text, context).toBe(text);
  return last;
}

type Scenario = (d: number) => Promise<{ id: string; note: string }>;

/** The producer is frozen at expiry + d; a check passes only with more than MARGIN left. */
const passesCheck = (d: number) => d < -MARGIN;

const scenarios: Record<string, Scenario> = {
  "producer's delta in flight while the sweeper settles": async (d) => {
    const { id, session, expiry } = await running(true);
    clock.t = expiry + d;
    const gate = store.pauseNext(outputAppend(id, "delta"));
    const append = settled(session.delta("late "));
    const paused = await reachedOrRefused(gate, append);
    expect(paused).toBe(passesCheck(d));
    expect(await sweeper.settle(id, expiry + GRACE - 1)).toBeUndefined(); // not lapsed long enough yet
    expect(await sweeper.settle(id, expiry + GRACE)).toBe("finished");
    gate.release();
    const r = await append;
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toBeInstanceOf(StaleLeaseError);
    await settled(session.complete());
    return { id, note: `paused=${paused}` };
  },
  "sweeper's terminal in flight while the producer appends": async (d) => {
    const { id, session, expiry } = await running(true);
    clock.t = expiry + d;
    const gate = store.pauseNext(outputAppend(id, ...TERMINAL));
    const settling = sweeper.settle(id, expiry + GRACE);
    await gate.reached;
    const r = await settled(session.delta("late "));
    expect(r.ok).toBe(passesCheck(d));
    gate.release();
    expect(await settling).toBe("finished");
    await settled(session.complete());
    return { id, note: `delta landed=${r.ok}` };
  },
  "producer's terminal in flight while the sweeper settles": async (d) => {
    const { id, session, expiry } = await running(true);
    clock.t = expiry + d;
    const gate = store.pauseNext(outputAppend(id, ...TERMINAL));
    const completing = settled(session.complete());
    const paused = await reachedOrRefused(gate, completing);
    expect(paused).toBe(passesCheck(d));
    expect(await sweeper.settle(id, expiry + GRACE)).toBe("finished");
    gate.release();
    const r = await completing;
    expect(r.ok).toBe(false); // the sweeper's terminal was first: the producer's ending did not happen
    return { id, note: `paused=${paused}` };
  },
  "sweeper's terminal in flight while the producer completes": async (d) => {
    const { id, session, expiry } = await running(true);
    clock.t = expiry + d;
    const gate = store.pauseNext(outputAppend(id, ...TERMINAL));
    const settling = sweeper.settle(id, expiry + GRACE);
    await gate.reached;
    const r = await settled(session.complete());
    expect(r.ok).toBe(passesCheck(d));
    gate.release();
    expect(await settling).toBe("finished"); // adopted the producer's terminal when it was first
    const last = await assertInvariant(id, "completes");
    expect(last.event?.$case).toBe(r.ok ? "completed" : "failed");
    return { id, note: `completed=${r.ok}` };
  },
  "sweeper paused between its output terminal and the lifecycle": async (d) => {
    const { id, session, expiry } = await running(true);
    clock.t = expiry + d;
    const gate = store.pauseNext(lifecycleFinish(id));
    const settling = sweeper.settle(id, expiry + GRACE);
    await gate.reached;
    // The producer wakes: its append conflicts with the terminal (or its clock refuses it); on a
    // conflict it finds the terminal and completes the lifecycle itself.
    const r = await settled(session.delta("late "));
    expect(r.ok).toBe(false);
    gate.release();
    expect(await settling).toBe("finished");
    return { id, note: "" };
  },
  "producer dies between its output terminal and the lifecycle: the sweeper completes it": async (d) => {
    const { id, session, expiry } = await running(true);
    clock.t = expiry + d - 10; // in time
    const gate = store.pauseNext(lifecycleFinish(id));
    const completing = settled(session.complete());
    await gate.reached;
    expect(await sweeper.settle(id, expiry + GRACE)).toBe("finished");
    expect((await lifecycle(id)).kind).toBe("finished");
    gate.release(); // the "dead" producer's lifecycle append finds it done
    expect((await completing).ok).toBe(true);
    expect((await assertInvariant(id, "repaired")).event?.$case).toBe("completed");
    return { id, note: "" };
  },
  "nothing produced: in-flight delta lands after the re-queue": async (d) => {
    const { id, session, expiry } = await running(false);
    clock.t = expiry + d;
    const gate = store.pauseNext(outputAppend(id, "delta"));
    const append = settled(session.delta("late "));
    const paused = await reachedOrRefused(gate, append);
    expect(paused).toBe(passesCheck(d));
    expect(await sweeper.settle(id, expiry + GRACE)).toBe("requeued");
    gate.release();
    const r = await append;
    // Checked in time, it lands (nobody wrote since): the next claim must not show a second text.
    expect(r.ok).toBe(paused);
    await finishUp(id);
    const last = await assertInvariant(id, "late delta");
    if (paused) {
      expect(last.event?.$case).toBe("failed");
      if (last.event?.$case === "failed")
        expect(last.event.value.reason).toBe(FailureReason.FAILURE_REASON_PRODUCER_LOST);
    }
    return { id, note: `paused=${paused}` };
  },
  "nothing produced: in-flight terminal lands after the re-queue": async (d) => {
    const { id, session, expiry } = await running(false);
    clock.t = expiry + d;
    const gate = store.pauseNext(outputAppend(id, ...TERMINAL));
    const completing = settled(session.complete());
    const paused = await reachedOrRefused(gate, completing);
    expect(paused).toBe(passesCheck(d));
    expect(await sweeper.settle(id, expiry + GRACE)).toBe("requeued");
    gate.release();
    expect((await completing).ok).toBe(paused);
    await finishUp(id);
    return { id, note: `paused=${paused}` };
  },
  "producer and sweeper race freely": async (d) => {
    const { id, session, expiry } = await running(d % 2 === 0);
    clock.t = expiry + d;
    await Promise.all([
      settled(
        (async () => {
          await session.delta("late ");
          await session.usage({ promptTokens: 1n, completionTokens: 2n });
          await session.complete();
        })(),
      ),
      settled(sweeper.settle(id, expiry + GRACE)),
    ]);
    // A lapsed lease is always settled in the end, whoever went first.
    await sweeper.settle(id, expiry + GRACE + 1);
    await finishUp(id);
    return { id, note: "" };
  },
};

describe("finishing a generation under every interleaving", () => {
  it("every output ends with exactly one terminal event at the lifecycle's lastSequence: a producer frozen at its lease's expiry −5…+5 ms against the sweeper, in every interleaving, many times", {
    timeout: 600_000,
  }, async () => {
    let runs = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, scenario] of Object.entries(scenarios)) {
        for (const d of OFFSETS) {
          const { id, note } = await scenario(d);
          await finishUp(id);
          await assertInvariant(id, `${name}, offset ${d} ms ${note}`);
          runs++;
        }
      }
    }
    expect(runs).toBe(ROUNDS * Object.keys(scenarios).length * OFFSETS.length);
  });

  it("a producer whose lease has (nearly) run out appends nothing, even before anyone settled it", async () => {
    for (const d of OFFSETS) {
      const { id, session, expiry } = await running(true);
      const before = (await outputEvents(id)).length;
      clock.t = expiry + d;
      const r = await settled(session.delta("late "));
      expect(r.ok, `offset ${d}`).toBe(passesCheck(d));
      if (!r.ok) {
        expect(r.error).toBeInstanceOf(StaleLeaseError);
        expect(await outputEvents(id)).toHaveLength(before);
        await expect(session.complete()).rejects.toBeInstanceOf(StaleLeaseError);
        await expect(session.usage({ promptTokens: 1n, completionTokens: 1n })).rejects.toBeInstanceOf(
          StaleLeaseError,
        );
        expect(await outputEvents(id)).toHaveLength(before);
      }
      // A renewal in time restores it (the lifecycle decides: its lease has not expired).
      if (d < 0) {
        await session.renew();
        await session.delta("renewed ");
      }
      await sweeper.settle(id, clock.t + LEASE + GRACE);
      await finishUp(id);
      await assertInvariant(id, `offset ${d}`);
    }
  });
});

describe("every output starts with created", () => {
  /** Starts a generation and pauses the start at its `created` append (after its lifecycle append); returns the id. */
  async function startPausedBeforeCreated() {
    let id = "";
    const gate = store.pauseNext((subject, events) => {
      const created =
        subject.startsWith("gen.output.") &&
        events.some((e) => OutputEvent.decode(e.data).event?.$case === "created");
      if (created) id = subject.slice("gen.output.".length);
      return created;
    });
    const starting = start();
    await gate.reached;
    expect((await lifecycle(id)).kind).toBe("queued"); // the request is visible: a worker may claim it now
    return { id, gate, starting };
  }

  it("a producer claiming between the start's lifecycle append and its `created` writes `created` first", async () => {
    clock.t += 100_000;
    const { id, gate, starting } = await startPausedBeforeCreated();
    const session = await ProducerSession.claim(deps(), id, producer);
    gate.release();
    expect(await starting).toBe(id);
    expect((await outputEvents(id)).map((e) => e.event?.$case)).toEqual(["created", "started"]);
    await session.delta("hello");
    await session.complete();
    await assertInvariant(id, "claim between the start's appends");
  });

  it("a cancel between the start's lifecycle append and its `created` writes `created` first", async () => {
    const { id, gate, starting } = await startPausedBeforeCreated();
    const g = await generations.cancel(caller, id);
    expect(g.kind).toBe("finished");
    gate.release();
    expect(await starting).toBe(id);
    expect((await outputEvents(id)).map((e) => e.event?.$case)).toEqual(["created", "cancelled"]);
    await assertInvariant(id, "cancel between the start's appends");
  });

  it("a cancel racing a claim ends the generation once, after `created`, whichever lands first", async () => {
    for (let i = 0; i < 10; i++) {
      clock.t += 100_000;
      const id = await start();
      const [claimed] = await Promise.all([
        settled(ProducerSession.claim(deps(), id, producer)),
        generations.cancel(caller, id),
      ]);
      if (claimed.ok) {
        // A running generation's cancel is recorded for its producer, which ends it (as workers do);
        // if the cancel found it queued, its terminal already fences this producer.
        const state = await lifecycle(id);
        const ending = state.kind !== "none" && state.cancelRequested ? "cancelled" : "complete";
        await settled(claimed.value[ending]());
      }
      await assertInvariant(id, `race ${i}`);
      expect((await outputEvents(id)).at(-1)?.event?.$case).toBe("cancelled");
    }
  });
});
