// Issue 7 items 8 and 9: what StartGeneration accepts as messages, ListGenerations
// listing only the caller's own generations (the proto's promise), and the
// built-in model honouring max_tokens above its default length.
import { type ServiceError, status } from "@grpc/grpc-js";
import { readErrorDetails } from "@spool/kit";
import { Role } from "@spool/proto/spool/auth/v1/auth.js";
import { GenerationStatus, type Message } from "@spool/proto/spool/generation/v1/generation.js";
import { eventually, useInfra } from "@spool/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authCall, call, type Stack, startStack } from "./harness.js";

const infra = useInfra("gencontract");
let stack: Stack;
const ADMIN = { email: "admin@spool.test", password: "correct horse battery staple 42" };

beforeAll(async () => {
  // The harness's built-in model writes 40 tokens by default; the ceiling on max_tokens is higher.
  stack = await startStack(infra(), { SPOOL_BUILTIN_MAX_TOKENS: "500" });
});
afterAll(async () => {
  await stack?.stop();
});

async function owner(slug: string): Promise<{ token: string }> {
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
  return { token: (await authCall(a.login, a, { email, password })).tokens!.accessToken };
}

async function member(ownerToken: string, email: string, role = Role.ROLE_MEMBER): Promise<string> {
  const a = stack.auth.client;
  const password = "member password long";
  await authCall(a.createUser, a, { email, displayName: "M", password, roles: [role] }, ownerToken);
  return (await authCall(a.login, a, { email, password })).tokens!.accessToken;
}

const start = (token: string, clientRequestId: string, messages: Message[], maxTokens?: number) =>
  call(
    stack.client.startGeneration,
    stack.client,
    {
      clientRequestId,
      model: "builtin",
      messages,
      parameters: maxTokens === undefined ? undefined : { maxTokens },
      toolIds: [],
      fileIds: [],
      conversationId: "",
      tools: [],
    },
    token,
  );

async function refused(p: Promise<unknown>): Promise<{ code: string; fields: string[] }> {
  const err = (await p.then(
    () => {
      throw new Error("the call succeeded but was expected to fail");
    },
    (e: unknown) => e,
  )) as ServiceError;
  return { code: status[err.code], fields: readErrorDetails(err.metadata).violations.map((v) => v.field) };
}

const list = (token: string) =>
  call(
    stack.client.listGenerations,
    stack.client,
    {
      status: 0,
      conversationId: "",
      createdAfterMs: 0n,
      createdBeforeMs: 0n,
      pageSize: 100,
      pageToken: "",
    },
    token,
  );

describe("StartGeneration messages", () => {
  it("refuses empty or whitespace-only content, an empty list and a last message not from the user or a tool, writing nothing", async () => {
    const { token } = await owner("contract-msg");
    const cases: { messages: Message[]; field: string }[] = [
      { messages: [{ role: "user", content: "", toolCalls: [] }], field: "messages[0].content" },
      { messages: [{ role: "user", content: " \n\t \r\n", toolCalls: [] }], field: "messages[0].content" },
      {
        messages: [
          { role: "system", content: "be brief", toolCalls: [] },
          { role: "user", content: "", toolCalls: [] },
        ],
        field: "messages[1].content",
      },
      {
        messages: [
          { role: "assistant", content: "   ", toolCalls: [] },
          { role: "user", content: "hi", toolCalls: [] },
        ],
        field: "messages[0].content",
      },
      { messages: [], field: "messages" },
      {
        messages: [
          { role: "user", content: "hi", toolCalls: [] },
          { role: "assistant", content: "hello", toolCalls: [] },
        ],
        field: "messages[1].role",
      },
      { messages: [{ role: "system", content: "be brief", toolCalls: [] }], field: "messages[0].role" },
    ];
    // More refusals than the active-generation limit (2): a leaked slot would refuse the start below.
    for (const [i, c] of cases.entries()) {
      expect(await refused(start(token, `bad-${i}`, c.messages)), JSON.stringify(c.messages)).toEqual({
        code: "INVALID_ARGUMENT",
        fields: [c.field],
      });
    }
    // Nothing was written under the refused ids: a valid start with one creates the generation.
    const ok = await start(token, "bad-0", [{ role: "user", content: "now with content", toolCalls: [] }]);
    expect(ok.created).toBe(true);
  });

  it("accepts a conversation ending with the user's turn or a tool's result", async () => {
    const { token } = await owner("contract-ok");
    const history: Message[] = [
      { role: "system", content: "be brief", toolCalls: [] },
      { role: "user", content: "what is 2 + 2?", toolCalls: [] },
      { role: "assistant", content: "let me check", toolCalls: [] },
    ];
    expect(
      (await start(token, "user-last", [...history, { role: "user", content: "well?", toolCalls: [] }]))
        .created,
    ).toBe(true);
    // A tool's result answers the assistant's call by its id (tool use: provider.int.test.ts).
    const toolLast = await start(token, "tool-last", [
      ...history,
      {
        role: "assistant",
        content: "",
        toolCalls: [{ callId: "call_1", toolName: "add", argumentsJson: '{"a":2,"b":2}' }],
      },
      { role: "tool", content: "4", toolCallId: "call_1", toolCalls: [] },
    ]);
    expect(toolLast.created).toBe(true);
  });
});

describe("ListGenerations", () => {
  it("lists only the caller's own generations, for an owner and an admin too", async () => {
    const { token: ownerToken } = await owner("contract-list");
    const adminToken = await member(ownerToken, "a@contract-list.test", Role.ROLE_ADMIN);
    const memberToken = await member(ownerToken, "m@contract-list.test");
    const hi: Message[] = [{ role: "user", content: "hi", toolCalls: [] }];
    const ids = {
      owner: (await start(ownerToken, "mine", hi)).generation!.generationId,
      admin: (await start(adminToken, "mine", hi)).generation!.generationId,
      member: (await start(memberToken, "mine", hi)).generation!.generationId,
    };
    // The list reads a projection: wait until it has the member's, started last (so all three).
    await eventually(async () => (await list(memberToken)).generations.length > 0);
    for (const [who, token] of [
      ["owner", ownerToken],
      ["admin", adminToken],
      ["member", memberToken],
    ] as const) {
      expect(
        (await list(token)).generations.map((g) => g.generationId),
        who,
      ).toEqual([ids[who]]);
    }
  });
});

describe("built-in model", () => {
  it("honours max_tokens above its default length, up to SPOOL_BUILTIN_MAX_TOKENS", async () => {
    const { token } = await owner("contract-tokens");
    const hi: Message[] = [{ role: "user", content: "hi", toolCalls: [] }];
    const long = (await start(token, "long", hi, 300)).generation!.generationId;
    const capped = (await start(token, "capped", hi, 900)).generation!.generationId;
    const usage = async (generationId: string) => {
      const done = await eventually(async () => {
        const g = (await call(stack.client.getGeneration, stack.client, { generationId }, token)).generation!;
        return g.status === GenerationStatus.GENERATION_STATUS_COMPLETED ? g : undefined;
      });
      return done.usage?.completionTokens;
    };
    expect(await usage(long)).toBe(300n);
    expect(await usage(capped)).toBe(500n);
  });
});
