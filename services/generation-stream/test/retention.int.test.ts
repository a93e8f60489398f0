// Issue 10, "Typed retention": a follow needing events the output stream no longer holds is
// OUT_OF_RANGE with an OutputExpired detail (google.rpc.Status details: the earliest sequence still
// stored, the retention, and GetGeneration for the final transcript); never a silent partial stream
// or a follow that waits forever on an emptied subject. Output retention here: 2 s
// (SPOOL_GEN_OUTPUT_RETENTION_SECONDS).
import { type ServiceError, status } from "@grpc/grpc-js";
import { readErrorDetails } from "@spool/kit";
import { OutputExpired } from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { verifyTranscript } from "@spool/transcript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuiltinModel } from "../src/providers/index.js";
import { openFollow, textOf } from "./follow-client.js";
import { authCall, call, type Stack, startReplica, startRequest, startStack } from "./harness.js";

const infra = useInfra("genretain");
const RETENTION_SECONDS = 2;
let stack: Stack;
let token: string;
let foreignToken: string;
let replica2: Awaited<ReturnType<typeof startReplica>>;

beforeAll(async () => {
  const models = () =>
    new Map([
      ["builtin", new BuiltinModel({ tokensPerSecond: 0, length: 60 })],
      // About 20 events a second for a minute: live while its oldest events expire.
      ["slow", new BuiltinModel({ tokensPerSecond: 20, length: 1_200 })],
    ]);
  stack = await startStack(
    infra(),
    { SPOOL_GEN_OUTPUT_RETENTION_SECONDS: String(RETENTION_SECONDS), SPOOL_COALESCE_WINDOW_MS: "5" },
    models(),
  );
  // A second replica, whose follow hub holds nothing it was not asked for: a follow hub serves the
  // latest events of a generation it follows from memory (its ring) even once the log dropped them,
  // so the probes below read through it to see what the log still holds.
  replica2 = await startReplica(stack, models());
  const a = stack.auth.client;
  const admin = { email: "admin@spool.test", password: "correct horse battery staple 42" };
  token = (await authCall(a.login, a, admin)).tokens!.accessToken;
  const other = { email: "owner@retain-b.test", password: "owner password long enough" };
  await authCall(
    a.createOrganization,
    a,
    {
      name: "B",
      slug: "retain-b",
      ownerEmail: other.email,
      ownerDisplayName: "B",
      ownerPassword: other.password,
    },
    token,
  );
  foreignToken = (await authCall(a.login, a, other)).tokens!.accessToken;
});
afterAll(async () => {
  await replica2?.stop();
  await stack?.stop();
});

async function start(requestId: string, model: string): Promise<string> {
  const r = await call(
    stack.client.startGeneration,
    stack.client,
    startRequest(requestId, "hello", { model }),
    token,
  );
  return r.generation!.generationId;
}

/** The follow's end, which must be OUT_OF_RANGE, with its decoded OutputExpired detail. */
function expiredDetail(error: ServiceError | undefined): OutputExpired {
  expect(error?.code).toBe(status.OUT_OF_RANGE);
  const [detail, ...more] = readErrorDetails(error?.metadata).others;
  expect(more).toEqual([]);
  expect(detail?.typeUrl).toBe("type.googleapis.com/spool.generation.v1.OutputExpired");
  return OutputExpired.decode(detail!.value);
}

