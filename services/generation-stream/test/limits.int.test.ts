import { setTimeout as sleep } from "node:timers/promises";
import { type ServiceError, status } from "@grpc/grpc-js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("genrate");
let stack: Stack;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };
// 5 starts per 2 s: a burst of 5, then one every 400 ms.
const STARTS = 5;
const WINDOW_MS = 2_000;
const INTERVAL = WINDOW_MS / STARTS;

beforeAll(async () => {
  stack = await startStack(infra(), {
    SPOOL_LIMIT_MAX_ACTIVE: "100",
    SPOOL_LIMIT_STARTS_PER_WINDOW: String(STARTS),
    SPOOL_LIMIT_WINDOW_SECONDS: String(WINDOW_MS / 1000),
  });
});
afterAll(async () => {
  await stack?.stop();
});

async function owner(slug: string): Promise<string> {
  const a = stack.auth.client;
  const admin = (await authCall(a.login, a, ADMIN)).tokens!.accessToken;
  const email = `owner@${slug}.test`;
  const password = "owner password long enough";
  await authCall(
    a.createOrganization,
    a,
    { name: slug, slug, ownerEmail: email, ownerDisplayName: "O", ownerPassword: password },
    admin,
  );
  return (await authCall(a.login, a, { email, password })).tokens!.accessToken;
}

let n = 0;
/** Starts in parallel; how many were accepted and the retry-after-ms of each refusal. */
async function starts(token: string, count: number) {
  const rs = await Promise.allSettled(
    Array.from({ length: count }, () =>
      call(
        stack.client.startGeneration,
        stack.client,
        {
          clientRequestId: `r${n++}`,
          model: "builtin",
          messages: [{ role: "user", content: "hello", toolCalls: [] }],
          parameters: undefined,
          toolIds: [],
          fileIds: [],
          conversationId: "c1",
          tools: [],
        },
        token,
      ),
    ),
  );
  const retries: number[] = [];
  for (const r of rs) {
    if (r.status === "fulfilled") continue;
    const e = r.reason as ServiceError;
    expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
    retries.push(Number(e.metadata.get("retry-after-ms")[0]));
  }
  return { ok: count - retries.length, retries };
}

describe("starts per window (GCRA)", () => {
  it("no 2× across a window boundary; retry-after-ms is the time until one start is earned back", async () => {
    const token = await owner("rate");
    // 300 ms before a boundary of fixed 2 s windows, then 50 ms after it: fixed windows accepted 5 + 5.
    await sleep(WINDOW_MS - (Date.now() % WINDOW_MS) + WINDOW_MS - 300);
    const t0 = Date.now();
    expect((await starts(token, STARTS)).ok).toBe(STARTS);
    await sleep(WINDOW_MS - (Date.now() % WINDOW_MS) + 50);
    const second = await starts(token, STARTS);
    expect(second.ok).toBeLessThanOrEqual(Math.floor((Date.now() - t0) / INTERVAL));
    // (On a machine so loaded that the calls themselves spanned a whole window, five were earned back.)
    if (Date.now() - t0 < WINDOW_MS) expect(second.ok).toBeLessThan(STARTS);
    // The true bound: one start every 400 ms (a fixed window reported the rest of the window).
    for (const r of second.retries) {
      expect(r).toBeGreaterThan(0);
      expect(r).toBeLessThanOrEqual(INTERVAL);
    }
    // And it is true: after waiting it, a start is accepted.
    await sleep(Math.max(...second.retries));
    expect((await starts(token, 1)).ok).toBe(1);
  });
});
