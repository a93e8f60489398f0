// Issue 10, "Resume from a snapshot": FollowGeneration with from_snapshot starts with one Snapshot
// (the text so far and the sequence it covers), then the live events after it. Snapshot + deltas
// equals the full transcript, at 20 random points of a live generation, and verifies.
import { useInfra } from "@spool/testing";
import { verifyTranscript } from "@spool/transcript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuiltinModel } from "../src/providers/index.js";
import { openFollow, textOf } from "./follow-client.js";
import { authCall, call, type Stack, startRequest, startStack } from "./harness.js";

const infra = useInfra("gensnap");
let stack: Stack;
let token: string;
// Seeded, so a failing run can be replayed with SPOOL_TEST_SEED.
const seed = Number(process.env.SPOOL_TEST_SEED ?? Date.now() % 1_000_000);
let state = seed;
const random = () => {
  state = (state * 1103515245 + 12345) % 2 ** 31;
  return state / 2 ** 31;
};

beforeAll(async () => {
  // 400 tokens at 100/s, coalesced every 5 ms: about four seconds of live output in many deltas.
  stack = await startStack(
    infra(),
    { SPOOL_COALESCE_WINDOW_MS: "5" },
    new Map([["builtin", new BuiltinModel({ tokensPerSecond: 100, length: 400 })]]),
  );
  const a = stack.auth.client;
  token = (
    await authCall(a.login, a, { email: "admin@spool.test", password: "correct horse battery staple 42" })
  ).tokens!.accessToken;
});
afterAll(async () => {
  await stack?.stop();
});

async function start(requestId: string): Promise<string> {
  const r = await call(stack.client.startGeneration, stack.client, startRequest(requestId, requestId), token);
  return r.generation!.generationId;
}

describe(`snapshot start (seed ${seed})`, () => {
  it("snapshot + live deltas equals the full transcript at 20 random points of a live generation", async () => {
    const id = await start("snap-live");
    const full = openFollow(stack.client, { generationId: id }, token);
    // 20 follows from a snapshot, opened at random moments while the generation runs.
    const delays = Array.from({ length: 20 }, () => Math.floor(random() * 3_000)).sort((x, y) => x - y);
    const snapped = await Promise.all(
      delays.map(async (ms) => {
        await new Promise((r) => setTimeout(r, ms));
        const f = openFollow(stack.client, { generationId: id, fromSnapshot: true }, token);
        expect((await f.done).how).toBe("end");
        return f;
      }),
    );
    expect((await full.done).how).toBe("end");
    const reference = full.events();
    const terminal = reference.at(-1)!;
    expect(terminal.event?.$case).toBe("completed");
    const fullText = textOf(full.items);
    expect(fullText.length).toBeGreaterThan(100);
    let live = 0;
    for (const [i, f] of snapped.entries()) {
      const [first, ...rest] = f.items;
      expect(first?.$case, `follow ${i}`).toBe("snapshot");
      if (first?.$case !== "snapshot") continue;
      const covered = Number(first.value.sequence);
      // The events after the snapshot are exactly the full transcript's from covered + 1.
      expect(rest.map((r) => (r.$case === "event" ? r.value : undefined))).toEqual(reference.slice(covered));
      expect(textOf(f.items)).toBe(fullText);
      // The snapshot's text is the text of the deltas it covers.
      expect(first.value.text).toBe(textOf(full.items.slice(0, covered)));
      expect(verifyTranscript(f.items)).toMatchObject({ verified: true });
      if (rest.some((r) => r.$case === "event" && r.value.event?.$case === "delta")) live++;
    }
    // Most of them joined while output was still being written (snapshot, then live deltas).
    expect(live).toBeGreaterThanOrEqual(10);
    console.info(
      `snapshots at sequences ${snapped.map((f) => (f.items[0]?.$case === "snapshot" ? f.items[0].value.sequence : "-")).join(" ")} of ${terminal.sequence}`,
    );
  });

  it("after the end: the snapshot covers everything but the terminal event, which follows with its digest", async () => {
    const id = await start("snap-done");
    const full = openFollow(stack.client, { generationId: id }, token);
    await full.done;
    const last = Number(full.events().at(-1)!.sequence);
    const f = openFollow(stack.client, { generationId: id, fromSnapshot: true }, token);
    expect((await f.done).how).toBe("end");
    expect(f.items).toHaveLength(2);
    expect(f.items[0]).toMatchObject({ $case: "snapshot", value: { sequence: BigInt(last - 1) } });
    expect(f.items[1]).toMatchObject({ $case: "event", value: { sequence: BigInt(last) } });
    expect(verifyTranscript(f.items)).toMatchObject({ verified: true, text: textOf(full.items) });
  });

  it("a snapshot covering no more than after_sequence is not sent: the follow goes on from after_sequence", async () => {
    const id = await start("snap-after");
    const full = openFollow(stack.client, { generationId: id }, token);
    await full.done;
    const last = Number(full.events().at(-1)!.sequence);
    const f = openFollow(
      stack.client,
      { generationId: id, fromSnapshot: true, afterSequence: BigInt(last - 1) },
      token,
    );
    await f.done;
    expect(f.items.map((i) => i.$case)).toEqual(["event"]);
    expect(f.events()[0]?.sequence).toBe(BigInt(last));
  });
});