describe("resuming past the output retention", () => {
  it("a live generation whose oldest events expired: OUT_OF_RANGE naming the earliest kept, from which a resume works", async () => {
    const id = await start("live", "slow");
    // Running and writing: a follow of it sees deltas.
    const watch = openFollow(stack.client, { generationId: id }, token);
    await eventually(() => watch.events().some((e) => e.event?.$case === "delta"), {
      timeoutMs: 30_000,
      what: "the generation to write output",
    });
    watch.cancel();
    // Let the retention remove its first events while it keeps writing.
    const detail = await eventually(
      async () => {
        const f = openFollow(replica2.client, { generationId: id }, token);
        await Promise.race([f.firstItem, f.done]);
        if (f.items.length > 0) {
          // Still whole from sequence 1: not expired yet.
          expect(f.items[0]).toMatchObject({ $case: "event", value: { sequence: 1n } });
          f.cancel();
          await f.done;
          return undefined;
        }
        const d = expiredDetail((await f.done).error);
        return d.earliestSequence > 1n ? d : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 250, what: "the first events to expire" },
    );
    expect(detail).toMatchObject({ generationId: id, requestedSequence: 1n });
    // Resuming just before the earliest kept event continues with no gap (retried: the earliest keeps
    // expiring while the generation runs, and then the answer names the newer one).
    let earliest = Number(detail.earliestSequence);
    const resumed = await eventually(
      async () => {
        const f = openFollow(
          replica2.client,
          { generationId: id, afterSequence: BigInt(earliest - 1) },
          token,
        );
        await Promise.race([f.firstItem, f.done]);
        if (f.items.length > 0) return f;
        const end = await f.done;
        earliest = Number(expiredDetail(end.error).earliestSequence);
        return undefined;
      },
      { timeoutMs: 20_000, intervalMs: 10, what: "a resume from the earliest kept" },
    );
    await new Promise((r) => setTimeout(r, 300));
    resumed.cancel();
    const seqs = resumed.events().map((e) => Number(e.sequence));
    expect(seqs[0]).toBe(earliest);
    expect(seqs).toEqual(seqs.map((_, i) => earliest + i));
    await call(stack.client.cancelGeneration, stack.client, { generationId: id }, token);
  });

  it("a finished generation's expired output: OUT_OF_RANGE naming GetGeneration, which has the transcript", async () => {
    const id = await start("finished", "builtin");
    const full = openFollow(stack.client, { generationId: id }, token);
    expect((await full.done).how).toBe("end");
    const last = Number(full.events().at(-1)!.sequence);
    // Once every event has expired, nothing is stored: earliest 0.
    const gone = await eventually(
      async () => {
        const f = openFollow(stack.client, { generationId: id }, token);
        const end = await f.done;
        if (end.how !== "error") return undefined;
        const d = expiredDetail(end.error);
        // Never a partial stream: the error comes before any event.
        expect(f.items).toEqual([]);
        return d.earliestSequence === 0n ? { d, end } : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 250, what: "the output to expire" },
    );
    expect(gone.d).toEqual(
      OutputExpired.create({
        generationId: id,
        requestedSequence: 1n,
        earliestSequence: 0n,
        retentionSeconds: BigInt(RETENTION_SECONDS),
        transcriptMethod: "spool.generation.v1.GenerationService/GetGeneration",
      }),
    );
    expect(gone.end.error?.details).toMatch(/GetGeneration/);
    // The same on the replica whose follow hub may still hold the generation's last events and on one
    // that never followed it: a resume from the middle and a snapshot start are refused the same way,
    // and a client that already has everything sees the follow simply end.
    for (const client of [stack.client, replica2.client]) {
      const first = await openFollow(client, { generationId: id }, token).done;
      expect(expiredDetail(first.error)).toMatchObject({ requestedSequence: 1n, earliestSequence: 0n });
      const middle = await openFollow(client, { generationId: id, afterSequence: 3n }, token).done;
      expect(expiredDetail(middle.error)).toMatchObject({ requestedSequence: 4n, earliestSequence: 0n });
      const snap = await openFollow(client, { generationId: id, fromSnapshot: true }, token).done;
      expect(expiredDetail(snap.error)).toMatchObject({ requestedSequence: 1n });
      for (const fromSnapshot of [false, true]) {
        const caughtUp = openFollow(
          client,
          { generationId: id, afterSequence: BigInt(last), fromSnapshot },
          token,
        );
        expect((await caughtUp.done).how).toBe("end");
        expect(caughtUp.items).toEqual([]);
      }
    }
    // The final transcript is kept for good.
    const g = (await call(stack.client.getGeneration, stack.client, { generationId: id }, token)).generation!;
    expect(g.text).toBe(textOf(full.items));
    expect(Number(g.lastSequence)).toBe(last);
    // Another organisation still learns nothing: NOT_FOUND, not OUT_OF_RANGE.
    const foreign = await openFollow(stack.client, { generationId: id }, foreignToken).done;
    expect(foreign.error?.code).toBe(status.NOT_FOUND);
  });

  it("within the retention, the same follow is whole and verifies", async () => {
    const id = await start("fresh", "builtin");
    const f = openFollow(stack.client, { generationId: id }, token);
    expect((await f.done).how).toBe("end");
    expect(verifyTranscript(f.items)).toMatchObject({ verified: true });
  });
});
