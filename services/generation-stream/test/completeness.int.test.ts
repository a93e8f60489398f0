// Issue 10, "Verifiable completeness": the terminal event carries a TranscriptDigest (last sequence,
// number of output deltas, running SHA-256 of the output text) written where the terminal event is
// written, for every writer: a built-in worker, an external producer (ProduceGeneration), a cancel
// of a queued generation, the sweeper ending a lost producer's generation. The real transcript
// verifies (@spool/transcript, which the CLI uses); one byte changed or one event dropped does not.
import { createHash } from "node:crypto";
import { type ClientDuplexStream, status } from "@grpc/grpc-js";
import type {
  GenerationEvent,
  ProduceGenerationRequest,
  ProduceGenerationResponse,
} from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { type TranscriptItem, verifyTranscript } from "@spool/transcript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openFollow } from "./follow-client.js";
import { authCall, bearer, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("gencomplete");
let stack: Stack;
let userToken: string;
let producerToken: string;

beforeAll(async () => {
  stack = await startStack(infra(), {
    SPOOL_EXTERNAL_MODELS: "external",
    SPOOL_LEASE_MS: "1500",
    SPOOL_LIMIT_MAX_ACTIVE: "20",
    SPOOL_BUILTIN_LENGTH: "120",
    SPOOL_COALESCE_MAX_CHARS: "16",
  });
  const a = stack.auth.client;
  userToken = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
  const sa = await authCall(
    a.createServiceAccount,
    a,
    { name: "producer", scopes: ["gen:produce"] },
    userToken,
  );
  producerToken = (
    await authCall(a.exchangeClientCredentials, a, {
      clientId: sa.serviceAccount!.serviceAccountId,
      clientSecret: sa.clientSecret,
      scopes: [],
    })
  ).accessToken;
});
afterAll(async () => {
  await stack?.stop();
});

async function start(requestId: string, model: string): Promise<string> {
  const r = await call(
    stack.client.startGeneration,
    stack.client,
    startRequest(requestId, "hello", { model }),
    userToken,
  );
  return r.generation!.generationId;
}

/** Follows from 0 to the end: every item. */
async function transcript(generationId: string): Promise<TranscriptItem[]> {
  const f = openFollow(stack.client, { generationId }, userToken);
  const end = await f.done;
  expect(end.how).toBe("end");
  return f.items;
}

function terminalOf(items: TranscriptItem[]): GenerationEvent {
  const last = items.at(-1);
  if (last?.$case !== "event") throw new Error("no terminal event");
  return last.value;
}

/** The digest against the service's own record (GetGeneration) and an independent SHA-256. */
async function expectDigestOf(generationId: string, items: TranscriptItem[]) {
  const v = verifyTranscript(items);
  expect(v).toMatchObject({ verified: true, problem: undefined });
  const t = terminalOf(items);
  const stored = (await call(stack.client.getGeneration, stack.client, { generationId }, userToken))
    .generation!;
  expect(v.text).toBe(stored.text);
  expect(Number(t.transcript?.lastSequence)).toBe(Number(stored.lastSequence));
  expect(Number(t.transcript?.lastSequence)).toBe(Number(t.sequence));
  expect(Buffer.from(t.transcript!.textSha256).toString("hex")).toBe(
    createHash("sha256").update(Buffer.from(stored.text, "utf8")).digest("hex"),
  );
  expect(Number(t.transcript?.outputEvents)).toBe(
    items.filter((i) => i.$case === "event" && i.value.event?.$case === "delta").length,
  );
  return v;
}

function produce() {
  const stream: ClientDuplexStream<ProduceGenerationRequest, ProduceGenerationResponse> =
    stack.client.produceGeneration(bearer(producerToken));
  const done = new Promise<number>((resolve) => {
    stream.on("data", () => {});
    stream.on("error", (e: { code: number }) => resolve(e.code));
    stream.on("end", () => resolve(status.OK));
  });
  return { send: (m: ProduceGenerationRequest) => stream.write(m), end: () => stream.end(), done };
}

const claim = (generationId: string) =>
  call(stack.client.claimGeneration, stack.client, { generationId, waitMs: 0 }, producerToken);

describe("the terminal event proves the transcript", () => {
  it("built-in worker: the real transcript verifies; one byte changed or one event dropped does not", async () => {
    const id = await start("builtin-1", "builtin");
    const items = await transcript(id);
    const deltas = items.filter((i) => i.$case === "event" && i.value.event?.$case === "delta");
    expect(deltas.length).toBeGreaterThan(3);
    await expectDigestOf(id, items);

    // One byte changed in one delta (a copy: the real items stay intact).
    const changed = structuredClone(items);
    const victim = changed.find((i) => i.$case === "event" && i.value.event?.$case === "delta");
    if (victim?.$case !== "event" || victim.value.event?.$case !== "delta") throw new Error("no delta");
    const text = victim.value.event.value.text;
    victim.value.event.value.text = String.fromCharCode(text.charCodeAt(0) ^ 1) + text.slice(1);
    expect(verifyTranscript(changed)).toMatchObject({
      verified: false,
      problem: expect.stringMatching(/SHA-256/),
    });

    // One event dropped: a delta from the middle.
    const middle = items.indexOf(deltas[Math.floor(deltas.length / 2)]!);
    const dropped = items.filter((_, i) => i !== middle);
    expect(verifyTranscript(dropped)).toMatchObject({
      verified: false,
      problem: expect.stringMatching(/missing/),
    });
    // ... and the later ones renumbered to hide the gap: the count and the hash still tell.
    const renumbered = structuredClone(dropped);
    renumbered.forEach((item, i) => {
      if (item.$case === "event") item.value.sequence = BigInt(i + 1);
    });
    expect(verifyTranscript(renumbered).verified).toBe(false);
    // A transcript cut before its terminal event proves nothing.
    expect(verifyTranscript(items.slice(0, -1)).verified).toBe(false);
  });

  it("external producer (ProduceGeneration): multi-byte text, completed; and a producer-reported failure", async () => {
    const id = await start("ext-ok", "external");
    const lease = (await claim(id)).lease!;
    const p = produce();
    p.send({ item: { $case: "lease", value: lease } });
    for (const text of ["Grüße ", "日本語 ", "🙂", "", " done"])
      p.send({ item: { $case: "delta", value: { text } } });
    p.send({ item: { $case: "toolCall", value: { callId: "c1", toolName: "t", argumentsJson: "{}" } } });
    p.send({ item: { $case: "completed", value: { usage: { promptTokens: 1n, completionTokens: 5n } } } });
    p.end();
    expect(await p.done).toBe(status.OK);
    const items = await transcript(id);
    const v = await expectDigestOf(id, items);
    expect(v.text).toBe("Grüße 日本語 🙂 done");
    expect(Number(terminalOf(items).transcript?.outputEvents)).toBe(5);

    const failed = await start("ext-failed", "external");
    const lease2 = (await claim(failed)).lease!;
    const q = produce();
    q.send({ item: { $case: "lease", value: lease2 } });
    q.send({ item: { $case: "delta", value: { text: "partial" } } });
    q.send({ item: { $case: "failed", value: { reason: 5, message: "gave up", usage: undefined } } });
    q.end();
    expect(await q.done).toBe(status.OK);
    const failedItems = await transcript(failed);
    expect(terminalOf(failedItems).event?.$case).toBe("failed");
    expect((await expectDigestOf(failed, failedItems)).text).toBe("partial");
  });

  it("a queued generation cancelled, and a lost producer's generation ended by the sweeper, carry the digest too", async () => {
    const cancelled = await start("ext-cancel", "external");
    await call(stack.client.cancelGeneration, stack.client, { generationId: cancelled }, userToken);
    const c = await transcript(cancelled);
    expect(terminalOf(c).event?.$case).toBe("cancelled");
    expect(Number(terminalOf(c).transcript?.outputEvents)).toBe(0);
    await expectDigestOf(cancelled, c);

    // A producer writes output, then stops renewing: the sweeper fails the generation after its lease.
    const lost = await start("ext-lost", "external");
    const lease = (await claim(lost)).lease!;
    const p = produce();
    p.send({ item: { $case: "lease", value: lease } });
    p.send({ item: { $case: "delta", value: { text: "before the producer vanished" } } });
    await eventually(
      async () =>
        (await call(stack.client.getGeneration, stack.client, { generationId: lost }, userToken)).generation
          ?.status === 4,
      { timeoutMs: 15_000 },
    );
    p.end();
    const l = await transcript(lost);
    expect(terminalOf(l).event?.$case).toBe("failed");
    expect((await expectDigestOf(lost, l)).text).toBe("before the producer vanished");
  });
});
