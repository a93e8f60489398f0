// Issue 7 items 4 and 5 for generation-stream: bad strings and int64 filters
// are INVALID_ARGUMENT naming the proto field, never INTERNAL.
import { credentials, type ServiceError, status } from "@grpc/grpc-js";
import { readErrorDetails } from "@spool/kit";
import { AdminServiceClient } from "@spool/proto/spool/admin/v1/admin.js";
import type { FollowGenerationResponse } from "@spool/proto/spool/generation/v1/generation.js";
import { useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, bearer, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("genval");
let stack: Stack;
let operator: string;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  stack = await startStack(infra());
  const a = stack.auth.client;
  operator = (await authCall(a.login, a, ADMIN)).tokens!.accessToken;
});
afterAll(async () => {
  await stack?.stop();
});

async function refused(p: Promise<unknown>): Promise<{ code: string; fields: string[] }> {
  const err = (await p.then(
    () => {
      throw new Error("the call succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as ServiceError;
  return { code: status[err.code], fields: readErrorDetails(err.metadata).violations.map((v) => v.field) };
}

const startRequest = (clientRequestId: string, content: string, conversationId = "c1") => ({
  clientRequestId,
  model: "builtin",
  messages: [{ role: "user", content, toolCalls: [] }],
  parameters: undefined,
  toolIds: [],
  fileIds: [],
  conversationId,
  tools: [],
});

/** The first answer of a follow: its first message, or its error. */
function followOnce(generationId: string, afterSequence: bigint): Promise<FollowGenerationResponse> {
  return new Promise((resolve, reject) => {
    const stream = stack.client.followGeneration({ generationId, afterSequence }, bearer(operator));
    stream.on("data", (r: FollowGenerationResponse) => {
      stream.cancel();
      resolve(r);
    });
    stream.on("end", () => resolve({ item: undefined }));
    stream.on("error", reject);
  });
}

describe("StartGeneration", () => {
  it("keeps tab, LF and CR in message content and refuses NUL and other controls by field path", async () => {
    const ok = await call(
      stack.client.startGeneration,
      stack.client,
      startRequest("ws-ok", "line one\n\tline two\r\n"),
      operator,
    );
    expect(ok.generation?.generationId).toBeTruthy();
    for (const content of ["a\u0000b", "a\u001bb", "a\u202eb"]) {
      const bad = call(stack.client.startGeneration, stack.client, startRequest("ws-bad", content), operator);
      expect(await refused(bad)).toEqual({ code: "INVALID_ARGUMENT", fields: ["messages[0].content"] });
    }
  });
});

describe("ListGenerations filters", () => {
  const base = {
    status: 0,
    conversationId: "",
    createdAfterMs: 0n,
    createdBeforeMs: 0n,
    pageSize: 0,
    pageToken: "",
  };
  const list = (req: Partial<typeof base>) =>
    call(stack.client.listGenerations, stack.client, { ...base, ...req }, operator);

  it("answers INVALID_ARGUMENT naming the field for NUL and out-of-range times", async () => {
    const cases: [Partial<typeof base>, string][] = [
      [{ conversationId: "c\u0000" }, "conversation_id"],
      [{ createdAfterMs: 2n ** 63n - 1n }, "created_after_ms"],
      [{ createdBeforeMs: 2n ** 63n - 1n }, "created_before_ms"],
      [{ createdAfterMs: -1n }, "created_after_ms"],
    ];
    for (const [req, field] of cases) {
      expect(await refused(list(req))).toEqual({ code: "INVALID_ARGUMENT", fields: [field] });
    }
    // The last millisecond of year 9999 is a valid filter.
    await list({ createdBeforeMs: 253_402_300_799_999n });
  });
});

describe("FollowGeneration", () => {
  it("refuses an after_sequence beyond 2^53-1 by its proto name", async () => {
    const { generation } = await call(
      stack.client.startGeneration,
      stack.client,
      startRequest("follow-range", "hello"),
      operator,
    );
    const id = generation!.generationId;
    for (const after of [2n ** 53n, 2n ** 64n - 1n]) {
      expect(await refused(followOnce(id, after))).toEqual({
        code: "INVALID_ARGUMENT",
        fields: ["after_sequence"],
      });
    }
    // The largest exact sequence is accepted (a heartbeat, or the end of a finished output).
    await expect(followOnce(id, 2n ** 53n - 1n)).resolves.toBeDefined();
    expect(await refused(followOnce("g\u0000", 0n))).toEqual({
      code: "INVALID_ARGUMENT",
      fields: ["generation_id"],
    });
  });
});

describe("ListDeadLetters", () => {
  it("answers INVALID_ARGUMENT for NUL in consumer", async () => {
    const admin = new AdminServiceClient(`127.0.0.1:${stack.gen.port}`, credentials.createInsecure());
    try {
      const req = { consumer: "gen\u0000", includeReplayed: false, pageSize: 0, pageToken: "" };
      expect(await refused(call(admin.listDeadLetters, admin, req, operator))).toEqual({
        code: "INVALID_ARGUMENT",
        fields: ["consumer"],
      });
    } finally {
      admin.close();
    }
  });
});
